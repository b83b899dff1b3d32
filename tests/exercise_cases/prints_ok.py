"""relu_backward is wrong (no mask) and prints "ok" lines of its own: shown apart, never a verdict."""

import numpy as np

print("relu (tutorials/exercises/02_relu.py): ok")


def relu_backward(dout, out):
    print("  dx    ok")
    return dout.copy()
