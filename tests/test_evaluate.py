"""Tests for npvae.evaluate: the ELBO over a data set, the importance-weighted
bound, KL per dimension and active units.

A small float64 VAE (12 pixels, 8 hidden, 3 latents) on random binary data
keeps everything exact enough for 1e-10 comparisons and fast. With 3 latents
log p(x) itself can be computed by quadrature on a grid, which gives the
importance-weighted bound something true to be compared with.
"""

import math

import numpy as np
import pytest

from npvae import VAE
from npvae.errors import ConfigError
from npvae.evaluate import (
    RunningLogSumExp,
    active_units,
    encode_means,
    evaluate_elbo,
    iw_bound,
    iw_bounds,
    iw_log_weights,
    kl_per_dim,
    latent_activity,
    logmeanexp,
)
from tests.strict_xp import StrictArray
from tests.strict_xp import to_numpy as strict_to_numpy


def small_vae(seed=2, **kw):
    return VAE(12, (8,), 3, dtype="float64", seed=seed, **kw)


def binary_data(n, seed=5, d=12):
    return (np.random.default_rng(seed).random((n, d)) < 0.3).astype(np.float64)


def quadrature_log_px(model, x, points=41, limit=6.0):
    """log p(x) = log int p(x|z) p(z) dz by the midpoint rule on a cube grid (latent 3)."""
    g = np.linspace(-limit, limit, points)
    z = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    logits = model.decoder.forward(z)                                    # (G, D)
    # log p(x|z) = sum_j x_j l_j - softplus(l_j), written independently of losses.py
    log_px_z = x @ logits.T - np.logaddexp(0, logits).sum(axis=1)        # (N, G)
    log_joint = log_px_z - 0.5 * (3 * math.log(2 * math.pi) + (z * z).sum(axis=1))
    return logmeanexp(log_joint, axis=1) + math.log(len(z)) + 3 * math.log(g[1] - g[0])


# ------------------------------------------------------------------ the ELBO


def test_evaluate_elbo_matches_model_forward_for_the_same_noise():
    model, x = small_vae(), binary_data(40)
    eps = np.random.default_rng(7).standard_normal((40, 3))
    terms = model.forward(x, eps=eps)
    got = evaluate_elbo(model, x, batch_size=64, rng=np.random.default_rng(7))
    assert got["loss"] == pytest.approx(float(terms.loss), abs=1e-12)
    assert got["recon"] == pytest.approx(float(terms.recon), abs=1e-12)
    assert got["kl"] == pytest.approx(float(terms.kl), abs=1e-12)


def test_evaluate_elbo_is_the_example_mean_whatever_the_batching():
    model, x = small_vae(), binary_data(53)
    whole = evaluate_elbo(model, x, batch_size=1000, rng=np.random.default_rng(1))
    pieces = evaluate_elbo(model, x, batch_size=10, rng=np.random.default_rng(1))
    for key in ("loss", "recon", "kl"):
        assert pieces[key] == pytest.approx(whole[key], abs=1e-10)


def test_evaluate_elbo_beta_and_default_seed():
    model, x = small_vae(beta=4.0), binary_data(30)
    a = evaluate_elbo(model, x)
    assert a == evaluate_elbo(model, x)                      # fixed default seed
    assert a["loss"] == pytest.approx(a["recon"] + 4.0 * a["kl"])
    one = evaluate_elbo(model, x, beta=1)
    assert one["loss"] == pytest.approx(one["recon"] + one["kl"])


def test_sampled_kl_agrees_with_closed_form_in_expectation():
    model, x = small_vae(), binary_data(4000)
    analytic = evaluate_elbo(model, x, rng=np.random.default_rng(3))
    sampled = evaluate_elbo(model, x, rng=np.random.default_rng(3), kl="sampled")
    assert sampled["recon"] == analytic["recon"]             # same noise, same z
    assert sampled["kl"] == pytest.approx(analytic["kl"], abs=0.05)
    with pytest.raises(ConfigError):
        evaluate_elbo(model, x, kl="exact")


# ------------------------------------------------------------------ the importance-weighted bound


