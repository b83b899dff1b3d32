"""The latent-space explorer, driven headlessly on the Agg canvas.

Mouse events go through the canvas's own callback registry (as a window's
would), sliders through ``Slider.set_val``. After every move the image shown
must be ``model.decode`` at the explorer's z, and moving must change it.
"""

from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.backend_bases import MouseEvent

from npvae import VAE, cli
from npvae.checkpoint import save_checkpoint
from npvae.errors import ConfigError
from npvae.evaluate import encode_means, kl_per_dim
from npvae.explore import LatentExplorer
from npvae.plots import latent_plane


def model_and_digits(latent, n=60, seed=0):
    model = VAE(16, (12,), latent, seed=seed)
    rng = np.random.default_rng(seed)
    model.encoder.layers[-1].params["b"][:latent] = rng.standard_normal(latent).astype(np.float32)
    x = rng.uniform(size=(n, 16)).astype(np.float32)
    return model, x, rng.integers(0, 10, n)


def decoded(model, z):
    return model.decode(np.asarray(z, dtype=np.float32)[None]).reshape(4, 4)


def mouse(explorer, name, a, b, button=1):
    """A real MouseEvent at data point (a, b) of the plane, through the canvas's callbacks."""
    x, y = explorer.ax_plane.transData.transform((a, b))
    event = MouseEvent(name, explorer.figure.canvas, x, y, button=button)
    explorer.figure.canvas.callbacks.process(name, event)


def test_clicking_and_dragging_on_a_2d_latent_decodes_that_point():
    model, x, y = model_and_digits(latent=2)
    explorer = LatentExplorer(model, x, y)
    explorer.figure.canvas.draw()  # the transforms of a drawn figure, as in a window
    assert explorer.dims == [] and not explorer.sliders  # 2-d: the plane is the latent space
    np.testing.assert_allclose(explorer.coords, encode_means(model, x))
    start = explorer.image().copy()

    mouse(explorer, "button_press_event", 1.5, -0.75)
    np.testing.assert_allclose(explorer.z, [1.5, -0.75], atol=1e-6)
    after_click = explorer.picture.get_array()
    np.testing.assert_array_equal(after_click, np.clip(decoded(model, explorer.z), 0, 1))
    assert np.abs(after_click - start).max() > 1e-3  # the digit changed

    mouse(explorer, "motion_notify_event", -2.0, 0.5)  # dragging: the button is still down
    np.testing.assert_allclose(explorer.z, [-2.0, 0.5], atol=1e-6)
    np.testing.assert_array_equal(explorer.picture.get_array(), np.clip(decoded(model, explorer.z), 0, 1))
    assert np.abs(explorer.picture.get_array() - after_click).max() > 1e-3
    np.testing.assert_allclose(np.ravel(explorer.marker.get_data()), explorer.z)

    mouse(explorer, "button_release_event", -2.0, 0.5)
    mouse(explorer, "motion_notify_event", 0.3, 0.3)  # released: moving the mouse moves nothing
    np.testing.assert_allclose(explorer.z, [-2.0, 0.5], atol=1e-6)
    mouse(explorer, "button_press_event", 0.3, 0.3, button=3)  # only the left button moves z
    np.testing.assert_allclose(explorer.z, [-2.0, 0.5], atol=1e-6)


def test_sliders_follow_the_most_active_dimensions_and_the_plane_is_latents_pngs():
    model, x, y = model_and_digits(latent=6)
    explorer = LatentExplorer(model, x, y, n_sliders=3)
    kl = kl_per_dim(model, x)
    assert explorer.dims == list(np.argsort(kl)[::-1][:3])
    assert kl[explorer.dims[-1]] >= np.sort(kl)[::-1][3]

    mu = encode_means(model, x).astype(np.float64)
    plane = latent_plane(mu, y)  # the plane of latents.png: the class centres'
    centre, basis = explorer.centre, explorer.basis
    np.testing.assert_array_equal(centre, plane.centre)
    np.testing.assert_array_equal(basis, plane.basis)
    class_centres = np.stack([mu[y == c].mean(axis=0) for c in np.unique(y)])
    np.testing.assert_allclose(centre, class_centres.mean(axis=0))
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-12)  # orthonormal
    spread = ((class_centres - centre) @ basis.T).var(axis=0)
    other = np.linalg.svd(class_centres - centre, compute_uv=False) ** 2 / len(class_centres)
    np.testing.assert_allclose(spread, other[:2], rtol=1e-9)  # the two largest variances
    assert plane.name in explorer.ax_plane.get_title()

    before = explorer.image().copy()
    explorer.move_to(0.8, -0.4)
    np.testing.assert_allclose(explorer.z, centre + 0.8 * basis[0] - 0.4 * basis[1])
    np.testing.assert_allclose(explorer.projection(), (0.8, -0.4), atol=1e-12)
    for u, slider in explorer.sliders.items():  # the sliders show the new z
        assert slider.val == pytest.approx(explorer.z[u])
    moved = explorer.picture.get_array()
    np.testing.assert_array_equal(moved, np.clip(decoded(model, explorer.z), 0, 1))
    assert np.abs(moved - before).max() > 1e-4

    u = explorer.dims[0]
    z_before = explorer.z.copy()
    explorer.sliders[u].set_val(2.5)  # what dragging the slider does
    expected = z_before.copy()
    expected[u] = 2.5
    np.testing.assert_allclose(explorer.z, expected)
    np.testing.assert_array_equal(explorer.picture.get_array(), np.clip(decoded(model, expected), 0, 1))
    assert np.abs(explorer.picture.get_array() - moved).max() > 1e-4
    np.testing.assert_allclose(np.ravel(explorer.marker.get_data()), explorer.projection())


