"""gaussian_nll_backward divides 0 by 0 in one place: a NaN."""

import numpy as np


def gaussian_nll_backward(dout, mean, x, sigma=1.0):
    dmean = dout[:, None] * (mean - x) / sigma**2
    dmean[0, 0] = np.nan
    return dmean
