"""vq_losses_backward forgets the stop-gradient on E[c] in the commitment loss: it pulls the codebook too."""

import numpy as np


def vq_losses(z_e, z_q, beta):
    sq = ((z_e - z_q) ** 2).sum(axis=(1, 2, 3))
    return sq, beta * sq


def vq_losses_backward(z_e, z_q, codes, codebook, beta):
    B = len(z_e)
    dz_e = 2 * beta * (z_e - z_q) / B
    dz_q = 2 * (1 + beta) * (z_q - z_e) / B          # both losses, as if neither had sg[.]
    dcodebook = np.zeros_like(codebook)
    np.add.at(dcodebook, codes.reshape(-1), np.moveaxis(dz_q, 1, -1).reshape(-1, codebook.shape[1]))
    return dz_e, dcodebook
