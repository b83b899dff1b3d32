"""Tutorial 01 exercise: the dense layer, forward and backward.

Derivation: tutorials/derivations.md#dense-layer. Write the two bodies, then

    npvae exercises check dense

compares each gradient with central differences and names the usual mistakes
(sign, transpose, a sum over the wrong axis). Stuck: `--show-solution` prints
a solution.
"""

import numpy as np


def dense_forward(x, W, b):
    """out = x W + b.

    Shapes: x (B, n_in), W (n_in, n_out), b (n_out,) -> out (B, n_out).
    """
    raise NotImplementedError("dense_forward: write it here")


def dense_backward(dout, x, W):
    """The gradients of L = sum(dout * out) for out = dense_forward(x, W, b): (dx, dW, db).

    Shapes: dout (B, n_out), x (B, n_in), W (n_in, n_out)
        -> dx (B, n_in), dW (n_in, n_out), db (n_out,).
    Derivation: derivations.md#dense-layer.

    Hints: write one entry, out[i, k] = sum_j x[i, j] W[j, k] + b[k], and
    differentiate it. Every gradient has the shape of what it is the gradient
    of, which leaves one way to multiply the matrices; b is added to every
    example, so db collects dout from all of them.
    """
    raise NotImplementedError("dense_backward: write it here")
