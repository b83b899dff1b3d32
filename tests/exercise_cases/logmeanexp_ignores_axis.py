"""logmeanexp always works along axis 0, whatever axis it is given."""

import math

import numpy as np


def logmeanexp(a, axis=0):
    m = a.max(axis=0)
    return m + np.log(np.mean(np.exp(a - m), axis=0))


def log_weights(log_px_z, z, mu, logvar):
    log_pz = -0.5 * (math.log(2 * math.pi) + z**2).sum(axis=-1)
    log_q = -0.5 * (math.log(2 * math.pi) + logvar + (z - mu)**2 / np.exp(logvar)).sum(axis=-1)
    return log_px_z + log_pz - log_q


def iw_bound(log_w):
    return logmeanexp(log_w, axis=0).mean()
