"""Tutorial 17 exercise: the codebook and commitment losses and their gradients.

Derivation: tutorials/derivations.md#vector-quantization. Write the two
bodies, then

    npvae exercises check vq_losses

compares the losses with npvae's VectorQuantizer, and their gradients with
npvae's backward and with central differences (the commitment loss in z_e,
the codebook loss in the codebook, the codes held), and names the usual
mistakes (a stop-gradient forgotten, so that the commitment pulls the
codebook or the codebook loss pulls z_e; beta missing or misplaced; the
factor 2; a mean where npvae sums; repeated codes not added up in the
codebook's gradient). Stuck: `--show-solution` prints a solution.
"""

import numpy as np


def vq_losses(z_e, z_q, beta):
    """Each example's codebook and commitment losses: (codebook_loss, commitment_loss).

        codebook_loss_b   = sum_{f,h,w} (sg[z_e] - z_q)^2[b, f, h, w]
        commitment_loss_b = beta sum_{f,h,w} (z_e - sg[z_q])^2[b, f, h, w]

    with z_q = E[c] the codes' vectors and sg[.] the stop-gradient (the same
    value; a constant on the way back).

    Shapes: z_e, z_q (B, F, H, W), beta a float -> (B,), (B,).
    Derivation: derivations.md#vector-quantization (Stop-gradient).
    """
    raise NotImplementedError("vq_losses: write it here")


def vq_losses_backward(z_e, z_q, codes, codebook, beta):
    """The gradients of L = mean_b (codebook_loss_b + commitment_loss_b): (dz_e, dcodebook).

    z_q[b, :, h, w] = E[codes[b, h, w]], so the codebook loss depends on the
    codebook through z_q; the stop-gradients say which loss reaches which.

    Shapes: z_e, z_q (B, F, H, W), codes (B, H, W) integers in [0, N),
    codebook E (N, F), beta a float -> dz_e (B, F, H, W), dcodebook (N, F).
    Derivation: derivations.md#vector-quantization (Gradients).

    Hint: code v collects the terms of every position whose code is v, and
    several positions share a code: np.add.at adds them up.
    """
    raise NotImplementedError("vq_losses_backward: write it here")
