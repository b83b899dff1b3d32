"""Tutorial 12 exercise: a transposed convolution, forward and backward.

Derivation: tutorials/derivations.md#transposed-convolution. A 3x3 kernel,
stride 2, padding 1, output padding 1 (NCHW): 3 x 4 pixels become 6 x 8.
Write the two bodies, then

    npvae exercises check conv_transpose

compares each gradient with central differences and names the usual mistake
(a flipped kernel). Stuck: `--show-solution` prints a solution.
"""

import numpy as np

STRIDE, PADDING, OUTPUT_PADDING = 2, 1, 1


def conv_transpose_forward(x, W, b, stride=STRIDE, padding=PADDING,
                             output_padding=OUTPUT_PADDING):
    """The input gradient of the convolution C_out -> C_in with weight W, applied to x, plus b.

    Shapes: x (B, C_in, H, W), W (C_in, C_out, k, k), b (C_out,)
        -> out (B, C_out, Ho, Wo), Ho = (H - 1) stride - 2 padding + k + output_padding.
    Each input pixel adds x[n, c] W[c] (a k x k patch per output channel) onto
    the output at (stride y, stride x'); patches overlap and add; then
    `padding` rows and columns are cropped off each side (output_padding
    extra rows and columns at the bottom and right get only the bias).
    """
    raise NotImplementedError("conv_transpose_forward: write it here")


def conv_transpose_backward(dout, x, W, stride=STRIDE, padding=PADDING):
    """The gradients of L = sum(dout * out) for out = conv_transpose_forward(x, W, b): (dx, dW, db).

    Shapes: dout (B, C_out, Ho, Wo), x (B, C_in, H, W), W (C_in, C_out, k, k)
        -> dx (B, C_in, H, W), dW (C_in, C_out, k, k), db (C_out,).
    Derivation: derivations.md#transposed-convolution.

    Hints: the forward was a convolution's backward, so this backward is a
    convolution's forward: pad dout (the crop's adjoint), take its windows at
    the input's H x W positions (im2col), and multiply.
    """
    raise NotImplementedError("conv_transpose_backward: write it here")
