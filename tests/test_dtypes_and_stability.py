"""float32 stays float32 (training runs in it), and extreme values stay finite."""

import numpy as np
import pytest

from npvae import VAE, ConfigError, DataError
from npvae.activations import ACTIVATIONS
from npvae.layers import MLP, Dense
from npvae.losses import (
    bernoulli_nll,
    bernoulli_nll_backward,
    gaussian_kl,
    gaussian_kl_backward,
    gaussian_nll,
    gaussian_nll_backward,
)
from npvae.reparam import reparameterize, reparameterize_backward


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_piece_preserves_dtype(dtype):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 5)).astype(dtype), rng.random((4, 5)).astype(dtype)
    dout = rng.standard_normal(4).astype(dtype)
    outputs = [
        bernoulli_nll(a, b), bernoulli_nll_backward(dout, a, b), bernoulli_nll_backward(0.25, a, b),
        gaussian_nll(a, b, 0.5), gaussian_nll_backward(dout, a, b, 0.5),
        gaussian_kl(a, b), *gaussian_kl_backward(dout, a, b),
        *reparameterize(a, b, rng=rng), *reparameterize_backward(a, b, a),
    ]
    for name, cls in ACTIVATIONS.items():
        layer = cls()
        outputs += [layer.forward(a), layer.backward(a)]
    dense = Dense(5, 3, rng=rng, dtype=dtype)
    outputs += [dense.forward(a), dense.backward(rng.standard_normal((4, 3)).astype(dtype)),
                *dense.grads.values()]
    mlp = MLP([5, 6, 2], rng=rng, dtype=dtype)
    outputs += [mlp.forward(a), mlp.backward(np.ones((4, 2), dtype))]
    assert [o.dtype for o in outputs] == [np.dtype(dtype)] * len(outputs)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_vae_float32_forward_backward(likelihood):
    rng = np.random.default_rng(0)
    model = VAE(784, (400,), 20, likelihood=likelihood)
    x = rng.random((16, 784), dtype=np.float32)
    terms = model.forward(x, rng=rng)
    model.backward()
    assert {t.dtype for t in terms} == {np.dtype(np.float32)}
    assert model.theta.dtype == model.dtheta.dtype == np.float32
    assert all(g.dtype == np.float32 for g in model.grads.values())
    assert np.isfinite(float(terms.loss)) and np.all(np.isfinite(model.dtheta))


def test_float32_gradients_agree_with_float64():
    rng = np.random.default_rng(1)
    x, eps = rng.random((8, 30)), rng.standard_normal((8, 4))
    grads = {}
    for dtype in ("float32", "float64"):
        model = VAE(30, (20,), 4, dtype=dtype, seed=5)
        model.forward(x.astype(dtype), eps=eps.astype(dtype))
        model.backward()
        grads[dtype] = model.dtheta.astype(np.float64)
    scale = np.abs(grads["float64"]).max()
    assert np.abs(grads["float32"] - grads["float64"]).max() < 1e-4 * scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_values_give_finite_losses_and_gradients(dtype):
    logits = np.array([[1e4, -1e4, 0.0, 50.0, -50.0]] * 2, dtype=dtype)
    x = np.array([[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]], dtype=dtype)
    assert np.all(np.isfinite(bernoulli_nll(logits, x)))
    assert np.all(np.isfinite(bernoulli_nll_backward(0.5, logits, x)))
    mu = np.array([[0.0, 3.0, -3.0]] * 2, dtype=dtype)
    logvar = np.array([[50.0, -50.0, 0.0], [-50.0, 50.0, 0.0]], dtype=dtype)
    assert np.all(np.isfinite(gaussian_kl(mu, logvar)))
    assert all(np.all(np.isfinite(g)) for g in gaussian_kl_backward(0.5, mu, logvar))
    z, eps = reparameterize(mu, logvar, np.ones_like(mu))
    assert np.all(np.isfinite(z))
    assert all(np.all(np.isfinite(g)) for g in reparameterize_backward(np.ones_like(z), logvar, eps))


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_all_zero_and_all_one_images(fill):
    model = VAE(784, (400,), 20)
    x = np.full((8, 784), fill, dtype=np.float32)
    terms = model.forward(x, rng=np.random.default_rng(0))
    model.backward()
    assert np.isfinite(float(terms.loss)) and np.all(np.isfinite(model.dtheta))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 5), np.float32), r"shape \(batch, 784\)"),
    (np.zeros(784, np.float32), r"shape \(batch, 784\)"),
    (np.zeros((0, 784), np.float32), r"shape \(batch, 784\)"),
    (np.zeros((3, 784), np.uint8), "floating"),
    ([[0.0] * 784], "shape"),
])
def test_bad_input_is_a_clear_error(bad, match):
    with pytest.raises(ConfigError, match=match):
        VAE().forward(bad, rng=np.random.default_rng(0))


