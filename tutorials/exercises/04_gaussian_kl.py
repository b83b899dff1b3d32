"""Tutorial 04 exercise: the Gaussian KL and its backward.

Derivation: tutorials/derivations.md#gaussian-kl. Write the bodies, then

    npvae exercises check gaussian_kl

compares the value with npvae's and the gradients with central differences.
Stuck: `--show-solution` prints a solution.
"""

import numpy as np


def gaussian_kl(mu, logvar):
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per example, summed over the latents.

    Shapes: mu, logvar (B, Z) -> kl (B,).
    Derivation: derivations.md#gaussian-kl.

    Hints: for one dimension with variance s^2 the KL to N(0, 1) is
    1/2 (s^2 + mu^2 - 1 - log s^2), and logvar is log s^2. np.expm1 computes
    exp(a) - 1 without losing digits near a = 0.
    """
    raise NotImplementedError("gaussian_kl: write it here")


def gaussian_kl_backward(dout, mu, logvar):
    """The gradients of L = sum_i dout[i] * kl[i]: (dmu, dlogvar), each (B, Z).

    Shapes: dout (B,), mu, logvar (B, Z) -> dmu, dlogvar (B, Z).
    Derivation: derivations.md#gaussian-kl.

    Hint: differentiate each term of the 1/2 (...) above; the -logvar term
    contributes too. dout[:, None] gives each example's row its weight.
    """
    raise NotImplementedError("gaussian_kl_backward: write it here")