def test_a_1d_latent_is_refused_in_one_line():
    model, x, y = model_and_digits(latent=1)
    with pytest.raises(ConfigError, match="latent=1"):
        LatentExplorer(model, x, y)


def test_the_notebook_widget_moves_z_and_redraws():
    pytest.importorskip("ipywidgets")
    model, x, y = model_and_digits(latent=4)
    explorer = LatentExplorer(model, x, y, n_sliders=2)
    box = explorer.widget()
    a, b = box.children[0].children
    picture = box.children[-1]
    first = picture.value
    a.value = a.min + 0.25 * (a.max - a.min)
    np.testing.assert_allclose(explorer.projection(), (a.value, b.value), atol=1e-9)
    assert picture.value != first
    u = explorer.dims[0]
    box.children[1].value = 1.25
    assert explorer.z[u] == pytest.approx(1.25)


def test_npvae_explore_writes_a_still_and_needs_a_screen_for_a_window(tmp_path, capsys, monkeypatch):
    model = VAE(784, (8,), 3, seed=1)  # the shipped MNIST's 784 pixels: a checkpoint without a run
    save_checkpoint(tmp_path / "checkpoint.npz", model, None, {})
    out = tmp_path / "explorer.png"
    assert cli.main(["explore", str(tmp_path), "--n", "300", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    monkeypatch.setattr("matplotlib.get_backend", lambda: "agg")
    assert cli.main(["explore", str(tmp_path), "--n", "300"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot open a window" in err
    assert cli.main(["explore", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_explore_has_help(capsys):
    assert cli.main(["explore", "--help"]) == 0
    assert "usage: npvae explore" in capsys.readouterr().out


def test_release_outside_the_plane_ends_a_drag():
    model, x, y = model_and_digits(latent=2)
    explorer = LatentExplorer(model, x, y)
    explorer.on_press(SimpleNamespace(inaxes=explorer.ax_plane, button=1, xdata=0.5, ydata=0.5))
    explorer.on_release(SimpleNamespace(inaxes=None))
    explorer.on_motion(SimpleNamespace(inaxes=explorer.ax_plane, xdata=1.0, ydata=1.0))
    np.testing.assert_allclose(explorer.z, [0.5, 0.5])


def test_npvae_explore_opens_a_pyplot_window_where_the_backend_can(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from npvae import explore

    save_checkpoint(tmp_path / "checkpoint.npz", VAE(784, (8,), 2, seed=1), None, {})
    shown = []
    monkeypatch.setattr(explore, "NON_INTERACTIVE", set())  # pretend Agg can open a window
    monkeypatch.setattr(LatentExplorer, "show", lambda self: shown.append(self))
    assert cli.main(["explore", str(tmp_path), "--n", "100"]) == 0
    assert len(shown) == 1 and plt.fignum_exists(shown[0].figure.number)  # a pyplot figure
    plt.close("all")


def test_a_conditional_model_encodes_with_labels_and_decodes_the_chosen_digit():
    from npvae.cvae import CVAE

    model = CVAE(16, (12,), 2, n_classes=10, seed=1)
    rng = np.random.default_rng(1)
    x, y = rng.uniform(size=(40, 16)).astype(np.float32), rng.integers(0, 10, 40)
    explorer = LatentExplorer(model, x, y, digit=7)
    np.testing.assert_allclose(explorer.coords, encode_means(model, x, y=y))
    explorer.move_to(1.0, -0.5)
    z = np.asarray(explorer.z, dtype=np.float32)[None]
    np.testing.assert_array_equal(explorer.image(), model.decode(z, np.array([7])).reshape(4, 4))
    assert np.abs(explorer.image() - model.decode(z, np.array([1])).reshape(4, 4)).max() > 1e-4
    with pytest.raises(ConfigError, match="one of 0 to 9"):
        LatentExplorer(model, x, y, digit=10)
    plain, x, y = model_and_digits(latent=2)
    with pytest.raises(ConfigError, match="not conditional"):
        LatentExplorer(plain, x, y, digit=3)
