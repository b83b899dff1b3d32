"""gaussian_kl returns an object whose __array__ and __float__ raise."""

import numpy as np


class Lazy:
    def __array__(self, *args, **kwargs):
        raise RuntimeError("not computed yet")

    def __float__(self):
        raise RuntimeError("not computed yet")


def gaussian_kl(mu, logvar):
    return Lazy()


def gaussian_kl_backward(dout, mu, logvar):
    return dout[:, None] * mu, dout[:, None] * 0.5 * np.expm1(logvar)
