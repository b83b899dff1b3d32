"""reparameterize takes std = sqrt(logvar)."""

import numpy as np


def reparameterize(mu, logvar, eps):
    std = np.sqrt(logvar)
    return mu + std * eps


def reparameterize_backward(dz, logvar, eps):
    return dz, dz * eps * 0.5 * np.exp(logvar / 2)
