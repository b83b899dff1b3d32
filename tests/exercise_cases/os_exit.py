"""gaussian_kl is wrong (a sign), and gaussian_kl_backward ends its process with os._exit(0)."""

import os

import numpy as np


def gaussian_kl(mu, logvar):
    return 0.5 * (np.exp(logvar) + mu**2 - 1 + logvar).sum(axis=-1)


def gaussian_kl_backward(dout, mu, logvar):
    os._exit(0)
