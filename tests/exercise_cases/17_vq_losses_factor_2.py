"""vq_losses_backward drops the 2 of d|a|^2 / da in the commitment's gradient."""

import numpy as np


def vq_losses(z_e, z_q, beta):
    sq = ((z_e - z_q) ** 2).sum(axis=(1, 2, 3))
    return sq, beta * sq


def vq_losses_backward(z_e, z_q, codes, codebook, beta):
    B = len(z_e)
    dz_e = beta * (z_e - z_q) / B
    dcodebook = np.zeros_like(codebook)
    np.add.at(dcodebook, codes.reshape(-1), np.moveaxis(2 * (z_q - z_e) / B, 1, -1).reshape(-1, codebook.shape[1]))
    return dz_e, dcodebook