def test_k1_bound_is_the_elbo_for_the_same_noise():
    # Different example batching on purpose: the noise stream is the same.
    model, x = small_vae(), binary_data(250)
    elbo = evaluate_elbo(model, x, batch_size=1000, rng=np.random.default_rng(11), beta=1, kl="sampled")
    bound = iw_bound(model, x, 1, np.random.default_rng(11), batch_size=64)
    assert bound == pytest.approx(-elbo["loss"], abs=1e-10)
    # and a different seed gives a different value: the equality is not vacuous
    assert abs(iw_bound(model, x, 1, np.random.default_rng(12)) - bound) > 1e-3


def test_bound_rises_with_k_and_stays_below_log_px():
    model, x = small_vae(seed=2), binary_data(400)
    bounds = [iw_bound(model, x, k, np.random.default_rng(20 + i)) for i, k in enumerate((1, 10, 100, 1000))]
    log_px = quadrature_log_px(model, x).mean()
    # The same examples each time, so the differences of the means are paired:
    # their standard errors are 0.24, 0.07 and 0.04 nats here, the gaps 5+ times that.
    gaps = np.diff(bounds)
    assert np.all(gaps > 0.1), (bounds, gaps)
    assert bounds[-1] < log_px
    assert log_px - bounds[-1] < log_px - bounds[0]


def test_bound_converges_to_quadrature_log_px():
    model, x = small_vae(seed=1), binary_data(200)
    log_px = quadrature_log_px(model, x).mean()
    assert iw_bound(model, x, 2000, np.random.default_rng(0)) == pytest.approx(log_px, abs=0.05)


def test_chunked_bound_equals_unchunked_for_the_same_noise():
    model, x = small_vae(), binary_data(70)
    whole = iw_bound(model, x, 50, np.random.default_rng(4), batch_size=32)
    for chunk in (1, 7, 50, 64):
        got = iw_bound(model, x, 50, np.random.default_rng(4), batch_size=32, chunk=chunk)
        assert got == pytest.approx(whole, abs=1e-10)


def test_iw_log_weights_give_the_bound():
    model, x = small_vae(), binary_data(20)
    log_w = iw_log_weights(model, x, 30, np.random.default_rng(8))
    assert log_w.shape == (30, 20) and isinstance(log_w, np.ndarray)
    expected = logmeanexp(log_w, axis=0).mean()
    assert iw_bound(model, x, 30, np.random.default_rng(8), chunk=4) == pytest.approx(expected, abs=1e-10)


def test_running_logsumexp_is_stable_for_huge_values():
    exact = 1e6 + math.log(4)                     # exp(1e6) overflows; the answer does not
    acc = RunningLogSumExp()
    acc.add(np.array([[1e6], [1e6 - 800.0]]))     # exp(-800) underflows to 0: harmless
    acc.add(np.array([[1e6 + math.log(3)]]))      # raises the running maximum: rescale
    acc.add(np.array([[-1e6]]))                   # far below it: adds nothing
    assert acc.value()[0] == pytest.approx(exact, rel=1e-15)
    assert acc.log_mean()[0] == pytest.approx(exact - math.log(4), rel=1e-15)
    assert logmeanexp(np.array([-1e6, -1e6])) == pytest.approx(-1e6, rel=1e-15)


def test_bound_is_finite_when_every_weight_underflows():
    # sigma = 1e-3: log p(x|z) is about -1e5, so exp of any log weight is 0.
    model = small_vae(likelihood="gaussian", sigma=1e-3)
    x = np.random.default_rng(0).random((15, 12))
    log_w = iw_log_weights(model, x, 40, np.random.default_rng(1))
    assert np.all(log_w < -1e4)
    with np.errstate(divide="ignore"):
        assert np.all(np.isneginf(np.log(np.exp(log_w).mean(axis=0))))  # the naive way fails
    bound = iw_bound(model, x, 40, np.random.default_rng(1), chunk=3)
    assert np.isfinite(bound)
    assert bound == pytest.approx(logmeanexp(log_w, axis=0).mean(), rel=1e-12)
    assert bound >= log_w.mean() - 1e-6           # Jensen: log-mean-exp >= mean


def test_iw_bound_refuses_bad_arguments():
    model, x = small_vae(), binary_data(5)
    for bad in (dict(k=0), dict(k=2, chunk=0), dict(k=2, batch_size=0)):
        with pytest.raises(ConfigError):
            iw_bound(model, x, rng=np.random.default_rng(0), **bad)
    with pytest.raises(ConfigError):
        iw_bound(model, x[:, :5], 2, np.random.default_rng(0))


# ------------------------------------------------------------------ latent usage


