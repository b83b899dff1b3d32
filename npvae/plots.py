"""Figures of a trained VAE: reconstructions, samples, curves, latent space.

Each function draws one figure and writes it as a PNG to ``path``, returning
the path as a ``pathlib.Path``. Files are written atomically: the PNG goes to
a temporary file in the same folder, which then replaces ``path`` in one
step, so a reader never sees half a file and a failure leaves no debris.

Figures are ``matplotlib.figure.Figure`` objects drawn by the Agg canvas
directly: no ``pyplot``, no global figure state, and the user's chosen
matplotlib backend is left alone.

Images: the model's ``x_dim`` must be a square number D = side * side (784 =
28 * 28 for MNIST); each vector is shown as a side x side image. Decoded
values are decoder means (probabilities or Gaussian means), drawn on a
fixed grey scale from 0 (black) to 1 (white): Gaussian means outside [0, 1]
show as black or white.
"""

import math
from pathlib import Path
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .atomic import atomic_write, make_folder
from .backend import to_numpy
from .cvae import check_digit, is_conditional
from .errors import ConfigError
from .evaluate import encode_means
from .vqvae import is_vq

DPI = 100
"""Dots per inch of every saved figure: a figure of w x h inches is w*DPI x h*DPI pixels."""

MANIFOLD_REACH = 3.0
"""The manifold grid's smallest half-width in z: 3 prior standard deviations (99.7% of N(0, 1))."""


# ------------------------------------------------------------------ helpers


def _image_side(x_dim):
    """The side of a square image of x_dim pixels, or a ConfigError (a ValueError)."""
    side = math.isqrt(x_dim)
    if side * side != x_dim:
        raise ConfigError(f"x_dim={x_dim} is not a square number of pixels; "
                         "plots show each example as a side x side image (784 = 28 x 28)")
    return side


def _images(a, side):
    """Host images (N, side, side) from vectors (N, D) on any device."""
    return to_numpy(a).reshape(-1, side, side)


def _tile(images, rows, cols, pad=1):
    """One (rows*(side+pad)-pad, cols*(side+pad)-pad) canvas of images, row by row.

    Padding is 1 (white lines); empty cells past the last image stay white.
    """
    side = images.shape[1]
    step = side + pad
    canvas = np.ones((rows * step - pad, cols * step - pad))
    for i, image in enumerate(images[:rows * cols]):
        r, c = divmod(i, cols)
        canvas[r * step:r * step + side, c * step:c * step + side] = image
    return canvas


def _show(ax, canvas):
    # vmin, vmax: a fixed scale, so values beyond [0, 1] saturate instead of rescaling the rest
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _new_figure(width, height):
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Write ``fig`` as a PNG to ``path`` atomically; return ``Path(path)``."""
    path = Path(path)
    make_folder(path.parent)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    return path


def _device(model, a):
    """Host or device array ``a`` as the model's array of its dtype."""
    return model.xp.asarray(a, dtype=model.dtype)


def _labels(model, y, n):
    """The labels of a conditional model's n rows (y, or digits 0, 1, ..., C-1 in turn); else None.

    Labels for a model that is not conditional are a ConfigError.
    """
    if not is_conditional(model):
        check_digit(model, y, "digit")   # labels for a model without: a ConfigError
        return None
    y = np.arange(n) % model.n_classes if y is None else np.broadcast_to(to_numpy(y), (n,))
    return np.asarray(y, dtype=np.int64)


def _decode(model, z, y=None):
    """decode(z) for z (N, Z), with labels y (N,) or one label for a conditional model."""
    z = _device(model, z)
    labels = _labels(model, y, z.shape[0])
    return model.decode(z) if labels is None else model.decode(z, labels)


def _encode_mu(model, x, y=None):
    """mu(x) on the model's device for examples x (B, D) on the host or device."""
    x = model.check_input(model.xp.asarray(x))
    labels = None if y is None and not is_conditional(model) else _labels(model, y, x.shape[0])
    return (model.encode(x) if labels is None else model.encode(x, labels))[0]


# ------------------------------------------------------------------ figures


