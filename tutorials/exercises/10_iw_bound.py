"""Tutorial 10 exercise: log-mean-exp and the importance-weighted bound.

Derivation: tutorials/derivations.md#importance-weighted-bound. Write the
bodies, then

    npvae exercises check iw_bound

compares the values with npvae's (log-mean-exp also at log weights of
+/-1000) and names the usual mistakes. Stuck: `--show-solution` prints
a solution.
"""

import math

import numpy as np


def logmeanexp(a, axis=0):
    """log mean_j exp(a_j) along ``axis``, without overflow or underflow.

    Shapes: a of any shape -> a without ``axis``.
    Derivation: derivations.md#importance-weighted-bound.

    Hint: exp(-1000) is 0 and exp(1000) is inf in float64. Subtract the
    largest a_j first, and add it back outside the log.
    """
    raise NotImplementedError("logmeanexp: write it here")


def log_weights(log_px_z, z, mu, logvar):
    """log w = log p(x | z) + log p(z) - log q(z | x) for k samples z of each example.

    Shapes: log_px_z (k, B), z (k, B, Z), mu, logvar (B, Z) -> (k, B).
    p(z) = N(0, I); q(z | x) = N(mu, diag exp(logvar)).
    Derivation: derivations.md#importance-weighted-bound.

    Hints: log N(z; m, s^2) = -1/2 (log 2 pi + log s^2 + (z - m)^2 / s^2) per
    dimension, summed over the Z dimensions (the last axis). mu and logvar
    broadcast against z's leading sample axis.
    """
    raise NotImplementedError("log_weights: write it here")


def iw_bound(log_w):
    """The importance-weighted bound, averaged over the examples: a float (nats, negative).

    L_k = mean over examples of log (1/k) sum_j w_j. Shapes: log_w (k, B) -> a float.
    Derivation: derivations.md#importance-weighted-bound.

    Hint: your logmeanexp over the samples (axis 0), then the mean over examples.
    """
    raise NotImplementedError("iw_bound: write it here")
