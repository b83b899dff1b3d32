"""Tutorial 03 exercise: the backward of the Gaussian NLL with a fixed sigma.

Derivation: tutorials/derivations.md#gaussian-likelihood. Write the body, then

    npvae exercises check gaussian_nll

compares it with central differences and names the usual mistakes. Stuck:
`--show-solution` prints a solution.
"""

import numpy as np


def gaussian_nll_backward(dout, mean, x, sigma=1.0):
    """The gradient of L = sum_i dout[i] * nll[i] with respect to the decoder's means.

    nll[i] = sum_j (x[i, j] - mean[i, j])^2 / (2 sigma^2) + a constant
    (npvae.losses.gaussian_nll). Shapes: dout (B,), mean, x (B, D) -> dmean (B, D).
    Derivation: derivations.md#gaussian-likelihood.

    Hints: the 2 of the square meets the 2 of 2 sigma^2; mind which way the
    difference points (d/dmean of (x - mean)^2). dout[:, None] gives each
    example's pixels its weight.
    """
    raise NotImplementedError("gaussian_nll_backward: write it here")
