"""Tests for npvae.plots: every figure is a real PNG, written atomically.

Tiny models on 4 x 4 "images" (x_dim 16) keep each figure fast; the PNGs are
read back with matplotlib to check their size and that they are not blank.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

from npvae import VAE
from npvae import plots
from npvae.errors import ConfigError
from npvae.plots import (
    DPI,
    manifold_reach,
    plot_curves,
    plot_interpolation,
    plot_latents,
    plot_manifold,
    plot_reconstructions,
    plot_samples,
    save_all_figures,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def model_of(latent=2, x_dim=16, **kw):
    return VAE(x_dim, (8,), latent, dtype="float64", seed=0, **kw)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.random((60, 16)), rng.integers(0, 10, 60)


METRICS = [dict(epoch=e, train_loss=20 - e, test_loss=21 - e, train_recon=15 - e,
                test_recon=16 - e, train_kl=5 + 0.1 * e, test_kl=5 + 0.2 * e) for e in (1, 2, 3)]


def read_png(path, size=None):
    """The image at ``path`` after checking it is a non-blank PNG (of ``size`` inches)."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] >= 100 and image.shape[1] >= 100
    assert image[..., :3].std() > 0.01                     # not a blank canvas
    if size is not None:
        assert image.shape[:2] == (round(size[1] * DPI), round(size[0] * DPI))
    return image


def only_files(folder):
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------ each figure


def test_reconstructions(tmp_path, data):
    x, _ = data
    path = plot_reconstructions(model_of(), x, tmp_path / "r.png", n=6)
    assert path == tmp_path / "r.png"
    read_png(path, size=(4.8, 2.4))


def test_samples_grid(tmp_path):
    path = plot_samples(model_of(latent=3), tmp_path / "s.png", np.random.default_rng(0))
    read_png(path, size=(6, 6))


def test_samples_carry_the_models_name_in_their_title(tmp_path, monkeypatch):
    figures = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or real_save(fig, path))
    plot_samples(model_of(), tmp_path / "a.png", np.random.default_rng(0), n=4,
                 title="(c) Pixel-mean MSE next to a summed KL")  # tutorial 11's longest
    plot_samples(model_of(), tmp_path / "b.png", np.random.default_rng(0), n=4)
    titles = [fig.axes[0].get_title() for fig in figures]
    assert titles[0].startswith("(c) Pixel-mean MSE next to a summed KL\nsamples: ") and titles[1].startswith("Samples: ")
    for fig in figures:  # the title fits in the figure
        box = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


def test_curves_with_and_without_test_keys(tmp_path):
    read_png(plot_curves(METRICS, tmp_path / "c.png"), size=(12, 3.6))
    train_only = [{k: v for k, v in m.items() if not k.startswith("test")} for m in METRICS]
    train_only[1]["train_kl"] = None
    read_png(plot_curves(train_only, tmp_path / "c2.png"))
    with pytest.raises(ConfigError):
        plot_curves([], tmp_path / "c3.png")


def test_curves_say_how_train_and_test_are_measured_and_start_the_kl_at_zero(tmp_path, monkeypatch):
    figures = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or real_save(fig, path))
    plot_curves(METRICS, tmp_path / "c.png")
    loss_ax, recon_ax, kl_ax = figures[0].axes
    assert kl_ax.get_ylim()[0] == 0  # METRICS' KL lies between 5.1 and 5.6
    assert loss_ax.get_ylim()[0] > 0  # the others keep their own range
    legend = [t.get_text() for t in kl_ax.get_legend().get_texts()]
    assert "mean over the epoch" in legend[0] and "epoch's end" in legend[1]


@pytest.mark.parametrize("latent", [1, 2, 5])
def test_latents(tmp_path, data, latent):
    x, y = data
    read_png(plot_latents(model_of(latent=latent), x, y, tmp_path / "l.png"), size=(7, 6))


def test_latents_axis_labels_say_which_projection():
    mu = np.random.default_rng(0).standard_normal((50, 2))
    plane = plots.latent_plane(mu)
    coords, labels = plane.project(mu), plane.labels
    assert np.array_equal(coords, mu) and "z_1" in labels[0] and "z_1" in plane.name
    mu5 = np.random.default_rng(0).standard_normal((50, 5)) * [5, 1, 0.1, 0.1, 0.1]
    plane = plots.latent_plane(mu5)  # no labels: the principal components of the means
    coords, labels = plane.project(mu5), plane.labels
    assert coords.shape == (50, 2) and "direction 1" in labels[0] and "encoder means" in labels[0]
    # the first component carries most of the variance and the projection keeps it
    assert coords[:, 0].var() == pytest.approx(np.linalg.svd(mu5 - mu5.mean(0))[1][0] ** 2 / 50)


