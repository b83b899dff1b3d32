"""sys.exit(0) at import: never a pass."""

import sys

import numpy as np


def relu_backward(dout, out):
    return dout * (out > 0)


sys.exit(0)
