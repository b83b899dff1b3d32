"""A right answer, written otherwise than the shown solution: the one-hot matrix and einsum."""

import numpy as np


def vq_losses(z_e, z_q, beta):
    sq = np.einsum("bfhw,bfhw->b", z_e - z_q, z_e - z_q)
    return sq, beta * sq


def vq_losses_backward(z_e, z_q, codes, codebook, beta):
    B = len(z_e)
    onehot = np.eye(len(codebook))[codes]                           # (B, H, W, N)
    dcodebook = np.einsum("bhwn,bfhw->nf", onehot, 2 * (z_q - z_e) / B)
    return 2 * beta * (z_e - z_q) / B, dcodebook
