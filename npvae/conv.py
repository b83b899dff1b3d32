"""Convolution by hand: ``Conv2D``, ``ConvTranspose2D`` and ``Reshape``.

Layout: **NCHW**. Every spatial array at a layer's boundary has shape
(batch B, channels C, height H, width W), as in PyTorch. Weights are stored
as PyTorch stores them: ``Conv2D`` W (C_out, C_in, k, k), ``ConvTranspose2D``
W (C_in, C_out, k, k); biases (C_out,).

A convolution is a matrix product (im2col). ``im2col`` copies, for each of
the k x k kernel offsets, the input pixels that offset touches into a matrix
``cols`` of shape (C k k, B Ho Wo), one column per output pixel; then

    out = W.reshape(C_out, C_in k k) @ cols + b          (C_out, B Ho Wo)

``col2im`` is its adjoint: it adds each column back onto the pixels it came
from. Both loop over the k x k kernel offsets (9 for a 3 x 3 kernel), each
iteration one strided slice of the whole batch; nothing loops over pixels or
examples. ``im2col``, ``col2im``, ``channels_first`` and ``crop`` are the
plain forms, with the batch after the channels ((C, B, H, W)), the forms
``derivations.md`` and tutorial 12 show.

The layers run the same steps with the batch **last** ((C, H, W, B) in memory,
``batch_last``, ``im2col_batch_last``, ``col2im_batch_last``,
``crop_batch_last``): the same copies and adds, entry for entry, but each
strided slice's innermost run is the B examples of one pixel (128 floats a
run) instead of one row of Wo pixels (7 to 14 floats), which NumPy copies 1.5
to 5 times faster (``benchmarks/README.md``). Each product is still one large
matrix product, its columns ordered (y, x, n) instead of (n, y, x); the arrays
a layer returns are (B, C, H, W) views of that memory, and a layer that gets
such a view takes it back without a copy. ``im2col_batch_last`` does the
padding itself (zeros where a window reaches it), so no padded copy of the
input is made. With several threads the products and the batch-last passes
are shared out across them (``npvae.parallel``), with the same results.
``tests/test_conv.py`` proves the batch-last functions equal the plain ones
bit for bit (and col2im with a bias to col2im plus the bias within float32
rounding: ``ConvTranspose2D`` starts each pixel's sum from its bias), and the
layers equal a plain-form reference within float32 rounding (products summed
in another order).

A transposed convolution is the backward (the input gradient) of a
convolution: ``ConvTranspose2D.forward`` is ``Conv2D``'s dx computation
(product, then col2im) and its backward is ``Conv2D``'s forward (im2col,
then product). A transposed convolution with fewer input channels than
output channels computes its forward phase by phase instead, a product per
phase of the output and no col2im (``npvae.convphases``): the same values
within float32 rounding, and less memory to move.

Derivations: ``tutorials/derivations.md``, sections "Convolution" and
"Transposed convolution".
"""

import numpy as np

from . import parallel
from .backend import xp_of
from .checks import positive_int
from .convphases import conv_transpose_phases, gathers
from .errors import ConfigError
from .layers import init_weights, parameters


