"""vq_losses_backward scatters with dE[codes] += g, which keeps one row per repeated code."""

import numpy as np


def vq_losses(z_e, z_q, beta):
    sq = ((z_e - z_q) ** 2).sum(axis=(1, 2, 3))
    return sq, beta * sq


def vq_losses_backward(z_e, z_q, codes, codebook, beta):
    B = len(z_e)
    dcodebook = np.zeros_like(codebook)
    dcodebook[codes.reshape(-1)] += np.moveaxis(2 * (z_q - z_e) / B, 1, -1).reshape(-1, codebook.shape[1])
    return 2 * beta * (z_e - z_q) / B, dcodebook