def test_kl_per_dim_sums_to_the_kl():
    model, x = small_vae(), binary_data(90)
    per_dim = kl_per_dim(model, x, batch_size=25)
    assert per_dim.shape == (3,) and np.all(per_dim >= 0)
    assert per_dim.sum() == pytest.approx(evaluate_elbo(model, x)["kl"], abs=1e-12)


def test_active_units_counts_dimensions_whose_mean_moves():
    model, x = small_vae(), binary_data(500)
    assert active_units(model, x) == 3
    # Cut the weights into mu_1 and mu_2: their means are now the bias for every x.
    model.encoder.layers[-1].params["W"][:, 1:3] = 0.0
    activity = latent_activity(model, x, batch_size=128)
    assert activity[1] == 0.0 and activity[2] == 0.0 and activity[0] > 0.01
    assert active_units(model, x) == 1
    assert active_units(model, x, threshold=10 * activity[0]) == 0
    means = encode_means(model, x, batch_size=64)
    assert means.shape == (500, 3)
    np.testing.assert_allclose(activity, means.var(axis=0))


# ------------------------------------------------------------------ any backend


def test_evaluation_runs_on_another_backend_and_returns_host_values(strict_backend):
    # The stand-in refuses every implicit conversion to NumPy, as CuPy does.
    transfers, to_host = strict_backend.transfers, strict_to_numpy
    device, host = small_vae(backend=strict_backend.name), small_vae()
    x = binary_data(30)
    assert isinstance(device.theta, StrictArray)
    a = evaluate_elbo(device, x, batch_size=8)
    assert a == evaluate_elbo(host, x, batch_size=8)
    assert all(type(v) is float for v in a.values()) and transfers
    assert iw_bound(device, x, 9, np.random.default_rng(0), batch_size=8, chunk=4) == \
        iw_bound(host, x, 9, np.random.default_rng(0), batch_size=8, chunk=4)
    assert type(kl_per_dim(device, x)) is np.ndarray
    assert type(encode_means(device, x)) is np.ndarray
    assert type(iw_log_weights(device, x, 3, np.random.default_rng(0))) is np.ndarray
    assert active_units(device, x) == active_units(host, x)
    # device data and a device generator work too
    x_device = device.xp.asarray(x)
    assert evaluate_elbo(device, x_device, rng=device.xp.random.default_rng(3)) == \
        evaluate_elbo(host, x, rng=np.random.default_rng(3))
    log_w = device.xp.asarray(iw_log_weights(host, x, 5, np.random.default_rng(0)))
    np.testing.assert_allclose(to_host(logmeanexp(log_w)), logmeanexp(to_host(log_w)))


# ------------------------------------------------------------------ the fast estimator


def random_model(seed, likelihood, dtype="float64"):
    """A random VAE: sizes, activation and (for the gaussian) sigma drawn from ``seed``."""
    r = np.random.default_rng(seed)
    hidden = [int(n) for n in r.integers(3, 12, size=r.integers(1, 3))]
    activation = ["relu", "tanh", "softplus", "leaky_relu", "sigmoid"][seed % 5]
    kw = dict(sigma=float(r.uniform(0.3, 2.0))) if likelihood == "gaussian" else {}
    model = VAE(int(r.integers(5, 30)), hidden, int(r.integers(1, 5)), activation=activation,
                likelihood=likelihood, dtype=dtype, seed=seed, **kw)
    for p in model.params.values():                 # biases too, so b . x is tested
        p += r.normal(0, 0.3, p.shape).astype(p.dtype)
    return model


def random_data(model, n, seed):
    r = np.random.default_rng(seed + 100)
    if model.config["likelihood"] == "bernoulli":    # binary and grey pixels both
        return np.where(r.random((n, model.x_dim)) < 0.5, r.random((n, model.x_dim)) < 0.3,
                        r.random((n, model.x_dim)))
    return r.normal(0.5, 1.0, (n, model.x_dim))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("seed", range(5))
