"""h1_backward divides by the standard deviation exp(plogvar / 2) in log p(h1 | h2)'s gradient."""

import numpy as np


def q_sample_backward(dh, logvar, eps, ckl):
    return dh.copy(), dh * eps * 0.5 * np.exp(logvar / 2) - 0.5 * ckl[:, None]


def h1_backward(dh1_x, h1, h2, eps2, logvar2, pmu, plogvar, W_q2, W_p1):
    B = h1.shape[0]
    c = np.full((B, 1), 1.0 / B)
    r = (h1 - pmu) * np.exp(-plogvar / 2)
    dpmu, dplogvar = -c * r, -c * 0.5 * ((h1 - pmu) * r - 1)
    dh2 = c * h2 + np.concatenate([dpmu, dplogvar], axis=1) @ W_p1.T
    dmu2, dlogvar2 = q_sample_backward(dh2, logvar2, eps2, c[:, 0])
    return dh1_x + c * r + np.concatenate([dmu2, dlogvar2], axis=1) @ W_q2.T, dh2