def conv_output_size(size, kernel, stride=1, padding=0):
    """Output height (or width) of a convolution: (size + 2 padding - kernel) // stride + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_transpose_output_size(size, kernel, stride=1, padding=0, output_padding=0):
    """Output height (or width) of a transposed convolution:
    (size - 1) stride - 2 padding + kernel + output_padding."""
    return (size - 1) * stride - 2 * padding + kernel + output_padding


def channels_first(x, padding=0):
    """x (B, C, H, W) as a (C, B, H + 2p, W + 2p) array, zero-padded by ``padding``.

    Without padding it is a view of ``x`` (no copy).
    """
    xp = xp_of(x)
    x = x.transpose(1, 0, 2, 3)
    if not padding:
        return x
    C, B, H, W = x.shape
    padded = xp.zeros((C, B, H + 2 * padding, W + 2 * padding), dtype=x.dtype)
    padded[:, :, padding:padding + H, padding:padding + W] = x
    return padded


def im2col(x, kernel, stride, out_h, out_w):
    """The columns of a convolution: (C, k, k, B, Ho, Wo) from x (C, B, Hp, Wp), padded.

    cols[c, i, j, n, y, x'] = x[c, n, stride y + i, stride x' + j]: for each
    kernel offset (i, j), the input pixel that offset multiplies when
    producing output pixel (y, x'). Reshaped to (C k k, B Ho Wo), one column
    per output pixel.
    """
    xp = xp_of(x)
    C, B = x.shape[:2]
    cols = xp.empty((C, kernel, kernel, B, out_h, out_w), dtype=x.dtype)
    for i in range(kernel):
        for j in range(kernel):
            cols[:, i, j] = x[:, :, i:i + stride * (out_h - 1) + 1:stride,
                              j:j + stride * (out_w - 1) + 1:stride]
    return cols


def col2im(cols, shape, stride):
    """The adjoint of ``im2col``: each entry of cols (C, k, k, B, Ho, Wo) added onto its pixel.

    Returns a (C, B, Hp, Wp) array of ``shape``: out[c, n, stride y + i,
    stride x' + j] += cols[c, i, j, n, y, x'], summed over every (i, j, y, x')
    that lands on a pixel (overlapping windows add up). Pixels no window
    reaches stay 0.
    """
    xp = xp_of(cols)
    kernel, out_h, out_w = cols.shape[1], cols.shape[4], cols.shape[5]
    out = xp.zeros(shape, dtype=cols.dtype)
    for i in range(kernel):
        for j in range(kernel):
            out[:, :, i:i + stride * (out_h - 1) + 1:stride,
                j:j + stride * (out_w - 1) + 1:stride] += cols[:, i, j]
    return out


def crop(x, padding):
    """x (C, B, Hp, Wp) without ``padding`` rows and columns on each side, as (B, C, H, W)."""
    if padding:
        x = x[:, :, padding:x.shape[2] - padding, padding:x.shape[3] - padding]
    return x.transpose(1, 0, 2, 3)


def batch_last(x):
    """x (B, C, H, W) as a (C, H, W, B) view: ``channels_first`` with the batch moved last
    (contiguous when ``x`` is a layer's output). Its padding is done by
    ``im2col_batch_last`` and cropped by ``crop_batch_last``.
    """
    return x.transpose(1, 2, 3, 0)


def im2col_batch_last(x, kernel, stride, out_h, out_w, padding=0):
    """``im2col`` with the batch last: (C, k, k, Ho, Wo, B) from x (C, H, W, B) zero-padded
    by ``padding``.

    cols[c, i, j, y, x', n] = xpad[c, stride y + i, stride x' + j, n], the
    entries of ``im2col``'s cols[c, i, j, n, y, x'], with xpad = x padded by
    ``padding`` (``channels_first``'s padding, the batch last). The padded
    copy is never made: each offset copies the pixels it reaches inside x and
    writes zeros where it reaches the padding (``_inside``). Reshaped to
    (C k k, Ho Wo B). With several threads (``npvae.parallel``) each copies
    its block of channels (``_in_blocks``).
    """
    xp = xp_of(x)
    C, H, W, B = x.shape
    cols = xp.empty((C, kernel, kernel, out_h, out_w, B), dtype=x.dtype)

    rows = [_inside(H, out_h, i, stride, padding) for i in range(kernel)]
    columns = [_inside(W, out_w, j, stride, padding) for j in range(kernel)]

    def copy(c):  # channels c
        for i, (y0, y1, row) in enumerate(rows):
            for j, (x0, x1, col) in enumerate(columns):
                window = cols[c, i, j]  # (channels, Ho, Wo, examples)
                window[:, y0:y1, x0:x1] = x[c, row:row + stride * (y1 - y0 - 1) + 1:stride,
                                            col:col + stride * (x1 - x0 - 1) + 1:stride]
                for zeros in (window[:, :y0], window[:, y1:], window[:, y0:y1, :x0],
                              window[:, y0:y1, x1:]):
                    zeros[...] = 0
    _in_blocks(copy, C, cols.size, xp)
    return cols


def _inside(size, out, offset, stride, padding):
    """(first, stop, pixel): the outputs y in [first, stop) whose input stride y + offset -
    padding lies inside [0, size), and the input pixel of the first of them."""
    first = min(out, max(0, -((offset - padding) // stride)))
    stop = max(first, min(out, (size - 1 + padding - offset) // stride + 1))
    return first, stop, stride * first + offset - padding


def _in_blocks(function, C, size, xp):
    """``function(c)`` over blocks of channels c (slices), at most one block per channel;
    one call with everything for small work (``npvae.parallel``).

    Never in blocks of examples: with the batch last those are runs of a few
    dozen floats per pixel, and on two threads an image of one channel took
    2 to 5 times longer to copy in two such halves than whole."""
    parallel.elementwise(lambda i, j: function(slice(i, j)), C, size, xp)


def col2im_batch_last(cols, shape, stride, bias=None):
    """``col2im`` with the batch last: cols (C, k, k, Ho, Wo, B) added onto a (C, Hp, Wp, B)
    array of ``shape``, out[c, stride y + i, stride x' + j, n] += cols[c, i, j, y, x', n],
    in ``col2im``'s order of offsets (so the sums round alike).

    With kernel >= stride, the first stride x stride offsets (i, j < stride)
    land on disjoint pixels that together cover the top-left stride Ho x
    stride Wo pixels, and each is the first offset to reach its pixels: so
    they are copied there instead of added onto zeros (0 + a = a; only a
    -0.0 may come out as 0.0 in ``col2im``), and only the pixels they miss
    are zeroed. That saves a zeroing pass and stride^2 reads of ``out``.
    ``bias`` (C,): out starts from it instead of zeros, out[c] = b[c] + the
    sum, in the same passes (the first offsets are added to b as they are
    copied, the missed pixels set to b): a transposed convolution's bias
    without a pass of its own. Its sum then rounds as b + a_1 + a_2 + ...
    where adding the bias last rounds as (a_1 + a_2 + ...) + b: the same
    within float32 rounding (``tests/test_conv.py``).
    Each thread (``npvae.parallel``) does all of this for its block of
    channels, which no other block's offsets reach.
    """
    xp = xp_of(cols)
    kernel, out_h, out_w = cols.shape[1], cols.shape[3], cols.shape[4]
    first = stride if kernel >= stride else 0
    out = xp.empty(shape, dtype=cols.dtype)

    def add(c):  # channels c: their pixels, all offsets
        start = 0 if bias is None else bias[c].reshape(-1, 1, 1, 1)
        if first:   # only the pixels the first offsets miss
            out[c, stride * out_h:] = start
            out[c, :stride * out_h, stride * out_w:] = start
        else:
            out[c] = start
        for i in range(kernel):
            for j in range(kernel):
                window = out[c, i:i + stride * (out_h - 1) + 1:stride,
                             j:j + stride * (out_w - 1) + 1:stride]
                if i < first and j < first:
                    if bias is None:
                        window[...] = cols[c, i, j]
                    else:
                        xp.add(start, cols[c, i, j], out=window)
                else:
                    window += cols[c, i, j]
    _in_blocks(add, shape[0], cols.size, xp)
    return out


def crop_batch_last(x, padding):
    """x (C, Hp, Wp, B) without ``padding`` rows and columns on each side, as (B, C, H, W)."""
    if padding:
        x = x[:, padding:x.shape[1] - padding, padding:x.shape[2] - padding]
    return x.transpose(3, 0, 1, 2)


def _product_t(a, b):
    """a @ b^T for a (m, N), b (n, N) with N large (a weight gradient), asked for as
    (b @ a^T)^T: the pair (b, a^T) to multiply, whose product is then transposed.

    The same product; but OpenBLAS (0.3.31, two threads) computes it up to ten
    times slower in the orientation a @ b^T when m and n are small and N is
    large (measured in ``benchmarks/README.md``), so we ask for its transpose.
    """
    return b, a.T


def _add_bias(out, b, xp):
    """out[o, ...] += b[o] in place, for out (C_out, ...), in blocks of channels across the
    threads (``npvae.parallel``)."""
    def add(i, j):
        out[i:j] += b[i:j].reshape(-1, *[1] * (out.ndim - 1))
    parallel.elementwise(add, out.shape[0], out.size, xp)


def _bias_gradient(dout, db, xp):
    """db[o] = the sum of dout[o] (dout (C_out, ...)), in blocks of channels across the
    threads (``npvae.parallel``); each channel's sum is the same as summed alone."""
    def add_up(i, j):
        dout[i:j].sum(axis=tuple(range(1, dout.ndim)), out=db[i:j])
    parallel.elementwise(add_up, dout.shape[0], dout.size, xp)


def _check_sizes(name, c_in, c_out, kernel, stride, padding, output_padding=0):
    for arg, value in (("c_in", c_in), ("c_out", c_out), ("kernel", kernel), ("stride", stride)):
        positive_int(f"{name} {arg}", value)
    for arg, value in (("padding", padding), ("output_padding", output_padding)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"{name} {arg}={value!r} must be a non-negative integer")
    if output_padding >= stride:
        raise ConfigError(f"{name} output_padding={output_padding} must be smaller than "
                          f"stride={stride}")


def _spatial_input(name, x, channels):
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4 or shape[1] != channels:
        raise ConfigError(f"{name} needs x of shape (batch, {channels}, height, width); got "
                          f"shape {shape}")


class Conv2D:
    """2-D convolution (cross-correlation, as in every deep-learning library).

    out[n, o, y, x'] = b[o] + sum_{c, i, j} W[o, c, i, j] xpad[n, c, s y + i, s x' + j]

    with xpad the input zero-padded by ``padding`` on each side and s the
    stride. Shapes: x (B, C_in, H, W), W (C_out, C_in, k, k), b (C_out,),
    out (B, C_out, Ho, Wo), Ho = (H + 2 padding - k) // stride + 1.

    Backward (``derivations.md#convolution``), with cols = im2col(xpad)
    (C_in k k, B Ho Wo), W2 = W.reshape(C_out, C_in k k) and dout2 = dout
    as (C_out, B Ho Wo):
        dW = dout2 @ cols^T                       (C_out, C_in k k) -> W's shape
        db = dout summed over n, y, x'            (C_out,)
        dx = crop(col2im(W2^T @ dout2))           (B, C_in, H, W)

    Initialisation: ``init_weights`` with PyTorch's fans, fan_in = C_in k k
    and fan_out = C_out k k (``pytorch`` is what ``torch.nn.Conv2d`` does).
    """

    def __init__(self, c_in, c_out, kernel, stride=1, padding=0, *, rng, init="he",
                 dtype=np.float32, xp=np):
        _check_sizes("Conv2D", c_in, c_out, kernel, stride, padding)
        self.c_in, self.c_out, self.kernel = c_in, c_out, kernel
        self.stride, self.padding = stride, padding
        area = kernel * kernel
        W, b = init_weights(c_in * area, c_out * area, init, rng,
                            shape=(c_out, c_in, kernel, kernel), bias=c_out)
        self.params, self.grads = parameters(W, b, dtype, xp)
        self.xp = xp

    def output_shape(self, height, width):
        """(C_out, Ho, Wo) for an input of ``height`` x ``width`` pixels."""
        k, s, p = self.kernel, self.stride, self.padding
        return self.c_out, conv_output_size(height, k, s, p), conv_output_size(width, k, s, p)

    def forward(self, x):
        _spatial_input(repr(self), x, self.c_in)
        B, C, H, W = x.shape
        _, Ho, Wo = self.output_shape(H, W)
        if Ho < 1 or Wo < 1:
            raise ConfigError(f"{self!r}: a {H}x{W} input is smaller than the kernel")
        self.x_shape = x.shape
        # The batch-last forms of im2col and crop (module docstring): same entries, faster.
        cols = im2col_batch_last(batch_last(x), self.kernel, self.stride, Ho, Wo, self.padding)
        self.cols = cols.reshape(C * self.kernel ** 2, Ho * Wo * B)
        out = parallel.matmul(self.params["W"].reshape(self.c_out, -1), self.cols, self.xp)
        _add_bias(out, self.params["b"], self.xp)
        return out.reshape(self.c_out, Ho, Wo, B).transpose(3, 0, 1, 2)

    def backward(self, dout, need_dx=True):
        """Fill ``grads`` from dout (B, C_out, Ho, Wo); return dx (B, C_in, H, W), or None.

        dW = dout2 @ cols^T, db = sum of dout over (n, y, x'), dx = the
        padding cropped off col2im(W2^T @ dout2). ``need_dx=False`` (a first
        layer) skips dx. Derivation: ``derivations.md#convolution``.
        """
        B, C, H, W = self.x_shape
        Ho, Wo = dout.shape[2:]
        dout2 = dout.transpose(1, 2, 3, 0).reshape(self.c_out, Ho * Wo * B)
        products = [(*_product_t(dout2, self.cols), None)]              # dW^T = cols dout2^T
        if need_dx:
            products.append((self.params["W"].reshape(self.c_out, -1).T, dout2, None))  # dcols
        # independent products: at once, across npvae's threads (npvae.parallel)
        products = parallel.matmuls(products, self.xp)
        self.grads["W"].reshape(self.c_out, -1)[...] = products[0].T
        _bias_gradient(dout2, self.grads["b"], self.xp)
        if not need_dx:
            return None
        dcols = products[1]
        p = self.padding
        dx = col2im_batch_last(dcols.reshape(C, self.kernel, self.kernel, Ho, Wo, B),
                               (C, H + 2 * p, W + 2 * p, B), self.stride)
        return crop_batch_last(dx, p)

    def __repr__(self):
        return (f"Conv2D({self.c_in}, {self.c_out}, {self.kernel}, stride={self.stride}, "
                f"padding={self.padding})")


class ConvTranspose2D:
    """2-D transposed convolution: the input gradient of a ``Conv2D``, as a layer.

    It computes what ``Conv2D(C_out, C_in, k, stride, padding).backward``
    computes for dx, with this layer's W (C_in, C_out, k, k) as that
    convolution's weight: each input pixel scatters W[c_in] (C_out, k, k),
    scaled by its value, onto a k x k window of the output, windows ``stride``
    apart; overlaps add, and ``padding`` is cropped off each side.
    ``output_padding`` (less than ``stride``) adds that many rows and columns,
    which no window reaches, at the bottom and right before the crop; the
    last max(0, output_padding - padding) of them survive it and hold the bias
    only (none in the conv preset: padding 1, output_padding 1). With
    stride > k the stride - k rows between windows (those the crop keeps)
    hold the bias only too.
    Shapes: x (B, C_in, H, W), out (B, C_out, Ho, Wo),
    Ho = (H - 1) stride - 2 padding + k + output_padding.
    With C_in < C_out the forward gathers instead of scattering: each phase
    of the output (its pixels s m + r, s n + q) is one product of the
    kernel offsets that reach it with shifted copies of x
    (``npvae.convphases``, which says why and when it is faster); the same
    values within float32 rounding. The backward is the same either way.

    Backward (``derivations.md#transposed-convolution``), with
    cols = im2col(dout padded) (C_out k k, B H W), W2 = W.reshape(C_in, C_out k k)
    and x2 = x as (C_in, B H W):
        dW = x2 @ cols^T       (C_in, C_out k k) -> W's shape
        db = dout summed over n, y, x'      (C_out,)
        dx = W2 @ cols         (C_in, B H W) -> (B, C_in, H, W)
    which is a convolution of dout with W: the forward of the Conv2D above.

    Initialisation: PyTorch's fans for this weight shape, fan_in = C_out k k
    and fan_out = C_in k k (``pytorch`` is what ``torch.nn.ConvTranspose2d``
    does).
    """

    def __init__(self, c_in, c_out, kernel, stride=1, padding=0, output_padding=0, *, rng,
                 init="he", dtype=np.float32, xp=np):
        _check_sizes("ConvTranspose2D", c_in, c_out, kernel, stride, padding, output_padding)
        self.c_in, self.c_out, self.kernel = c_in, c_out, kernel
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        area = kernel * kernel
        W, b = init_weights(c_out * area, c_in * area, init, rng,
                            shape=(c_in, c_out, kernel, kernel), bias=c_out)
        self.params, self.grads = parameters(W, b, dtype, xp)
        self.xp = xp

    def output_shape(self, height, width):
        """(C_out, Ho, Wo) for an input of ``height`` x ``width`` pixels."""
        args = self.kernel, self.stride, self.padding, self.output_padding
        return (self.c_out, conv_transpose_output_size(height, *args),
                conv_transpose_output_size(width, *args))

    def forward(self, x):
        _spatial_input(repr(self), x, self.c_in)
        B, C, H, W = x.shape
        _, Ho, Wo = self.output_shape(H, W)
        if Ho < 1 or Wo < 1:
            raise ConfigError(f"{self!r}: a {H}x{W} input gives no output pixels")
        self.x_shape = x.shape
        self.x2 = x.transpose(1, 2, 3, 0).reshape(C, H * W * B)
        if gathers(self.c_in, self.c_out):   # phase by phase, no col2im (npvae.convphases)
            return conv_transpose_phases(batch_last(x), self.params["W"], self.params["b"],
                                         self.stride, self.padding, (Ho, Wo)).transpose(3, 0, 1, 2)
        k, p = self.kernel, self.padding
        cols = parallel.matmul(self.params["W"].reshape(C, -1).T, self.x2, self.xp)
        # The batch-last forms of col2im and crop (module docstring), the bias added as
        # col2im starts each pixel's sum: the same entries within float32 rounding, faster.
        out = col2im_batch_last(cols.reshape(self.c_out, k, k, H, W, B),
                                (self.c_out, Ho + 2 * p, Wo + 2 * p, B), self.stride,
                                bias=self.params["b"])
        return crop_batch_last(out, p)  # (B, C_out, Ho, Wo) view of (C_out, Ho, Wo, B)

    def backward(self, dout, need_dx=True):
        """Fill ``grads`` from dout (B, C_out, Ho, Wo); return dx (B, C_in, H, W), or None.

        cols = im2col(dout padded by ``padding``); dW = x2 @ cols^T,
        db = sum of dout over (n, y, x'), dx = W2 @ cols: the forward of a
        convolution. Derivation: ``derivations.md#transposed-convolution``.
        """
        B, C, H, W = self.x_shape
        k = self.kernel
        cols = im2col_batch_last(batch_last(dout), k, self.stride, H, W, self.padding)
        cols = cols.reshape(self.c_out * k * k, H * W * B)
        products = [(*_product_t(self.x2, cols), None)]                 # dW^T = cols x2^T
        if need_dx:
            products.append((self.params["W"].reshape(C, -1), cols, None))  # dx = W2 cols
        # independent products: at once, across npvae's threads (npvae.parallel)
        products = parallel.matmuls(products, self.xp)
        self.grads["W"].reshape(C, -1)[...] = products[0].T
        _bias_gradient(dout.transpose(1, 2, 3, 0), self.grads["b"], self.xp)
        if not need_dx:
            return None
        return products[1].reshape(C, H, W, B).transpose(3, 0, 1, 2)

    def __repr__(self):
        return (f"ConvTranspose2D({self.c_in}, {self.c_out}, {self.kernel}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding})")


class Reshape:
    """Reshape each example: x (B, *in_shape) -> (B, *shape); no parameters.

    Sits between dense and spatial layers: ``Reshape((1, 28, 28))`` turns
    (B, 784) into images, ``Reshape((784,))`` flattens them back (C, H, W
    order, as ``torch.flatten``). Backward (``derivations.md#convolution``):
    dx = dout reshaped back to x's shape, since reshaping only renames entries.
    """

    def __init__(self, shape):
        self.shape = tuple(int(n) for n in shape)
        self.params = {}
        self.grads = {}

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, dout):
        return dout.reshape(self.x_shape)

    def __repr__(self):
        return f"Reshape({self.shape})"
