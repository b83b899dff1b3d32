"""Tutorial 06 exercise: one step of Adam, as in Kingma and Ba's Algorithm 1.

Derivation: tutorials/derivations.md#adam. Write the body, then

    npvae exercises check adam

compares the update and the new moments with npvae's and names the
usual mistakes (no bias correction, t off by one, the decaying sums in place
of the averages). Stuck: `--show-solution` prints a solution.
"""

import numpy as np


def adam_step(theta, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam update of parameters ``theta`` with gradient ``g``: (theta, m, v), all new.

    ``m`` and ``v`` are the moment estimates after step t - 1 (zeros before
    the first step); ``t`` is the number of this step, 1 for the first.
    Return the updated parameters and Algorithm 1's m_t and v_t (the biased
    averages, not m_hat and v_hat). Shapes: theta, g, m, v all alike.
    Derivation: derivations.md#adam.

    Hints: m and v are running averages of g and g^2, weighted (beta, 1 - beta).
    Started at 0, they are too small by the factor 1 - beta^t: divide that out
    (m_hat, v_hat) before the update theta - lr m_hat / (sqrt(v_hat) + eps).
    """
    raise NotImplementedError("adam_step: write it here")
