"""gaussian_kl is wrong (a sign), and gaussian_kl_backward calls exit(0): never a pass."""

import sys

import numpy as np


def gaussian_kl(mu, logvar):
    return 0.5 * (np.exp(logvar) + mu**2 - 1 + logvar).sum(axis=-1)


def gaussian_kl_backward(dout, mu, logvar):
    sys.exit(0)
