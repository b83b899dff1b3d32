"""Tutorial 16 exercise: the backward through the second stochastic layer, into h1.

Derivation: tutorials/derivations.md#two-stochastic-layers. Write the
bodies, then

    npvae exercises check hvae

compares dmu and dlogvar of one q layer, and dh2 and dh1 of a two-layer
model, with npvae's HVAE backward and with central differences of the loss,
and names the usual mistakes (path A or path B into h1 forgotten, the sign
of log q's direct term, the variance for the standard deviation, a missing
1/B). Stuck: `--show-solution` prints a solution.
"""

import numpy as np


def q_sample_backward(dh, logvar, eps, ckl):
    """One q layer's (dmu, dlogvar): the path through h = mu + exp(logvar / 2) eps, and
    log q's direct term, weighted by ckl.

    The loss these are the gradients of is sum(dh * h) + sum_b ckl_b log q(h_b | .),
    with the noise eps held, where

        log q(h | .) = -1/2 sum_m (log 2 pi + logvar_m + eps_m^2)

    (each row's log q enters -log w with a plus sign, weighted by ckl).

    Shapes: dh, logvar, eps (B, Z), ckl (B,) -> dmu, dlogvar (B, Z).
    Derivation: derivations.md#two-stochastic-layers (step 4).

    Hint: with eps held, mu is gone from log q, and logvar appears directly.
    """
    raise NotImplementedError("q_sample_backward: write it here")


def h1_backward(dh1_x, h1, h2, eps2, logvar2, pmu, plogvar, W_q2, W_p1):
    """The gradient of the loss into h1, and into h2: (dh1, dh2).

    A VAE with two stochastic layers, one sample per example (k = 1), noise
    eps held, loss = mean over the batch of -log w:

        -log w = -log p(x | h1) - log p(h2) - log p(h1 | h2) + log q(h1 | x) + log q(h2 | h1)
        h2 = mu2 + exp(logvar2 / 2) eps2,    [mu2 | logvar2]  = h1 @ W_q2 + b_q2
        p(h2) = N(0, I),                     [pmu | plogvar]  = h2 @ W_p1 + b_p1
        log p(h1 | h2) = -1/2 sum_m (log 2 pi + plogvar_m + (h1_m - pmu_m)^2 exp(-plogvar_m))

    q(h2 | h1) and p(h1 | h2) are one affine layer each here, so the
    backward of a layer is a product with its W transposed. ``dh1_x`` is
    d loss / d h1 through p(x | h1) alone (already with its 1/B).

    Returns (dh1, dh2): dh2 = d loss / d h2 with h1 held (what goes down
    through q(h2 | h1)), and dh1 = d loss / d h1, complete: dh1_x, plus
    path A (log p(h1 | h2) directly), plus path B (dh2 back through
    h2 = mu2(h1) + exp(logvar2(h1) / 2) eps2 and log q(h2 | h1)'s direct term).

    Shapes: dh1_x, h1, pmu, plogvar (B, Z1); h2, eps2, logvar2 (B, Z2);
    W_q2 (Z1, 2 Z2); W_p1 (Z2, 2 Z1) -> dh1 (B, Z1), dh2 (B, Z2).
    Derivation: derivations.md#two-stochastic-layers (steps 2 to 4).

    Hints: each example's terms weigh 1/B. With r = (h1 - pmu) exp(-plogvar),
    d log p(h1 | h2) / d h1 = -r, / d pmu = r, / d plogvar = ((h1 - pmu) r - 1) / 2.
    -log p(h2) = |h2|^2 / 2 + const. Your q_sample_backward is step 4.
    """
    raise NotImplementedError("h1_backward: write it here")
