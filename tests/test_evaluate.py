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
