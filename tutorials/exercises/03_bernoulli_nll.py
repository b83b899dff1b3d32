"""Tutorial 03 exercise: the Bernoulli NLL from logits, stable, forward and backward.

Derivation: tutorials/derivations.md#bernoulli-likelihood. Write the bodies, then

    npvae exercises check bernoulli_nll

compares the values with npvae's (also at logits of +/-1e4, and for a
confident right answer) and the gradient with central differences. Stuck:
`--show-solution` prints a solution.
"""

import numpy as np


def bernoulli_nll(logits, x):
    """-log p(x | logits) per example, summed over the pixels, with p = sigmoid(logits).

    Shapes: logits, x (B, D), x in [0, 1] -> (B,).
    Derivation: derivations.md#bernoulli-likelihood.

    Hints: -x log p - (1 - x) log(1 - p) with p = sigmoid(l) simplifies to
    softplus(l) - x l. Evaluating that naively overflows (exp(1e4)) or takes
    log(0); split softplus(l) = max(l, 0) + log1p(exp(-|l|)), whose exponent is
    never positive, and keep the small log1p term apart, or a confident right
    answer (l = 40, x = 1) loses all its digits.
    """
    raise NotImplementedError("bernoulli_nll: write it here")


def bernoulli_nll_backward(dout, logits, x):
    """The gradient of L = sum_i dout[i] * nll[i] with respect to the logits.

    Shapes: dout (B,) (one weight per example), logits, x (B, D) -> dlogits (B, D).
    Derivation: derivations.md#bernoulli-likelihood.

    Hint: differentiate softplus(l) - x l for one pixel, then give every pixel
    of example i its example's weight dout[i] (dout[:, None] broadcasts).
    """
    raise NotImplementedError("bernoulli_nll_backward: write it here")