def test_latents_of_many_dimensions_use_the_plane_of_the_class_centres():
    # Three classes apart along dimensions 3 and 4 only; dimensions 0 and 1 carry large
    # label-free noise, which the means' own principal components would show instead.
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 200)
    centres = np.zeros((3, 6))
    centres[:, 3:5] = [[0, 0], [2, 0], [0, 2]]
    mu = centres[y] + rng.standard_normal((600, 6)) * [4, 4, 0.1, 0.1, 0.1, 0.1]
    plane = plots.latent_plane(mu, y)
    coords, labels = plane.project(mu), plane.labels
    assert "class centres" in labels[0] and "class centres" in plane.name
    class_means = np.stack([coords[y == c].mean(axis=0) for c in range(3)])
    spread = np.linalg.norm(class_means - class_means.mean(axis=0), axis=1)
    assert spread.min() > 0.8  # the classes are apart on the plane (true distances 0.94, 1.49, 1.49)
    pca = plots.latent_plane(mu).project(mu)
    pca_means = np.stack([pca[y == c].mean(axis=0) for c in range(3)])
    assert np.linalg.norm(pca_means - pca_means.mean(axis=0), axis=1).max() < 0.8  # and not on the PCs


def test_manifold(tmp_path):
    read_png(plot_manifold(model_of(), tmp_path / "m.png", n=5), size=(7, 7.3))


def test_manifold_reach_covers_the_means():
    assert manifold_reach() == 3.0
    assert manifold_reach(np.full((10, 2), 0.5)) == 3.0  # never less than 3 prior sds
    mu = np.random.default_rng(0).standard_normal((1000, 2)) * 2
    reach = manifold_reach(mu)
    assert reach == math.ceil(2 * np.quantile(np.abs(mu), 0.99)) / 2 and reach > 4.5
    assert (np.abs(mu) <= reach).mean() >= 0.99


def test_manifold_grid_spans_the_reach_of_the_encoder_means(tmp_path, monkeypatch, data):
    x, _ = data
    model = model_of()
    model.encoder.layers[-1].params["b"][:2] = [4.0, -3.5]  # means far from the prior's centre
    decoded = []
    real_decode = plots._decode
    monkeypatch.setattr(plots, "_decode", lambda m, z: decoded.append(np.array(z)) or real_decode(m, z))
    plot_manifold(model, tmp_path / "m.png", n=5, x=x)
    reach = manifold_reach(plots.encode_means(model, x))
    z = decoded[0]
    assert reach > 3 and z.min() == -reach and z.max() == reach
    np.testing.assert_allclose(np.unique(z[:, 0]), np.linspace(-reach, reach, 5))


def test_manifold_ticks_mark_whole_z_values_along_both_axes(tmp_path, monkeypatch):
    figures = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or real_save(fig, path))
    plot_manifold(model_of(), tmp_path / "m.png", n=7)  # reach 3: columns at z = -3, -2, ..., 3
    ax = figures[0].axes[0]
    side, step = 4, 5
    assert [t.get_text() for t in ax.get_xticklabels()] == ["-3", "-2", "-1", "0", "1", "2", "3"]
    np.testing.assert_allclose(ax.get_xticks(), side / 2 + np.arange(7) * step)  # each column's centre
    assert [t.get_text() for t in ax.get_yticklabels()] == ["3", "2", "1", "0", "-1", "-2", "-3"]
    assert "$z_1$" in ax.get_xlabel() and "99.73%" in ax.get_title()


def test_manifold_refuses_other_latent_sizes(tmp_path):
    with pytest.raises(ConfigError, match="2-d latent"):
        plot_manifold(model_of(latent=3), tmp_path / "m.png")
    assert only_files(tmp_path) == []


def test_interpolation(tmp_path, data):
    x, _ = data
    read_png(plot_interpolation(model_of(), x[0], x[1:2], tmp_path / "i.png", steps=6))


