"""A transposed convolution's forward as a gather, phase by phase, in place of col2im's scatter.

``ConvTranspose2D`` (``npvae.conv``) computes cols = W2^T x2, one column of
C_out k k values per input pixel, and col2im adds each column onto the k x k
window of output pixels it belongs to: out[s i + t - p] += ... for input
pixel i and kernel offset t (stride s, padding p; in each direction).
Turned around, an output pixel o = s m + r, whose *phase* is r = o mod s,
gets terms only from the offsets t with t = r + p (mod s), each from the
input pixel i = m + d_t with d_t = (r + p - t) / s. So the s x s phases of
the output are s^2 ordinary matrix products, with nothing to add up after:

    out[:, r::s, q::s] = W_rq @ X_rq + b                (C_out, M_r M_q B)

- W_rq (C_out, n_rq C_in): W[:, :, t, u]^T for the n_rq offsets (t, u) of
  phase (r, q), side by side;
- X_rq (n_rq C_in, M_r M_q B): for each of those offsets, x shifted by
  (d_t, d_u), zeros where the shift leaves the input;
- M_r: the output rows of phase r, len(range(r, Ho, s)) (columns alike).

Every output entry is the same sum of products as col2im's, in another
order: equal within float32 rounding (``tests/test_convphases.py``, against
col2im in float64 and float32, for strides, paddings and kernels of every
kind, including phases no offset reaches, which hold the bias only).

Which is faster depends on the channels. col2im reads k^2 C_out values per
input pixel, and its product's inner dimension is C_in; the phases copy
about k^2 C_in values per input pixel into their X_rq, and their products'
inner dimensions are n_rq C_in. With C_in < C_out the phases move less
memory and feed BLAS larger inner dimensions; the other way round, col2im
wins. ``ConvTranspose2D`` chooses by that rule (``gathers``), measured by
``python benchmarks/conv_transpose_forms.py`` (``benchmarks/README.md``).

Each phase is computed whole, its copies and its product for the whole
batch; with several threads (``npvae.parallel``) the phases are shared out,
in groups of about equal work (the s^2 phases are as many parts as there
can be). A phase is the same computation on whichever thread, so the
results are the same bits with any number of threads.
"""

import numpy as np

from . import parallel
from .backend import xp_of

def gathers(c_in, c_out):
    """Whether a transposed convolution from ``c_in`` to ``c_out`` channels takes the phase
    form (see the module docstring): when it has fewer input channels than output."""
    return c_in < c_out


def phase_offsets(size, out, kernel, stride, padding):
    """For each phase r in range(stride): (M_r, [(t, d_t), ...]) along one axis of an input
    of ``size`` pixels and an output of ``out``: the output pixels s m + r of that phase,
    and the kernel offsets t that reach them, each from input pixel m + d_t."""
    phases = []
    for r in range(stride):
        offsets = [(t, (r + padding - t) // stride) for t in range(kernel)
                   if (r + padding - t) % stride == 0]
        phases.append((len(range(r, out, stride)), offsets))
    return phases


def conv_transpose_phases(x, W, b, stride, padding, out_shape):
    """out (C_out, Ho, Wo, B) = the transposed convolution of x (C_in, H, W, B), both batch
    last, with W (C_in, C_out, k, k) and b (C_out,), phase by phase (module docstring).

    ``out_shape`` (Ho, Wo) is the output after the crop of ``padding``, with any
    output padding. The same values as ``ConvTranspose2D``'s col2im form within
    float32 rounding.
    """
    xp = xp_of(x)
    C_in, H, Wd, B = x.shape
    C_out, k = W.shape[1], W.shape[2]
    rows = phase_offsets(H, out_shape[0], k, stride, padding)
    cols = phase_offsets(Wd, out_shape[1], k, stride, padding)
    out = xp.empty((C_out, *out_shape, B), dtype=x.dtype)
    phases = [(r, q, M_r, M_q, [(t, u, dy, dx) for t, dy in taps_r for u, dx in taps_q])
              for r, (M_r, taps_r) in enumerate(rows) for q, (M_q, taps_q) in enumerate(cols)]
    weights = [xp.concatenate([W[:, :, t, u].T for t, u, _, _ in taps], axis=1) if taps else None
               for *_, taps in phases]
    bias = b.reshape(-1, 1, 1, 1)

    def phase(i):  # out[:, r::s, q::s] of phase i, whole
        (r, q, M_r, M_q, taps), W_rq = phases[i], weights[i]
        target = out[:, r::stride, q::stride]
        if not taps:                        # no offset reaches this phase: the bias alone
            target[...] = bias
            return
        X = xp.empty((len(taps), C_in, M_r, M_q, B), dtype=x.dtype)
        for X_t, (_, _, dy, dx) in zip(X, taps):
            _shifted(X_t, x, dy, dx)
        product = xp.matmul(W_rq, X.reshape(len(taps) * C_in, -1))
        xp.add(product.reshape(C_out, M_r, M_q, B), bias, out=target)

    work = [2 * C_out * C_in * len(taps) * M_r * M_q * B for *_, M_r, M_q, taps in phases]
    groups = _shares(work, parallel.product_parts(sum(work), xp))
    parallel.run(lambda first, last: [phase(i) for g in groups[first:last] for i in g],
                 parallel.split(len(groups)))
    return out


def _shares(work, parts):
    """The indices of ``work`` in ``parts`` groups of about equal sums: each, largest first,
    to the group with the least so far."""
    groups = [[] for _ in range(max(1, min(parts, len(work))))]
    sums = [0] * len(groups)
    for i in sorted(range(len(work)), key=lambda i: -work[i]):
        g = min(range(len(groups)), key=lambda g: sums[g])
        groups[g].append(i)
        sums[g] += work[i]
    return groups


def _shifted(dst, x, dy, dx):
    """dst (C, M, N, B)[:, m, n] = x (C, H, W, B)[:, m + dy, n + dx], zeros where that pixel
    lies outside x."""
    M, N = dst.shape[1:3]
    y0, y1 = min(M, max(0, -dy)), max(0, min(M, x.shape[1] - dy))
    x0, x1 = min(N, max(0, -dx)), max(0, min(N, x.shape[2] - dx))
    y1, x1 = max(y0, y1), max(x0, x1)
    dst[:, y0:y1, x0:x1] = x[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    for zeros in (dst[:, :y0], dst[:, y1:], dst[:, y0:y1, :x0], dst[:, y0:y1, x1:]):
        zeros[...] = 0
