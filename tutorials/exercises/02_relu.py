"""Tutorial 02 exercise: the backward of relu.

Derivation: tutorials/derivations.md#relu. Write the body, then

    npvae exercises check relu

compares it with central differences and names the usual mistakes. Stuck:
`--show-solution` prints a solution.
"""

import numpy as np


def relu_backward(dout, out):
    """dx = dout * f'(x): the gradient of L = sum(dout * relu(x)) with respect to x.

    relu(x) = max(x, 0). Its output tells you where x > 0, so the backward needs
    only `out`.
    Shapes: dout and out (out = relu(x) = max(x, 0), the layer's output) of any shape, the same -> dx of that shape.
    Derivation: derivations.md#relu.

    Hint: the slope is 1 where x > 0 and 0 elsewhere; the chain rule multiplies
    it by dout, entry by entry.
    """
    raise NotImplementedError("relu_backward: write it here")
