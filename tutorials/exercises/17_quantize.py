"""Tutorial 17 exercise: vector quantization, forward and its straight-through backward.

Derivation: tutorials/derivations.md#vector-quantization. Write the two
bodies, then

    npvae exercises check quantize

compares the codes and z_q with npvae's VectorQuantizer (on a tie, too: the
first of equally near codes, as np.argmin takes it), and the backward with
npvae's and with central differences of the straight-through surrogate, and
names the usual mistakes (argmax for argmin, the argmin over the wrong axis,
rows read without moving F last, the true gradient (zero) for the
straight-through one, the decoder's gradient sent to the codebook). Stuck:
`--show-solution` prints a solution.
"""

import numpy as np


def quantize(z_e, codebook):
    """Each position's nearest code and its vector: (z_q, codes).

        c_bhw   = argmin_v |z_e[b, :, h, w] - E_v|^2     (the first v on a tie)
        z_q[b, :, h, w] = E_{c_bhw}

    Shapes: z_e (B, F, H, W), the F dimensions on axis 1 as npvae's
    convolutions give them; codebook E (N, F), one code a row
        -> z_q (B, F, H, W), codes (B, H, W) integers in [0, N).
    Derivation: derivations.md#vector-quantization (Forward).

    Hint: as rows, z (B H W, F) = np.moveaxis(z_e, 1, -1).reshape(-1, F);
    the distances of every row to every code are a (B H W, N) array.
    """
    raise NotImplementedError("quantize: write it here")


def quantize_backward(dz_q, codes, codebook):
    """What the quantizer hands back of the decoder's gradient dz_q: (dz_e, dcodebook).

    The decoder is fed z_e + sg[z_q - z_e] (value z_q; sg[.] a constant on the
    way back), the straight-through estimator. The two losses' gradients are
    the next exercise (vq_losses); here only the decoder's path.

    Shapes: dz_q (B, F, H, W), codes (B, H, W), codebook (N, F)
        -> dz_e (B, F, H, W), dcodebook (N, F).
    Derivation: derivations.md#vector-quantization (why the true gradient is
    useless, and what is used instead).
    """
    raise NotImplementedError("quantize_backward: write it here")
