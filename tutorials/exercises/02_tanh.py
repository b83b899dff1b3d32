"""Tutorial 02 exercise: the backward of tanh.

Derivation: tutorials/derivations.md#tanh. Write the body, then

    npvae exercises check tanh

compares it with central differences and names the usual mistakes. Stuck:
`--show-solution` prints a solution.
"""

import numpy as np


def tanh_backward(dout, out):
    """dx = dout * f'(x): the gradient of L = sum(dout * tanh(x)) with respect to x.

    tanh's derivative can be written with its own output, so the backward
    needs only `out`.
    Shapes: dout and out (out = tanh(x), the layer's output) of any shape, the same -> dx of that shape.
    Derivation: derivations.md#tanh.

    Hint: d tanh(x) / dx = 1 - tanh(x)^2, and out already is tanh(x): do not
    apply tanh again.
    """
    raise NotImplementedError("tanh_backward: write it here")
