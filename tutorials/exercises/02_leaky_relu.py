"""Tutorial 02 exercise: the backward of leaky_relu.

Derivation: tutorials/derivations.md#leaky-relu. Write the body, then

    npvae exercises check leaky_relu

compares it with central differences and names the usual mistakes. Stuck:
`--show-solution` prints a solution.
"""

import numpy as np


def leaky_relu_backward(dout, x, alpha=0.01):
    """dx = dout * f'(x): the gradient of L = sum(dout * leaky_relu(x)) with respect to x.

    leaky_relu(x) = x where x > 0, alpha x elsewhere.
    Shapes: dout and x (x, the layer's input) of any shape, the same -> dx of that shape.
    Derivation: derivations.md#leaky-relu.

    Hint: two slopes, 1 and alpha; `np.where` picks one per entry. Multiply by
    dout (the chain rule).
    """
    raise NotImplementedError("leaky_relu_backward: write it here")
