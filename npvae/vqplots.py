"""Figures of a VQ-VAE run: samples from its prior, reconstructions, codebook usage, codes in context.

Each function draws one figure and writes it as a PNG to ``path`` (atomically,
with ``npvae.plots``' helpers: no ``pyplot``, a fixed grey scale from 0 to 1)
and returns the path. The images are decoder means (pixel probabilities).

- ``plot_prior_samples``: code grids c ~ p(c) from the learned prior
  (``npvae.prior``), decoded;
- ``plot_vq_reconstructions``: test digits, their code grids, decode(encode(x));
- ``plot_codebook_usage``: how often each code is chosen over the test set,
  with the usage's perplexity and the dead codes;
- ``plot_codes_in_context``: one test digit's code grid with one position set
  to each code in turn, decoded: what each code draws at that place.

``save_vq_figures`` writes them all into a run folder, with the training
curves (``npvae.plots.plot_curves`` of ``plots.VQ_CURVES``); ``npvae plot``
and the end of ``npvae train`` call it (through ``plots.save_all_figures``).
"""

import math
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .plots import (VQ_CURVES, _image_side, _images, _new_figure, _save, _show, _tile,
                    plot_curves)
from .prior import dataset_codes, run_prior, sample_images
from .vq import dead_codes, perplexity


def _decode(model, codes):
    """decode(codes) on the host: (B, rows, cols) -> (B, D)."""
    return to_numpy(model.decode(model.xp.asarray(codes)))


def plot_prior_samples(model, prior, path, rng, n=64):
    """``n`` samples, in a square-ish grid: c ~ p(c) from ``prior`` (``rng``), then decode(c)."""
    side = _image_side(model.x_dim)
    cols = math.ceil(math.sqrt(n))
    _, images = sample_images(model, prior, n, rng)
    fig = _new_figure(6, 6)
    ax = fig.add_axes([0.02, 0.02, 0.96, 0.87])
    _show(ax, _tile(_images(images, side), math.ceil(n / cols), cols))
    rows, grid_cols = model.grid
    ax.set_title(f"Samples: a {rows}x{grid_cols} code grid $c \\sim p(c)$ drawn from the learned "
                 f"prior\n(MADE, one code at a time in raster order), decoded: decoder mean of "
                 r"$p(x \mid z_q = E[c])$", fontsize=9)
    return _save(fig, path)