@pytest.mark.parametrize("value, likelihood, match", [
    (np.nan, "bernoulli", "NaN or infinite"), (np.inf, "gaussian", "NaN or infinite"),
    (1.5, "bernoulli", r"pixels in \[0, 1\].*max 1.5"), (-0.5, "bernoulli", "min -0.5"),
])
def test_bad_values_are_a_clear_error(value, likelihood, match):
    x = np.full((2, 784), 0.5, np.float32)
    x[1, 3] = value
    with pytest.raises(DataError, match=match):
        VAE(likelihood=likelihood).forward(x, rng=np.random.default_rng(0))


def test_pixels_outside_unit_interval_are_fine_for_gaussian():
    x = np.full((2, 784), 1.5, np.float32)
    assert np.isfinite(float(VAE(likelihood="gaussian").forward(x, rng=np.random.default_rng(0)).loss))


def test_eps_of_the_wrong_shape_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"eps must have shape \(2, 20\)"):
        VAE().forward(np.zeros((2, 784), np.float32), eps=np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("kwargs, match", [
    ({"latent": 0}, "latent=0"), ({"hidden": (400, -1)}, "hidden=-1"), ({"x_dim": 2.5}, "x_dim=2.5"),
    ({"activation": "gelu"}, "activation='gelu'"), ({"likelihood": "poisson"}, "likelihood='poisson'"),
    ({"beta": -1.0}, "beta=-1.0"), ({"sigma": 0.0}, "sigma=0.0"), ({"dtype": "int32"}, "dtype='int32'"), ({"dtype": None}, "dtype=None"), ({"hidden": 400}, "hidden=400"),
    ({"init": "zeros"}, "init='zeros'"), ({"backend": "tpu"}, "backend='tpu'"),
])
def test_bad_configuration_is_a_clear_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        VAE(**kwargs)


def test_seed_and_pytorch_architectures():
    seed = VAE(784, (128, 64), 20)
    assert [l.params["W"].shape for l in seed.encoder.layers + seed.decoder.layers if l.params] == [
        (784, 128), (128, 64), (64, 40), (20, 64), (64, 128), (128, 784)]
    pytorch = VAE(784, (400,), 20, init="pytorch")
    assert [l.params["W"].shape for l in pytorch.encoder.layers + pytorch.decoder.layers if l.params] == [
        (784, 400), (400, 40), (20, 400), (400, 784)]
    assert pytorch.theta.size == 652824  # the parameter count of PyTorch's example


def test_same_seed_same_weights_and_losses():
    rng_x = np.random.default_rng(0).random((4, 784), dtype=np.float32)
    a, b = VAE(seed=3), VAE(seed=3)
    np.testing.assert_array_equal(a.theta, b.theta)
    ta = a.forward(rng_x, rng=np.random.default_rng(9))
    tb = b.forward(rng_x, rng=np.random.default_rng(9))
    assert ta == tb
    assert not np.array_equal(VAE(seed=4).theta, a.theta)