def plot_reconstructions(model, x, path, n=10, y=None):
    """The first ``n`` inputs of ``x`` (N, D) (top row) above their reconstructions.

    The reconstruction is decode(mu(x)): the decoder's mean at the encoder's
    mean, with no sampling of z, so it is the model's best guess of x. A
    conditional model uses the labels ``y`` (N,) in both (ignored otherwise).
    """
    side = _image_side(model.x_dim)
    x = x[:n]
    y = None if y is None or not is_conditional(model) else to_numpy(y)[:n]
    recon = _decode(model, _encode_mu(model, x, y), y)
    title = "Reconstructions: decode(mu(x)), the decoder mean at z = mu (no sampling)"
    canvas = _tile(np.concatenate([_images(x, side), _images(recon, side)]), 2, len(x))
    fig = _new_figure(max(4.0, 0.8 * len(x)), 2.4)
    ax = fig.add_axes([0.08, 0.02, 0.9, 0.8])
    _show(ax, canvas)
    ax.set_yticks([side / 2, side * 1.5 + 1], labels=["input", "recon"])
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_samples(model, path, rng, n=64, title=None, digit=None):
    """``n`` samples decode(z), z ~ N(0, I) from ``rng``, in a square-ish grid (8 x 8 for 64).

    Shown are the decoder means, not Bernoulli draws of pixels: the usual
    (and smoother) picture of what the model generates. ``title`` names the
    model, before the standard description. A conditional model draws
    ``digit`` (default: the digits in turn); asking a model that is not
    conditional for a digit is a ConfigError.
    """
    side = _image_side(model.x_dim)
    labels = _labels(model, digit, n)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    z = rng.standard_normal((n, model.latent))
    canvas = _tile(_images(_decode(model, z, labels), side), rows, cols)
    fig = _new_figure(6, 6)
    ax = fig.add_axes([0.02, 0.02, 0.96, 0.87 if title else 0.9])
    _show(ax, canvas)
    given = "" if labels is None else (" (digits in turn)" if digit is None else f", digit $y = {digit}$")
    what = (r"decoder mean of $p(x \mid z" + ("" if labels is None else ", y") +
            r")$, $z \sim \mathcal{N}(0, I)$" + given)
    ax.set_title(f"{title}\nsamples: {what}" if title else f"Samples: {what}", fontsize=10)
    return _save(fig, path)


def plot_digit_grid(model, path, rng, n=10):
    """A conditional model's samples, one row per digit: decode(z, y) for ``n`` z ~ N(0, I) a row.

    The same ``n`` draws of z in every row (column j uses z_j), so a column
    shows one latent "style" written as each digit.
    """
    side = _image_side(model.x_dim)
    if not is_conditional(model):
        raise ConfigError("plot_digit_grid needs a conditional model")
    C = model.n_classes
    z = np.tile(rng.standard_normal((n, model.latent)), (C, 1))
    images = _images(_decode(model, z, np.repeat(np.arange(C), n)), side)
    fig = _new_figure(0.6 * n + 0.6, 0.6 * C + 0.5)
    ax = fig.add_axes([0.08, 0.02, 0.9, 0.9])
    _show(ax, _tile(images, C, n))
    ax.set_yticks([r * (side + 1) + side / 2 for r in range(C)], labels=[str(r) for r in range(C)])
    ax.set_ylabel("label y")
    ax.set_title("Digits on demand: decode(z, y), one row per y, one z per column", fontsize=9)
    return _save(fig, path)