def _code_image(codes, n_codes, side):
    """A code grid (rows, cols) as a side x side image: each code a grey level, code / (N - 1)."""
    rows, cols = codes.shape
    cell = side // rows
    image = np.kron(codes / max(n_codes - 1, 1), np.ones((cell, side // cols)))
    out = np.ones((side, side))
    out[:image.shape[0], :image.shape[1]] = image
    return out


def plot_vq_reconstructions(model, x, path, n=10):
    """The first ``n`` test digits of ``x`` (N, D) (top), their code grids (middle: each code
    a grey level) and decode(encode(x)) (bottom): all the decoder knows of x is the grid."""
    side = _image_side(model.x_dim)
    x = to_numpy(x)[:n]
    codes = dataset_codes(model, x).reshape(len(x), *model.grid)
    grids = np.stack([_code_image(c, model.config["n_codes"], side) for c in codes])
    canvas = _tile(np.concatenate([_images(x, side), grids, _images(_decode(model, codes), side)]),
                   3, len(x))
    fig = _new_figure(max(4.0, 0.8 * len(x)), 3.2)
    ax = fig.add_axes([0.1, 0.02, 0.88, 0.78])
    _show(ax, canvas)
    ax.set_yticks([side / 2 + r * (side + 1) for r in range(3)],
                  labels=["input", "codes", "recon"])
    rows, cols = model.grid
    ax.set_title(f"Reconstructions: each digit becomes a {rows}x{cols} grid of code numbers "
                 f"(shown as greys, code / {model.config['n_codes'] - 1}),\nand the decoder "
                 "draws decode(E[codes]) from the grid alone", fontsize=9)
    return _save(fig, path)


def codebook_usage(model, x):
    """How many of the positions of the digits ``x`` (N, D) take each code: (N_codes,) ints."""
    codes = dataset_codes(model, x)
    return np.bincount(codes.reshape(-1), minlength=model.config["n_codes"])


def plot_codebook_usage(counts, path, n_digits):
    """How often each code is the nearest: ``counts`` (N,) over every position of ``n_digits``
    test digits (``codebook_usage``), as the share of the positions.

    The title gives the usage's perplexity, exp(entropy), from 1 (one code
    used) to N (all used equally), and the dead codes (never chosen), marked
    in red on the axis.
    """
    K = len(counts)
    dead = dead_codes(counts)
    fig = _new_figure(10, 3.6)
    ax = fig.add_axes([0.07, 0.14, 0.91, 0.72])
    ax.bar(np.arange(K), counts / counts.sum(), width=0.8, color="tab:blue")
    ax.plot(dead, np.zeros(len(dead)), "x", color="tab:red", markersize=6, clip_on=False,
            label=f"dead codes ({len(dead)})")
    ax.set_xlim(-1, K)
    ax.set_xlabel("code")
    ax.set_ylabel("share of the positions")
    if len(dead):
        ax.legend(fontsize=8)
    ax.set_title(f"Codebook usage over {n_digits} test digits x {counts.sum() // n_digits} "
                 "positions: "
                 f"perplexity {perplexity(counts):.1f} of {K} codes, {len(dead)} dead "
                 f"(never the nearest)", fontsize=10)
    return _save(fig, path)


def inkiest_position(model, x):
    """The position (row, col) of the code grid whose patch of image ``x`` (D,) holds the most
    ink: a place on the digit's stroke, where changing the code shows."""
    side = _image_side(model.x_dim)
    rows, cols = model.grid
    image = np.asarray(to_numpy(x), dtype=np.float64).reshape(side, side)
    ink = image[:rows * (side // rows), :cols * (side // cols)].reshape(
        rows, side // rows, cols, side // cols).sum(axis=(1, 3))
    return np.unravel_index(int(ink.argmax()), ink.shape)


def codes_in_context(model, x, position):
    """The code grid of image ``x`` (1, D) and N copies of it, copy v with ``position``
    (row, col) set to code v: ``(own (rows, cols), grids (N, rows, cols))``."""
    own = dataset_codes(model, x).reshape(model.grid)
    grids = np.repeat(own[None], model.config["n_codes"], axis=0)
    grids[:, position[0], position[1]] = np.arange(model.config["n_codes"])
    return own, grids


def plot_codes_in_context(model, x, path, position=None, counts=None):
    """What each code means in context: the code grid of the test digit ``x`` (D,) with one
    position set to code 0, 1, ..., N - 1 in turn, each grid decoded.

    ``position`` (row, col) defaults to ``inkiest_position``, a place on the
    stroke. The first image is the digit, the second its reconstruction, then
    one image per code, numbered (* on the digit's own code there), each with
    a red square around the position's patch of pixels. Every code is
    decoded, used or dead: given the codebook's usage ``counts`` (N,), the
    numbers of the dead codes (count 0) are grey.
    """
    side = _image_side(model.x_dim)
    rows, cols = model.grid
    K = model.config["n_codes"]
    x = np.asarray(to_numpy(x)).reshape(1, -1)
    r, c = inkiest_position(model, x[0]) if position is None else position
    own, grids = codes_in_context(model, x, (r, c))
    images = np.concatenate([_images(x, side), _images(_decode(model, own[None]), side),
                             _images(_decode(model, grids), side)])
    ncols = math.ceil(math.sqrt(len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig = _new_figure(1.1 * ncols + 0.4, 1.1 * nrows + 1.0)
    ax = fig.add_axes([0.02, 0.02, 0.96, 1 - 0.9 / (1.1 * nrows + 1.0)])
    _show(ax, _tile(images, nrows, ncols))
    cell, step = side // rows, side + 1
    for i in range(len(images)):
        top, left = divmod(i, ncols)
        label = ("input" if i == 0 else "recon" if i == 1 else
                 f"{i - 2}" + ("*" if i - 2 == own[r, c] else ""))
        dead = counts is not None and i >= 2 and counts[i - 2] == 0
        ax.text(left * step + 1, top * step + 1, label, color="grey" if dead else "tab:orange",
                fontsize=8, va="top", ha="left")
        ax.add_patch(_square(left * step + c * cell - 0.5, top * step + r * cell - 0.5, cell))
    ax.set_title(f"What each code draws in context: the input's {rows}x{cols} code grid with "
                 f"position (row {r + 1}, col {c + 1}) (red square)\nset to code 0, 1, ..., "
                 f"{K - 1} in turn and decoded; * marks the input's own code there"
                 + ("; grey numbers: dead codes" if counts is not None else ""), fontsize=10)
    return _save(fig, path)


def _square(x, y, size):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), size, size, fill=False, edgecolor="tab:red", linewidth=0.8)


VQ_FIGURES = ("reconstructions.png", "samples.png", "curves.png", "codebook_usage.png",
              "codes_in_context.png")
"""The figures ``save_vq_figures`` writes into a run folder (samples.png only with a prior,
curves.png only with metrics)."""


def save_vq_figures(model, run_dir, x_test, rng, metrics=None):
    """Every figure of a VQ-VAE run into ``run_dir``; returns the paths written.

    samples.png only once the run has its learned prior (``RUN/prior.npz``,
    ``npvae.prior.run_prior``: a prior that is not this VQ-VAE's is an
    error), curves.png only with ``metrics`` (the run's per-epoch rows). The
    codes in context are those of the first test digit. ``rng`` draws the
    samples.
    """
    run_dir = Path(run_dir)
    reconstructions, samples, curves, usage, context = (run_dir / name for name in VQ_FIGURES)
    prior = run_prior(run_dir, model)
    paths = [plot_vq_reconstructions(model, x_test, reconstructions)]
    if prior is not None:
        paths.append(plot_prior_samples(model, prior, samples, rng))
    if metrics:
        paths.append(plot_curves(metrics, curves, VQ_CURVES))
    counts = codebook_usage(model, x_test)
    paths.append(plot_codebook_usage(counts, usage, len(x_test)))
    paths.append(plot_codes_in_context(model, x_test[0], context, counts=counts))
    return paths
