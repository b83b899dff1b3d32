"""log_weights' log q divides (z - mu)^2 by the standard deviation where the variance belongs."""

import math

import numpy as np


def logmeanexp(a, axis=0):
    m = a.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.mean(np.exp(a - m), axis=axis))


def log_weights(log_px_z, z, mu, logvar):
    log_pz = -0.5 * (math.log(2 * math.pi) + z**2).sum(axis=-1)
    log_q = -0.5 * (math.log(2 * math.pi) + logvar + (z - mu)**2 / np.exp(logvar / 2)).sum(axis=-1)
    return log_px_z + log_pz - log_q


def iw_bound(log_w):
    return logmeanexp(log_w, axis=0).mean()