def plot_analogies(model, x, y, path, n=6):
    """Style analogies: each of ``n`` test digits, then decode(mu(x, y), y') for every label y'.

    The encoder sees the digit and its true label; its mean z keeps what the
    label does not say (slant, thickness, style), and the decoder writes that
    style as each of the ten digits.
    """
    if not is_conditional(model):
        raise ConfigError("plot_analogies needs a conditional model")
    side = _image_side(model.x_dim)
    C = model.n_classes
    x, y = to_numpy(x)[:n], to_numpy(y)[:n]
    mu = to_numpy(_encode_mu(model, x, y))
    decoded = _images(_decode(model, np.repeat(mu, C, axis=0), np.tile(np.arange(C), len(x))), side)
    rows = [np.concatenate([_images(x[i:i + 1], side), decoded[i * C:(i + 1) * C]])
            for i in range(len(x))]
    fig = _new_figure(0.6 * (C + 1) + 0.4, 0.6 * len(x) + 0.7)
    ax = fig.add_axes([0.02, 0.02, 0.96, 0.8])
    _show(ax, _tile(np.concatenate(rows), len(x), C + 1))
    ax.set_xticks([c * (side + 1) + side / 2 for c in range(C + 1)],
                  labels=["input", *(str(c) for c in range(C))], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_title("Analogies: encode a test digit, decode its z with each label y", fontsize=9,
                 pad=18)
    return _save(fig, path)


CURVES = (("loss", "loss (the negative ELBO when beta = 1)"), ("recon", r"reconstruction $-\log p(x \mid z)$"),
          ("kl", r"$\mathrm{KL}(q(z \mid x)\,\Vert\,p(z))$"))
VQ_CURVES = (("loss", "loss: recon + commitment (+ codebook, unless EMA)"),
             ("recon", r"reconstruction $-\log p(x \mid z_q)$"),
             ("perplexity", "code perplexity (exp of the codes' entropy)"))
SPLITS = (("train", "-", "train (mean over the epoch's batches)"), ("test", "--", "test (the model at the epoch's end)"))


def plot_curves(metrics, path, curves=CURVES):
    """Training curves: loss, reconstruction and KL, train vs test, against epoch.

    The train value of an epoch is the mean over its batches, while the
    weights were still changing; the test value is the model at the epoch's
    end (the legends say so). The KL panel's axis starts at 0, so that its
    changes are read against its size.

    ``metrics`` is a list of per-epoch dicts with keys ``epoch``,
    ``train_loss``, ``test_loss``, ``train_recon``, ``test_recon``,
    ``train_kl``, ``test_kl``; missing keys (or None values) are skipped, so
    runs without a test set plot the train curves alone. Nats per example.
    """
    metrics = list(metrics)
    if not metrics:
        raise ConfigError("plot_curves needs at least one epoch of metrics")
    epochs = np.array([m.get("epoch", i + 1) for i, m in enumerate(metrics)], dtype=float)
    fig = _new_figure(12, 3.6)
    axes = fig.subplots(1, 3)
    for ax, (term, title) in zip(axes, curves):
        for split, style, label in SPLITS:
            values = np.array([np.nan if m.get(f"{split}_{term}") is None else m[f"{split}_{term}"]
                               for m in metrics], dtype=float)
            if np.isfinite(values).any():
                ax.plot(epochs, values, style, marker="o", markersize=3, label=label)
        if term in ("kl", "perplexity") and ax.has_data():
            ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("effective number of codes" if term == "perplexity" else "nats per example")
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.15, top=0.9, wspace=0.3)
    return _save(fig, path)


class LatentPlane(NamedTuple):
    """A plane through latent space: the point ``centre + a basis[0] + b basis[1]`` is (a, b)."""

    centre: np.ndarray          # (Z,)
    basis: np.ndarray           # (2, Z), orthonormal rows
    name: str                   # what the plane is, for a figure's title
    labels: tuple               # the two axes' labels

    def project(self, z):
        """Points z (N, Z) to their coordinates (a, b) on the plane: (N, 2)."""
        return (np.asarray(z, dtype=np.float64) - self.centre) @ self.basis.T


def latent_plane(mu, y=None):
    """The plane on which npvae draws encoder means ``mu`` (N, Z), Z >= 2, with labels ``y`` (N,).

    One plane for ``latents.png`` (``plot_latents``) and the explorer
    (``npvae explore``), named on both. Z == 2: the latent space itself, axes
    z_1 and z_2 (latent dimensions are numbered from 1 everywhere). Z > 2: the
    plane in which the digit classes' average codes lie farthest apart (the
    first two principal directions of the class centres, through their mean),
    which shows which digits the code keeps apart and which it mixes; without
    labels, or with fewer than 3 classes, the first two principal directions
    of the means themselves. Each axis label says how much of the means'
    variance its direction shows.
    """
    mu = np.asarray(mu, dtype=np.float64)
    Z = mu.shape[1]
    if Z == 2:
        return LatentPlane(np.zeros(2), np.eye(2), "the latent space ($z_1$, $z_2$)",
                           ("$z_1$ (encoder mean)", "$z_2$ (encoder mean)"))
    classes = [] if y is None else np.unique(y)
    points = np.stack([mu[y == c].mean(axis=0) for c in classes]) if len(classes) >= 3 else mu
    centre = points.mean(axis=0)
    # A single point spreads in no direction: the full SVD still gives two orthonormal rows.
    _, _, vt = np.linalg.svd(points - centre, full_matrices=len(points) < 2)
    coords = (mu - centre) @ vt[:2].T
    centred = mu - mu.mean(axis=0)
    share = (coords - coords.mean(axis=0)).var(axis=0) * len(mu) / max((centred**2).sum(),
                                                                      np.finfo(float).tiny)
    what = "the class centres" if points is not mu else "the encoder means"
    labels = tuple(f"direction {i + 1} of {what} ({share[i]:.0%} of the means' variance)"
                   for i in range(coords.shape[1]))
    return LatentPlane(centre, vt[:2], f"the plane of {what} ({Z}-d latent)", labels)


