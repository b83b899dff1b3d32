"""Tutorial 02 exercise: the backward of softplus.

Derivation: tutorials/derivations.md#softplus. Write the body, then

    npvae exercises check softplus

compares it with central differences and names the usual mistakes. Stuck:
`--show-solution` prints a solution.
"""

import numpy as np


def softplus_backward(dout, x):
    """dx = dout * f'(x): the gradient of L = sum(dout * softplus(x)) with respect to x.

    softplus(x) = log(1 + exp(x)), a smooth ReLU.
    Shapes: dout and x (x, the layer's input) of any shape, the same -> dx of that shape.
    Derivation: derivations.md#softplus.

    Hint: differentiate log(1 + exp(x)) and simplify: the result is the
    function of the previous exercise (npvae.activations.sigmoid computes it
    without overflow).
    """
    raise NotImplementedError("softplus_backward: write it here")
