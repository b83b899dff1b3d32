"""quantize takes the argmin over the last axis (the grid's columns) instead of over the N codes."""

import numpy as np


def quantize(z_e, codebook):
    d = ((z_e[:, None] - codebook[None, :, :, None, None]) ** 2).sum(axis=2)   # (B, N, H, W)
    codes = d.argmin(axis=-1)
    return np.moveaxis(codebook[codes], -1, 1), codes


def quantize_backward(dz_q, codes, codebook):
    return dz_q.copy(), np.zeros_like(codebook)
