"""q_sample_backward adds log q's direct term where it subtracts it (+ckl/2): dlogvar wrong, and dh1 with it."""

import numpy as np


def q_sample_backward(dh, logvar, eps, ckl):
    sigma = np.exp(logvar / 2)
    return dh + 0.0, dh * eps * sigma / 2 + ckl[:, None] / 2


def h1_backward(dh1_x, h1, h2, eps2, logvar2, pmu, plogvar, W_q2, W_p1):
    w = 1.0 / h1.shape[0]
    diff = h1 - pmu
    inv_var = np.exp(-plogvar)
    d_pmu = -w * diff * inv_var
    d_plogvar = -w * 0.5 * (diff * diff * inv_var - 1)
    d_h2 = w * h2 + d_pmu @ W_p1[:, :h1.shape[1]].T + d_plogvar @ W_p1[:, h1.shape[1]:].T
    d_mu2, d_logvar2 = q_sample_backward(d_h2, logvar2, eps2, np.full(h1.shape[0], w))
    Z2 = h2.shape[1]
    d_h1 = dh1_x - d_pmu + d_mu2 @ W_q2[:, :Z2].T + d_logvar2 @ W_q2[:, Z2:].T
    return d_h1, d_h2