def plot_latents(model, x, y, path, batch_size=1000):
    """Encoder means of ``x`` (N, D) as points coloured by label ``y`` (N,).

    The two latent dimensions if latent == 2. For more, a linear projection
    can only show a shadow of the code: this one is the plane in which the
    ten digits' average codes are farthest apart (``latent_plane``), so that
    what the learner should see is which digits the code keeps apart and
    which it mixes (4 and 9, 3, 5 and 8 usually overlap), not separate
    clusters. latent == 1 puts the mean against the label. The axis labels
    say which projection and how much of the means' variance each direction
    shows. Colours: the 10-class ``tab10`` colour map.
    """
    mu = encode_means(model, x, batch_size, y if is_conditional(model) else None
                      ).astype(np.float64)
    y = np.asarray(to_numpy(y)).reshape(-1)
    if len(y) != len(mu):
        raise ConfigError(f"x has {len(mu)} examples but y has {len(y)} labels")
    fig = _new_figure(7, 6)
    ax = fig.add_subplot()
    if model.latent == 1:
        coords = np.stack([mu[:, 0], y], axis=1)
        labels = ("$z_1$ (encoder mean)", "label")
        title = f"Encoder means of {len(mu)} test digits (1-d latent) by label"
    else:
        plane = latent_plane(mu, y)
        coords, labels = plane.project(mu), plane.labels
        title = f"Encoder means of {len(mu)} test digits on {plane.name}"
    norm = BoundaryNorm(np.arange(-0.5, 10.5), 10)
    points = ax.scatter(coords[:, 0], coords[:, 1], c=y, cmap="tab10", norm=norm, s=4, alpha=0.7)
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def manifold_reach(mu=None):
    """Half-width r of the manifold grid: z from -r to r on each axis.

    At least ``MANIFOLD_REACH`` (3 prior standard deviations); with encoder
    means ``mu`` (N, 2), wide enough for 99% of their coordinates, rounded
    up to a multiple of 0.5, so that the grid covers the latent scatter.
    """
    if mu is None or len(mu) == 0:
        return MANIFOLD_REACH
    return max(MANIFOLD_REACH, math.ceil(2 * float(np.quantile(np.abs(mu), 0.99))) / 2)


def plot_manifold(model, path, n=20, x=None):
    """The decoded 2-D latent space: an n x n grid of decode(z), for latent == 2 only.

    z runs over n evenly spaced values from -r to r on each axis, r from
    ``manifold_reach``: 3 prior standard deviations, or, given test digits
    ``x`` (N, D), as far as 99% of their encoder means reach, so that the
    grid covers the scatter of ``plot_latents``. z_1 grows left to right,
    z_2 bottom to top; the title says how much of the prior the range holds.
    """
    if model.latent != 2:
        raise ConfigError(f"plot_manifold needs a 2-d latent space; this model has latent={model.latent} "
                         "(use plot_latents, which projects any latent size to 2-d)")
    side = _image_side(model.x_dim)
    reach = manifold_reach(None if x is None else encode_means(model, x).astype(np.float64))
    values = np.linspace(-reach, reach, n)
    z1, z2 = np.meshgrid(values, values[::-1])  # row 0 at the top holds the largest z_2
    z = np.stack([z1.ravel(), z2.ravel()], axis=1)
    canvas = _tile(_images(_decode(model, z), side), n, n)
    fig = _new_figure(7, 7.3)
    ax = fig.add_axes([0.1, 0.08, 0.88, 0.86])
    _show(ax, canvas)
    # Ticks at whole z values: column i is centred at i * step + side / 2 and shows
    # z = -reach + i * 2 reach / (n - 1), so z lies at a pixel found by the same line.
    step = side + 1
    spacing = 1 if reach <= 5 else 2
    ticks = np.arange(-math.floor(reach / spacing), math.floor(reach / spacing) + 1) * spacing
    at = side / 2 + (ticks + reach) / (2 * reach) * (n - 1) * step if n > 1 else np.full(len(ticks), side / 2)
    ax.set_xticks(at, labels=[f"{t:g}" for t in ticks])
    ax.set_yticks(at, labels=[f"{t:g}" for t in ticks[::-1]])
    ax.set_xlabel(f"$z_1$: {n} values evenly spaced from {-reach:g} to {reach:g}")
    ax.set_ylabel("$z_2$")
    mass = 2 * NormalDist().cdf(reach) - 1
    ax.set_title(f"Latent manifold: decoder means on a grid of z; $|z_i| \\leq {reach:g}$ holds "
                 f"{mass:.2%} of the prior per axis", fontsize=10)
    return _save(fig, path)


