"""gaussian_kl and its backward read logvar as log sigma: the variance becomes exp(2 logvar)."""

import numpy as np


def gaussian_kl(mu, logvar):
    return 0.5 * (np.exp(2 * logvar) + mu**2 - 1 - 2 * logvar).sum(axis=-1)


def gaussian_kl_backward(dout, mu, logvar):
    return dout[:, None] * mu, dout[:, None] * (np.exp(2 * logvar) - 1)
