"""Tutorial 12 exercise: a convolution, forward and backward.

Derivation: tutorials/derivations.md#convolution. A 3x3 kernel, stride 2,
padding 1 (NCHW, a cross-correlation as in every deep-learning library).
Write the two bodies, then

    npvae exercises check conv

compares each gradient with central differences and names the usual mistake
(a flipped kernel). npvae.conv's im2col and col2im are yours to use, or
write the loop over the 9 kernel offsets yourself. Stuck: `--show-solution`
prints a solution.
"""

import numpy as np

STRIDE, PADDING = 2, 1


def conv_forward(x, W, b, stride=STRIDE, padding=PADDING):
    """out[n, o, y, x'] = b[o] + sum_{c,i,j} W[o, c, i, j] xpad[n, c, stride y + i, stride x' + j].

    Shapes: x (B, C_in, H, W), W (C_out, C_in, k, k), b (C_out,)
        -> out (B, C_out, Ho, Wo), Ho = (H + 2 padding - k) // stride + 1.
    xpad is x with `padding` zeros on each side of H and W.
    """
    raise NotImplementedError("conv_forward: write it here")


def conv_backward(dout, x, W, stride=STRIDE, padding=PADDING):
    """The gradients of L = sum(dout * out) for out = conv_forward(x, W, b): (dx, dW, db).

    Shapes: dout (B, C_out, Ho, Wo), x (B, C_in, H, W), W (C_out, C_in, k, k)
        -> dx (B, C_in, H, W), dW (C_out, C_in, k, k), db (C_out,).
    Derivation: derivations.md#convolution.

    Hints: with cols the (C_in k k, B Ho Wo) matrix of windows (im2col), the
    forward is the product W2 @ cols: a dense layer, whose gradients you know.
    dcols goes back onto the pixels each window came from, adding where
    windows overlap (col2im); then crop the padding off.
    """
    raise NotImplementedError("conv_backward: write it here")