def test_fast_estimator_equals_plain_in_float64(likelihood, seed):
    model = random_model(seed, likelihood)
    x = random_data(model, 23, seed)
    plain = iw_log_weights(model, x, 17, np.random.default_rng(seed), plain=True)
    fast = iw_log_weights(model, x, 17, np.random.default_rng(seed))
    np.testing.assert_allclose(fast, plain, rtol=1e-10, atol=0)
    # the whole bound, chunked and batched: the same noise, the same value
    bounds = [iw_bound(model, x, 40, np.random.default_rng(seed), batch_size=8, chunk=c, plain=p)
              for c, p in ((None, True), (None, False), (3, False))]
    assert bounds[1] == pytest.approx(bounds[0], rel=1e-10)
    assert bounds[2] == pytest.approx(bounds[0], rel=1e-10)


def test_fast_likelihoods_equal_the_plain_ones():
    from npvae.losses import bernoulli_nll, bernoulli_nll_linear, gaussian_nll, gaussian_nll_linear

    r = np.random.default_rng(0)
    h, W, b = r.normal(0, 3, (4, 6, 9)), r.normal(0, 1, (9, 13)), r.normal(0, 1, 13)
    x = r.random((4, 13))
    logits = h @ W + b                                   # (4, 6, 13)
    expected = bernoulli_nll(logits, x[:, None, :])
    np.testing.assert_allclose(bernoulli_nll_linear(h, W, b, x), expected, rtol=1e-12)
    np.testing.assert_allclose(bernoulli_nll_linear(h, W, b, x, xW=x @ W.T), expected, rtol=1e-12)
    np.testing.assert_allclose(gaussian_nll_linear(h, W, b, x, sigma=0.7),
                               gaussian_nll(logits, x[:, None, :], sigma=0.7), rtol=1e-12)
    # the comparison can fail: the data term without its bias part is caught
    wrong = bernoulli_nll_linear(h, W, np.zeros(13), x) - ((h @ W) * 0 + b).clip(0).sum(-1)
    assert np.abs(wrong - expected).max() > 1e-3


class FixedNoise:
    """A stand-in Generator whose ``standard_normal`` returns ``eps`` in the dtype asked for."""

    def __init__(self, eps):
        self.eps = eps

    def standard_normal(self, shape, dtype):
        assert tuple(shape) == self.eps.shape
        return self.eps.astype(dtype)


def test_fast_estimator_in_float32_stays_within_float32_rounding():
    # The fast form sums its terms apart (relu, data, log1p), so in float32 it
    # rounds differently from the plain one; both stay within ~1e-6 relative
    # of the float64 value of the same function (float32's epsilon: 1.2e-7).
    # MNIST's pixel count, and logits of about +/-10 (a confident decoder).
    model64 = VAE(784, (32,), 4, dtype="float64", seed=0)
    model64.decoder.layers[-1].params["W"] *= 3
    model64.decoder.layers[-1].params["b"] += np.random.default_rng(0).normal(0, 3, 784)
    model32 = VAE(**{**model64.config, "dtype": "float32"})
    model32.theta[:] = model64.theta
    model64.theta[:] = model32.theta                 # the float32 weights, exactly
    x = (np.random.default_rng(1).random((50, 784)) < 0.2).astype(np.float32)
    eps = np.random.default_rng(2).standard_normal((30, 50, model64.latent)).astype(np.float32)
    exact = iw_log_weights(model64, x, 30, FixedNoise(eps), plain=True)
    for plain in (True, False):
        got = iw_log_weights(model32, x, 30, FixedNoise(eps), plain=plain)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, exact, rtol=2e-6, atol=0)


def test_iw_bounds_are_per_example_and_report_progress():
    model, x = small_vae(), binary_data(45)
    calls = []
    per_example = iw_bounds(model, x, 25, np.random.default_rng(5), batch_size=20, chunk=7,
                            progress=lambda done, total: calls.append((done, total)))
    assert per_example.shape == (45,) and per_example.dtype == np.float64
    assert per_example.mean() == pytest.approx(
        iw_bound(model, x, 25, np.random.default_rng(5), batch_size=20), abs=1e-12)
    # one call per chunk: 3 batches (20, 20, 5 examples) x 4 chunks (7, 7, 7, 4 samples)
    assert len(calls) == 12 and all(total == 25 * 45 for _, total in calls)
    dones = [done for done, _ in calls]
    assert dones == sorted(dones) and dones[0] == 7 * 20 and dones[-1] == 25 * 45
    # each example's bound is its own log-mean-exp of its weights
    log_w = iw_log_weights(model, x[:20], 25, np.random.default_rng(5))
    np.testing.assert_allclose(per_example[:20], logmeanexp(log_w, axis=0), rtol=1e-12)
