"""Every backward against central finite differences, in float64.

Shapes and values come from hypothesis: batch 1 included, logits up to
+/-1e4 included. Each check asserts a relative error of at most 1e-6
(npvae.gradcheck.DEFAULT_TOL); tests/test_checker_fails.py shows that the
same checks flag a wrong sign, factor or transpose.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from npvae import VAE
from npvae.activations import ACTIVATIONS, LeakyReLU, ReLU
from npvae.gradcheck import DEFAULT_TOL, check_function, check_layer, check_model
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
from tests.helpers import assert_all_ok

batch = st.integers(1, 5)
dim = st.integers(1, 7)
seeds = st.integers(0, 2**32 - 1)


def floats(lo=-3.0, hi=3.0):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


def matrix(shape, elements=None):
    return arrays(np.float64, shape, elements=floats() if elements is None else elements)


def distance_to_kinks(mlp, x):
    """The smallest |input| of a ReLU or leaky ReLU in ``mlp`` for input ``x``.

    Their derivative jumps at 0; a finite difference whose step straddles
    the jump measures neither side, so checks must stay clear of it.
    """
    distance = np.inf
    for layer in mlp.layers:
        if isinstance(layer, (ReLU, LeakyReLU)):
            distance = min(distance, np.abs(x).min())
        x = layer.forward(x)
    return distance


@given(B=batch, n_in=dim, n_out=dim, seed=seeds)
def test_dense_gradients(B, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    layer = Dense(n_in, n_out, rng=rng, init="pytorch", dtype=np.float64)
    x = rng.standard_normal((B, n_in))
    assert_all_ok(check_layer(layer, x, rng))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(data=st.data(), B=batch, n=dim, seed=seeds)
def test_activation_gradients(name, data, B, n, seed):
    # Values stay away from the kinks of ReLU and leaky ReLU (at 0), where
    # the derivative does not exist and finite differences straddle it.
    away_from_zero = floats(-6.0, 6.0).filter(lambda v: abs(v) > 1e-3)
    x = data.draw(matrix((B, n), away_from_zero))
    assert_all_ok(check_layer(ACTIVATIONS[name](), x, np.random.default_rng(seed)))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@given(B=batch, sizes=st.lists(dim, min_size=2, max_size=4), seed=seeds)
def test_mlp_gradients(activation, B, sizes, seed):
    rng = np.random.default_rng(seed)
    # PyTorch's init draws nonzero biases: with zero biases a dead ReLU unit
    # feeds an exact 0 to the next layer, which sits on that layer's kink.
    mlp = MLP(sizes, activation, rng=rng, init="pytorch", dtype=np.float64)
    x = rng.standard_normal((B, sizes[0]))
    assume(distance_to_kinks(mlp, x) > 1e-3)
    results = check_layer(mlp, x, rng)  # an MLP is a layer too: input and every parameter
    assert {r.name for r in results} == {"x", *mlp.params}
    assert_all_ok(results)


@given(data=st.data(), B=batch, D=dim, seed=seeds)
def test_bernoulli_nll_gradient(data, B, D, seed):
    # Logits span ordinary values and the extremes (+/-1e4), where a naive
    # log(sigmoid) would give log(0); x is binary or a grey level in [0, 1].
    logits = data.draw(matrix((B, D), st.one_of(floats(-20, 20), st.sampled_from([-1e4, 1e4]))))
    x = data.draw(matrix((B, D), st.one_of(st.sampled_from([0.0, 1.0]), floats(0.0, 1.0))))
    results = check_function(
        bernoulli_nll,
        lambda dout, logits, x: {"logits": bernoulli_nll_backward(dout, logits, x)},
        {"logits": logits, "x": x}, np.random.default_rng(seed))
    assert np.all(np.isfinite(bernoulli_nll(logits, x)))
    assert_all_ok(results)


@given(data=st.data(), B=batch, D=dim, sigma=floats(0.1, 3.0), seed=seeds)
def test_gaussian_nll_gradient(data, B, D, sigma, seed):
    mean, x = data.draw(matrix((B, D))), data.draw(matrix((B, D)))
    results = check_function(
        lambda mean, x: gaussian_nll(mean, x, sigma),
        lambda dout, mean, x: {"mean": gaussian_nll_backward(dout, mean, x, sigma)},
        {"mean": mean, "x": x}, np.random.default_rng(seed))
    assert_all_ok(results)


@given(data=st.data(), B=batch, Z=dim, seed=seeds)
def test_gaussian_kl_gradient(data, B, Z, seed):
    mu = data.draw(matrix((B, Z)))
    logvar = data.draw(matrix((B, Z), floats(-8.0, 8.0)))

    def backward(dout, mu, logvar):
        dmu, dlogvar = gaussian_kl_backward(dout, mu, logvar)
        return {"mu": dmu, "logvar": dlogvar}

    assert_all_ok(check_function(gaussian_kl, backward, {"mu": mu, "logvar": logvar},
                                 np.random.default_rng(seed)))


@given(data=st.data(), B=batch, Z=dim, seed=seeds)
def test_reparameterize_gradient(data, B, Z, seed):
    mu = data.draw(matrix((B, Z)))
    logvar = data.draw(matrix((B, Z), floats(-8.0, 8.0)))
    eps = data.draw(matrix((B, Z)))

    def forward(mu, logvar):
        return reparameterize(mu, logvar, eps)[0]

    def backward(dz, mu, logvar):
        dmu, dlogvar = reparameterize_backward(dz, logvar, eps)
        return {"mu": dmu, "logvar": dlogvar}

    assert_all_ok(check_function(forward, backward, {"mu": mu, "logvar": logvar},
                                 np.random.default_rng(seed)))


@given(B=batch, x_dim=st.integers(2, 8), hidden=st.lists(st.integers(1, 6), min_size=1, max_size=2),
       latent=st.integers(1, 4), activation=st.sampled_from(sorted(ACTIVATIONS)),
       likelihood=st.sampled_from(["bernoulli", "gaussian"]), beta=floats(0.0, 4.0), seed=seeds)
def test_vae_gradients_end_to_end(B, x_dim, hidden, latent, activation, likelihood, beta, seed):
    rng = np.random.default_rng(seed)
    model = VAE(x_dim, hidden, latent, activation=activation, likelihood=likelihood,
                sigma=0.7, beta=beta, dtype="float64", seed=seed)
    model.theta[:] = rng.normal(0.0, 0.5, model.theta.size)  # nonzero biases: off the ReLU kinks
    x = rng.random((B, x_dim))
    eps = rng.standard_normal((B, latent))
    mu, logvar = model.encode(x)
    z, _ = reparameterize(mu, logvar, eps)
    assume(min(distance_to_kinks(model.encoder, x), distance_to_kinks(model.decoder, z)) > 1e-3)
    results = check_model(model, x, eps)
    assert {r.name for r in results} == set(model.params)  # every parameter of both networks
    assert_all_ok(results)


@pytest.mark.parametrize("hidden", [(400,), (128, 64)])
def test_vae_gradients_preset_depths(hidden):
    """The two reference architectures, shrunk in width, checked end to end."""
    rng = np.random.default_rng(0)
    small = tuple(max(2, h // 40) for h in hidden)
    model = VAE(12, small, 3, dtype="float64", seed=1)
    x = (rng.random((4, 12)) > 0.5).astype(np.float64)
    assert_all_ok(check_model(model, x, rng.standard_normal((4, 3))))


@pytest.mark.parametrize("where", ["model", "forward"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_vae_gradients_with_beta_not_one(where, likelihood):
    """beta = 0.3, fixed: a backward that puts beta on the wrong term cannot pass here by luck
    (hypothesis may draw beta close to 1); tests/test_checker_fails.py plants that bug."""
    rng = np.random.default_rng(4)
    model = VAE(6, (5,), 3, activation="tanh", likelihood=likelihood, sigma=0.7,
                beta=0.3 if where == "model" else 1.0, dtype="float64", seed=2)
    x, eps = rng.random((4, 6)), rng.standard_normal((4, 3))
    assert_all_ok(check_model(model, x, eps, beta=0.3 if where == "forward" else None))
