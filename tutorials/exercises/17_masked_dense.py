"""Tutorial 17 exercise: MADE's masked dense layer, forward and backward.

Derivation: tutorials/derivations.md#masked-autoregressive-prior. Write the
two bodies, then

    npvae exercises check masked_dense

compares out with npvae's MaskedDense and each gradient with central
differences, and names the usual mistakes (the mask missing in the forward,
in dx or on dW; db summed over the wrong axis). The layer graded here has
weights off 0 where the mask is 0, so the mask must do its work. Stuck:
`--show-solution` prints a solution.
"""

import numpy as np


def masked_dense_forward(x, W, b, mask):
    """out = x (W * M) + b, the dense layer whose weight is multiplied by a fixed 0/1 mask M.

    Shapes: x (B, n_in), W and mask (n_in, n_out), b (n_out,) -> out (B, n_out).
    """
    raise NotImplementedError("masked_dense_forward: write it here")


def masked_dense_backward(dout, x, W, mask):
    """The gradients of L = sum(dout * out) for out = masked_dense_forward(x, W, b, mask): (dx, dW, db).

    Shapes: dout (B, n_out), x (B, n_in), W and mask (n_in, n_out)
        -> dx (B, n_in), dW (n_in, n_out), db (n_out,).
    Derivation: derivations.md#masked-autoregressive-prior (Masked dense layer).

    Hint: it is the dense layer with weight W * M; then W_jo enters only as W_jo M_jo.
    """
    raise NotImplementedError("masked_dense_backward: write it here")