def plot_interpolation(model, x_a, x_b, path, steps=10):
    """Decode z = (1 - t) mu(x_a) + t mu(x_b) for ``steps`` t from 0 to 1.

    The row is: input x_a, the decoded steps, input x_b. ``x_a``, ``x_b``:
    (D,) or (1, D).
    """
    side = _image_side(model.x_dim)
    ends = np.concatenate([np.reshape(to_numpy(x_a), (1, -1)), np.reshape(to_numpy(x_b), (1, -1))])
    mu = to_numpy(_encode_mu(model, ends.astype(model.dtype))).astype(np.float64)
    t = np.linspace(0, 1, steps)[:, None]
    decoded = _images(_decode(model, (1 - t) * mu[0] + t * mu[1]), side)
    row = np.concatenate([_images(ends[:1], side), decoded, _images(ends[1:], side)])
    fig = _new_figure(max(5.0, 0.75 * len(row)), 1.9)
    ax = fig.add_axes([0.02, 0.2, 0.96, 0.6])
    _show(ax, _tile(row, 1, len(row)))
    labels = ["x_a", *(f"{v:.2f}" for v in t[:, 0]), "x_b"]
    ax.set_xticks([i * (side + 1) + side / 2 for i in range(len(row))], labels=labels, fontsize=7)
    ax.set_title("Interpolation: decode((1 - t) mu(x_a) + t mu(x_b)), t below", fontsize=9)
    return _save(fig, path)


def _interpolation_pair(x, y):
    """Indices of two examples of different labels (the first, and the next that differs)."""
    y = np.asarray(to_numpy(y)).reshape(-1)
    different = np.flatnonzero(y != y[0])
    return 0, int(different[0]) if len(different) else min(1, len(x) - 1)


def save_epoch_figures(model, run_dir, epoch, x_test, y_test, rng):
    """The figures of one epoch (from 0) of a run: ``run_dir/figures/`` holds
    ``reconstructions_epochNNN.png`` and ``samples_epochNNN.png`` (NNN = epoch + 1; a VQ-VAE's
    reconstructions only)."""
    folder = Path(run_dir) / "figures"
    make_folder(folder)
    name = f"reconstructions_epoch{epoch + 1:03d}.png"
    if is_vq(model.config):   # (a VQ-VAE samples through its learned prior: npvae.vqplots)
        from .vqplots import plot_vq_reconstructions

        return [plot_vq_reconstructions(model, x_test, folder / name)]
    return [plot_reconstructions(model, x_test, folder / name, y=y_test),
            plot_samples(model, folder / f"samples_epoch{epoch + 1:03d}.png", rng)]


def written(paths, folder):
    """The line that says which figures were written where: ``figures written to DIR: a.png, b.png``."""
    return f"figures written to {folder}: {', '.join(Path(p).name for p in paths)}"


def save_all_figures(model, run_dir, x_test, y_test, metrics, rng):
    """Write every figure for a run into ``run_dir``; return the list of paths.

    reconstructions.png, samples.png, curves.png (if ``metrics``),
    latents.png, manifold.png (only if latent == 2) and interpolation.png
    (two test digits of different classes); for a conditional model,
    digits.png (a row per digit) and analogies.png in place of the last two;
    for a VQ-VAE, ``npvae.vqplots.save_vq_figures``' (samples.png once its
    prior is trained). ``rng`` draws the samples.
    """
    _image_side(model.x_dim)  # refuse before writing anything
    run_dir = Path(run_dir)
    make_folder(run_dir)
    if is_vq(model.config):   # its own figures, samples from its prior (npvae.vqplots)
        from .vqplots import save_vq_figures

        return save_vq_figures(model, run_dir, x_test, rng, metrics)
    paths = [plot_reconstructions(model, x_test, run_dir / "reconstructions.png", y=y_test),
             plot_samples(model, run_dir / "samples.png", rng)]
    if metrics:
        paths.append(plot_curves(metrics, run_dir / "curves.png"))
    paths.append(plot_latents(model, x_test, y_test, run_dir / "latents.png"))
    if is_conditional(model):  # digits on demand instead of the unconditional manifold
        paths.append(plot_digit_grid(model, run_dir / "digits.png", rng))
        paths.append(plot_analogies(model, x_test, y_test, run_dir / "analogies.png"))
        return paths
    if model.latent == 2:
        paths.append(plot_manifold(model, run_dir / "manifold.png", x=x_test))
    a, b = _interpolation_pair(x_test, y_test)
    paths.append(plot_interpolation(model, x_test[a], x_test[b], run_dir / "interpolation.png"))
    return paths
