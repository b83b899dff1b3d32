"""Tutorial 02 exercise: the backward of sigmoid.

Derivation: tutorials/derivations.md#sigmoid. Write the body, then

    npvae exercises check sigmoid

compares it with central differences and names the usual mistakes. Stuck:
`--show-solution` prints a solution.
"""

import numpy as np


def sigmoid_backward(dout, out):
    """dx = dout * f'(x): the gradient of L = sum(dout * sigmoid(x)) with respect to x.

    sigmoid(x) = 1 / (1 + exp(-x)); like tanh, its derivative is a function
    of its output.
    Shapes: dout and out (out = sigmoid(x), the layer's output) of any shape, the same -> dx of that shape.
    Derivation: derivations.md#sigmoid.

    Hint: differentiate 1 / (1 + exp(-x)) and write the result with s = sigmoid(x)
    only; out already is s.
    """
    raise NotImplementedError("sigmoid_backward: write it here")