def test_gaussian_means_outside_unit_interval_show_as_white_or_black(tmp_path):
    """A mean of 5 draws exactly as a mean of 1 (white), -5 as 0 (black), on a fixed scale."""
    def samples_png(mean):
        model = model_of(likelihood="gaussian")
        model.decoder.layers[-1].params["W"][:] = 0.0     # every decoded pixel is the bias
        model.decoder.layers[-1].params["b"][:] = mean
        path = plot_samples(model, tmp_path / f"s{mean}.png", np.random.default_rng(0), n=4)
        return read_png(path, size=(6, 6))

    assert np.array_equal(samples_png(5.0), samples_png(1.0))
    assert np.array_equal(samples_png(-5.0), samples_png(0.0))
    assert not np.array_equal(samples_png(1.0), samples_png(0.0))


def test_non_square_images_are_refused(tmp_path, data):
    model = model_of(x_dim=12)
    x = data[0][:, :12]
    for draw in (lambda: plot_reconstructions(model, x, tmp_path / "a.png"),
                 lambda: plot_samples(model, tmp_path / "b.png", np.random.default_rng(0)),
                 lambda: plot_manifold(model, tmp_path / "c.png"),
                 lambda: plot_interpolation(model, x[0], x[1], tmp_path / "d.png"),
                 lambda: save_all_figures(model, tmp_path / "run", x, data[1], METRICS,
                                          np.random.default_rng(0))):
        with pytest.raises(ConfigError, match="square"):
            draw()
    assert only_files(tmp_path) == []


# ------------------------------------------------------------------ all at once, atomically


@pytest.mark.parametrize("latent, expected", [
    (2, ["curves.png", "interpolation.png", "latents.png", "manifold.png", "reconstructions.png", "samples.png"]),
    (3, ["curves.png", "interpolation.png", "latents.png", "reconstructions.png", "samples.png"]),
])
def test_save_all_figures(tmp_path, data, latent, expected):
    x, y = data
    run = tmp_path / "run" / "figures"                    # created on demand
    paths = save_all_figures(model_of(latent=latent), run, x, y, METRICS, np.random.default_rng(0))
    assert sorted(p.name for p in paths) == expected
    assert only_files(run) == expected                    # no temporary files left
    for p in paths:
        read_png(p)


def test_save_all_figures_without_metrics_skips_curves(tmp_path, data):
    x, y = data
    paths = save_all_figures(model_of(latent=3), tmp_path, x, y, [], np.random.default_rng(0))
    assert "curves.png" not in [p.name for p in paths]


def test_interpolation_pair_has_different_labels():
    assert plots._interpolation_pair(np.zeros((4, 16)), np.array([3, 3, 7, 1])) == (0, 2)
    assert plots._interpolation_pair(np.zeros((2, 16)), np.array([3, 3])) == (0, 1)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "s.png"
    path.write_bytes(b"old")

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_samples(model_of(), path, np.random.default_rng(0))
    assert path.read_bytes() == b"old"
    assert only_files(tmp_path) == ["s.png"]


def test_overwrite_replaces_the_file(tmp_path):
    path = tmp_path / "s.png"
    path.write_bytes(b"old")
    plot_samples(model_of(), path, np.random.default_rng(0), n=4)
    read_png(path)
    assert only_files(tmp_path) == ["s.png"]


def test_plots_leave_pyplot_and_the_backend_alone(tmp_path):
    # In a fresh interpreter: no pyplot import, and the user's backend choice survives.
    code = ("import sys, matplotlib; matplotlib.use('svg'); import numpy as np, npvae.plots as p; "
            "from npvae import VAE; "
            "p.plot_samples(VAE(16, (4,), 2), sys.argv[1], np.random.default_rng(0), n=4); "
            "assert 'matplotlib.pyplot' not in sys.modules; "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.png")], check=True,
                   cwd=Path(__file__).resolve().parents[1])
    read_png(tmp_path / "s.png")


def test_figures_of_a_model_on_another_backend(tmp_path, data, strict_backend):
    # The strict stand-in refuses implicit conversion to NumPy, as CuPy does.
    x, y = data
    model = VAE(16, (8,), 2, dtype="float64", seed=0, backend=strict_backend.name)
    paths = save_all_figures(model, tmp_path, x, y, METRICS, np.random.default_rng(0))
    assert len(paths) == 6
