"""Tutorial 05 exercise: the reparameterization trick and its backward.

Derivation: tutorials/derivations.md#reparameterization. Write the bodies, then

    npvae exercises check reparameterize

checks the sampler's mean and variance over 200,000 samples (a wrong scale
passes every gradient check, but not this) and the gradients with central
differences. Stuck: `--show-solution` prints a solution.
"""

import numpy as np


def reparameterize(mu, logvar, eps):
    """z ~ N(mu, diag exp(logvar)), written as a function of mu, logvar and fixed noise eps.

    Shapes: mu, logvar, eps (B, Z), eps ~ N(0, I) -> z (B, Z).
    Derivation: derivations.md#reparameterization.

    Hint: N(mu, s^2) is mu + s * N(0, 1), with s the standard deviation.
    logvar is the log of the variance s^2, not of s.
    """
    raise NotImplementedError("reparameterize: write it here")


def reparameterize_backward(dz, logvar, eps):
    """The gradients of L = sum(dz * z) through z = reparameterize(mu, logvar, eps): (dmu, dlogvar).

    Shapes: dz, logvar, eps (B, Z) -> dmu, dlogvar (B, Z).
    Derivation: derivations.md#reparameterization.

    Hint: eps is a constant here. d exp(a / 2) / da = exp(a / 2) / 2.
    """
    raise NotImplementedError("reparameterize_backward: write it here")
