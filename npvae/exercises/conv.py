"""Tutorial 12: a convolution and a transposed convolution, forward and backward."""

import numpy as np

from ..conv import Conv2D, ConvTranspose2D
from .judging import B
from .layers import layer_exercise


def _conv2d(rng, padding=1):
    return Conv2D(2, 3, 3, stride=2, padding=padding, rng=rng, init="pytorch", dtype=np.float64)


def _conv_transpose2d(rng):
    return ConvTranspose2D(3, 2, 3, stride=2, padding=1, output_padding=1, rng=rng,
                           init="pytorch", dtype=np.float64)


def _flipped(make, x, params, dout):
    """dx of the layer ``make`` builds, with the kernel flipped (a true convolution's backward)."""
    layer = make(np.random.default_rng(0))
    layer.params["W"][...] = params["W"][:, :, ::-1, ::-1]
    layer.forward(x)
    return layer.backward(dout)


FLIPPED = ("uses the kernel flipped (a true convolution's backward): this layer correlates, so dx "
           "scatters dout through W as it is")


def _db_averaged(dout):
    Ho, Wo = dout.shape[2:]
    return {f"is averaged over the Ho x Wo = {Ho} x {Wo} output positions: b is added at every "
            "position, so db sums dout over them (and over the batch)": dout.sum(axis=(0, 2, 3)) / (Ho * Wo)}


def _conv_candidates(x, params, dout):
    p = 1
    unpadded = _conv2d(np.random.default_rng(0), padding=0)   # the same layer on the padded input
    unpadded.params["W"][...] = params["W"]
    unpadded.forward(np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))))
    dxpad = unpadded.backward(dout)
    return {"dx": {FLIPPED: _flipped(_conv2d, x, params, dout),
                   f"still has the padding: shape {dxpad.shape} is the gradient of the padded input; "
                   f"crop padding = {p} rows and columns off each side to get dx {x.shape}": dxpad},
            "db": _db_averaged(dout)}


def _conv_transpose_candidates(x, params, dout):
    return {"dx": {FLIPPED: _flipped(_conv_transpose2d, x, params, dout)}, "db": _db_averaged(dout)}


CONV_FORWARD = """
    Bn, C, H, Wd = x.shape
    k = W.shape[2]
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho, Wo = (H + 2 * padding - k) // stride + 1, (Wd + 2 * padding - k) // stride + 1
    out = np.zeros((Bn, W.shape[0], Ho, Wo)) + b[:, None, None]
    for i in range(k):                       # each kernel offset: a dense layer over the channels
        for j in range(k):
            window = xpad[:, :, i:i + stride * Ho:stride, j:j + stride * Wo:stride]   # (B, C, Ho, Wo)
            out += np.einsum("bchw,oc->bohw", window, W[:, :, i, j])
    return out"""

CONV_BACKWARD = """
    Bn, C, H, Wd = x.shape
    k, (Ho, Wo) = W.shape[2], dout.shape[2:]
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dxpad, dW = np.zeros(xpad.shape), np.zeros(W.shape)
    for i in range(k):
        for j in range(k):
            rows, cols = slice(i, i + stride * Ho, stride), slice(j, j + stride * Wo, stride)
            dW[:, :, i, j] = np.einsum("bohw,bchw->oc", dout, xpad[:, :, rows, cols])
            dxpad[:, :, rows, cols] += np.einsum("bohw,oc->bchw", dout, W[:, :, i, j])  # windows overlap: add
    dx = dxpad[:, :, padding:padding + H, padding:padding + Wd]          # crop the padding off
    return dx, dW, dout.sum(axis=(0, 2, 3))"""

CONV_TRANSPOSE_FORWARD = """
    Bn, C, H, Wd = x.shape
    k = W.shape[2]
    Hf, Wf = (H - 1) * stride + k + output_padding, (Wd - 1) * stride + k + output_padding
    full = np.zeros((Bn, W.shape[1], Hf, Wf))
    for i in range(k):                       # each input pixel adds x W[:, :, i, j] at offset (i, j)
        for j in range(k):
            full[:, :, i:i + stride * H:stride, j:j + stride * Wd:stride] += np.einsum(
                "bchw,co->bohw", x, W[:, :, i, j])
    return full[:, :, padding:Hf - padding, padding:Wf - padding] + b[:, None, None]"""

CONV_TRANSPOSE_BACKWARD = """
    Bn, C, H, Wd = x.shape
    k = W.shape[2]
    dfull = np.pad(dout, ((0, 0), (0, 0), (padding, padding), (padding, padding)))  # the crop's adjoint
    dx, dW = np.zeros(x.shape), np.zeros(W.shape)
    for i in range(k):
        for j in range(k):
            window = dfull[:, :, i:i + stride * H:stride, j:j + stride * Wd:stride]   # (B, C_out, H, W)
            dx += np.einsum("bohw,co->bchw", window, W[:, :, i, j])
            dW[:, :, i, j] = np.einsum("bchw,bohw->co", x, window)
    return dx, dW, dout.sum(axis=(0, 2, 3))"""

EXERCISES = [
    layer_exercise("conv", "12_conv.py", _conv2d, (B, 2, 5, 6), "convolution",
                   "a 3x3 stride-2 convolution with padding 1: forward (im2col) and backward",
                   {"conv_forward": CONV_FORWARD, "conv_backward": CONV_BACKWARD}, _conv_candidates),
    layer_exercise("conv_transpose", "12_conv_transpose.py", _conv_transpose2d, (B, 3, 3, 4),
                   "transposed-convolution",
                   "a 3x3 stride-2 transposed convolution: forward (col2im) and backward",
                   {"conv_transpose_forward": CONV_TRANSPOSE_FORWARD,
                    "conv_transpose_backward": CONV_TRANSPOSE_BACKWARD}, _conv_transpose_candidates),
]
