"""The forward maths, checked against definitions and statistics.

A gradient check only proves that backward matches forward; these tests
prove the forward is the right formula: the sampler's moments, the KL
against Monte Carlo, the Bernoulli term against the textbook formula.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npvae import VAE
from npvae.gradcheck import check_model
from npvae.losses import (
    bernoulli_nll,
    gaussian_kl,
    gaussian_nll,
    log_normal,
    log_standard_normal,
)
from npvae.reparam import reparameterize


def sample_moments(sampler, mu, logvar, n, seed):
    rng = np.random.default_rng(seed)
    mus = np.broadcast_to(mu, (n, mu.size))
    logvars = np.broadcast_to(logvar, (n, mu.size))
    z, _ = sampler(mus, logvars, rng=rng)
    return z.mean(axis=0), z.var(axis=0)


def assert_moments_match(mean, var, mu, logvar, n):
    """Sample mean and variance within 5 standard errors of mu and exp(logvar)."""
    sigma2 = np.exp(logvar)
    np.testing.assert_array_less(np.abs(mean - mu), 5 * np.sqrt(sigma2 / n))
    np.testing.assert_array_less(np.abs(var - sigma2), 5 * sigma2 * np.sqrt(2 / (n - 1)))


def test_sampler_mean_and_variance():
    mu = np.array([0.0, 1.5, -2.0, 0.3])
    logvar = np.array([0.0, -1.0, 1.2, np.log(4.0)])
    n = 200_000
    mean, var = sample_moments(reparameterize, mu, logvar, n, seed=0)
    assert_moments_match(mean, var, mu, logvar, n)


def wrong_reparameterize(mu, logvar, eps=None, rng=None):
    """numpy-ml's bug: noise scaled by exp(logvar), the variance, not the std."""
    eps = rng.standard_normal(mu.shape) if eps is None else eps
    return mu + np.exp(logvar) * eps, eps


def test_sampler_check_catches_variance_instead_of_std():
    mu, logvar = np.array([0.5, -1.0]), np.array([1.0, -0.7])
    n = 200_000
    mean, var = sample_moments(wrong_reparameterize, mu, logvar, n, seed=1)
    with pytest.raises(AssertionError):
        assert_moments_match(mean, var, mu, logvar, n)


def test_variance_bug_passes_every_gradient_check(monkeypatch):
    """The reason the statistical test exists: a VAE whose sampler scales by
    exp(logvar) with a backward to match passes the finite-difference check."""
    import npvae.vae as vae_module

    monkeypatch.setattr(vae_module, "reparameterize",
                        lambda mu, logvar, eps=None, rng=None: (mu + np.exp(logvar) * eps, eps))
    monkeypatch.setattr(vae_module, "reparameterize_backward",
                        lambda dz, logvar, eps: (dz, dz * eps * np.exp(logvar)))
    rng = np.random.default_rng(0)
    model = VAE(5, (4,), 2, activation="tanh", dtype="float64")
    assert all(r.ok for r in check_model(model, rng.random((3, 5)), rng.standard_normal((3, 2))))


@given(seed=st.integers(0, 2**32 - 1), Z=st.integers(1, 4))
def test_kl_matches_monte_carlo(seed, Z):
    """KL(q || p) = E_q[log q(z) - log p(z)], estimated with 100k samples."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 1.5, (1, Z))
    logvar = rng.normal(0, 1.0, (1, Z))
    n = 100_000
    z, _ = reparameterize(np.repeat(mu, n, 0), np.repeat(logvar, n, 0), rng=rng)
    log_ratio = log_normal(z, mu, logvar) - log_standard_normal(z)
    estimate, stderr = log_ratio.mean(), log_ratio.std() / np.sqrt(n)
    assert abs(gaussian_kl(mu, logvar)[0] - estimate) < 5 * stderr + 1e-12


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = np.zeros((2, 3))
    np.testing.assert_array_equal(gaussian_kl(zeros, zeros), 0.0)
    rng = np.random.default_rng(0)
    assert np.all(gaussian_kl(rng.standard_normal((50, 3)), rng.standard_normal((50, 3))) > 0)


@given(seed=st.integers(0, 2**32 - 1))
def test_bernoulli_matches_naive_formula(seed):
    """On safe logits the stable form equals -x log p - (1 - x) log(1 - p)."""
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-15, 15, (4, 9))
    x = np.where(rng.random((4, 9)) < 0.3, rng.integers(0, 2, (4, 9)), rng.random((4, 9)))
    p = 1 / (1 + np.exp(-logits))
    naive = (-x * np.log(p) - (1 - x) * np.log(1 - p)).sum(axis=1)
    np.testing.assert_allclose(bernoulli_nll(logits, x), naive, rtol=1e-9)


def test_bernoulli_extreme_logits_are_finite_and_exact():
    logits = np.array([[1e4, -1e4, 1e4, -1e4]], dtype=np.float32)
    x = np.array([[1.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    # The two confident right answers cost 0; the two confident wrong ones 1e4 each.
    np.testing.assert_array_equal(bernoulli_nll(logits, x), [2e4])


def test_gaussian_nll_matches_log_density_and_sse():
    rng = np.random.default_rng(0)
    mean, x, sigma = rng.random((3, 6)), rng.random((3, 6)), 0.4
    density = np.prod(np.exp(-(x - mean) ** 2 / (2 * sigma**2)) / np.sqrt(2 * np.pi * sigma**2), axis=1)
    np.testing.assert_allclose(gaussian_nll(mean, x, sigma), -np.log(density), rtol=1e-12)
    # sigma^2 = 1/2: the summed squared error plus D/2 log(pi).
    sse = ((x - mean) ** 2).sum(axis=1)
    np.testing.assert_allclose(gaussian_nll(mean, x, np.sqrt(0.5)), sse + 3 * np.log(np.pi), rtol=1e-12)


def test_log_normal_matches_density():
    rng = np.random.default_rng(0)
    z, mu, logvar = rng.standard_normal((3, 2)), rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    var = np.exp(logvar)
    density = np.prod(np.exp(-(z - mu) ** 2 / (2 * var)) / np.sqrt(2 * np.pi * var), axis=1)
    np.testing.assert_allclose(log_normal(z, mu, logvar), np.log(density), rtol=1e-12)
    np.testing.assert_allclose(log_standard_normal(z), log_normal(z, 0 * z, 0 * z), rtol=1e-12)


def test_vae_loss_is_sum_over_pixels_mean_over_batch():
    rng = np.random.default_rng(0)
    model = VAE(6, (5,), 2, dtype="float64", beta=0.5)
    x, eps = rng.random((4, 6)), rng.standard_normal((4, 2))
    terms = model.forward(x, eps=eps)
    mu, logvar = model.encode(x)
    z, _ = reparameterize(mu, logvar, eps)
    recon = bernoulli_nll(model.decoder.forward(z), x)
    kl = gaussian_kl(mu, logvar)
    assert terms.recon == pytest.approx(recon.sum() / 4, rel=1e-12)
    assert terms.kl == pytest.approx(kl.sum() / 4, rel=1e-12)
    assert terms.loss == pytest.approx(terms.recon + 0.5 * terms.kl, rel=1e-12)
