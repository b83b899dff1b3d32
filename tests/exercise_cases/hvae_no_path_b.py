"""h1_backward forgets path B: the gradient back through h2 and q(h2 | h1) into h1."""

import numpy as np


def q_sample_backward(dh, logvar, eps, ckl):
    return 1.0 * dh, 0.5 * dh * eps * np.exp(0.5 * logvar) - ckl[:, None] / 2


def h1_backward(dh1_x, h1, h2, eps2, logvar2, pmu, plogvar, W_q2, W_p1):
    n = len(h1)
    var = np.exp(plogvar)
    dh1_p = (h1 - pmu) / var / n                     # -log p(h1 | h2), directly in h1
    dt = -0.5 * ((h1 - pmu) ** 2 / var - 1) / n
    dh2 = h2 / n + np.hstack([-dh1_p, dt]) @ W_p1.T
    return dh1_x + dh1_p, dh2                        # and h2 depends on h1 too: forgotten
