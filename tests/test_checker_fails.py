"""The gradient checker can fail: backwards wrong by a sign, a factor of two
or a transpose are flagged, in layers, losses and the whole VAE."""

import numpy as np
import pytest

from npvae import VAE
from npvae.gradcheck import (DEFAULT_TOL, check_function, check_layer, check_model, noise_floor,
                             rel_error)
from npvae.layers import Dense
from npvae.losses import gaussian_kl, gaussian_kl_backward


class SignBugDense(Dense):
    """dW with the wrong sign."""

    def backward(self, dout, need_dx=True):
        dx = super().backward(dout, need_dx)
        self.grads["W"] *= -1
        return dx


class TransposeBugDense(Dense):
    """dx = dout @ W instead of dout @ W^T (only possible for square W)."""

    def backward(self, dout, need_dx=True):
        super().backward(dout, need_dx)
        return dout @ self.params["W"]


class FactorBugDense(Dense):
    """db twice too large."""

    def backward(self, dout, need_dx=True):
        dx = super().backward(dout, need_dx)
        self.grads["b"] *= 2
        return dx


def kl_backward_without_half(dout, mu, logvar):
    dmu, dlogvar = gaussian_kl_backward(dout, mu, logvar)
    return {"mu": dmu, "logvar": 2 * dlogvar}


@pytest.mark.parametrize("bug, wrong", [(SignBugDense, "W"), (TransposeBugDense, "x"),
                                        (FactorBugDense, "b")])
def test_checker_catches_wrong_backward(bug, wrong):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5))
    results = {r.name: r for r in check_layer(bug(5, 5, rng=rng, dtype=np.float64), x, rng)}
    assert not results[wrong].ok, f"a wrong d{wrong} passed: {results[wrong]}"
    assert results[wrong].rel_error > 1e3 * DEFAULT_TOL
    assert all(r.ok for name, r in results.items() if name != wrong)


def test_checker_catches_factor_in_kl():
    rng = np.random.default_rng(1)
    inputs = {"mu": rng.standard_normal((3, 4)), "logvar": rng.standard_normal((3, 4))}
    results = {r.name: r for r in check_function(gaussian_kl, kl_backward_without_half, inputs, rng)}
    assert results["mu"].ok and not results["logvar"].ok


def test_checker_catches_wrong_vae_backward(monkeypatch):
    """A sign error deep inside the model (the reparameterization's dlogvar)
    shows up in every encoder parameter, and in none of the decoder's."""
    import npvae.vae as vae_module

    original = vae_module.reparameterize_backward

    def wrong_backward(dz, logvar, eps):
        dmu, dlogvar = original(dz, logvar, eps)
        return dmu, -dlogvar

    monkeypatch.setattr(vae_module, "reparameterize_backward", wrong_backward)
    rng = np.random.default_rng(2)
    model = VAE(6, (5,), 2, activation="tanh", dtype="float64", seed=3)
    results = check_model(model, rng.random((3, 6)), rng.standard_normal((3, 2)))
    failed = {r.name for r in results if not r.ok}
    assert failed == {k for k in model.params if k.startswith("encoder.")}


def test_rel_error_values():
    a = np.array([1.0, -2.0, 3.0])
    assert rel_error(a, a) == 0.0
    assert rel_error(a, -a) == pytest.approx(1.0)
    assert rel_error(a, 2 * a) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros((2, 3)), np.zeros((3, 2)))


def test_checker_catches_beta_on_the_reconstruction_instead_of_the_kl(monkeypatch):
    """At beta = 0.3 a backward that weighs the reconstruction by beta (and not the KL)
    is wrong in every parameter; at beta = 1 it would be right, so the value is fixed."""
    import npvae.vae as vae_module

    def backward_with_beta_on_recon(self):
        dout = 1.0 / self.x.shape[0]
        dz = self.decoder.backward(self.nll_backward(self.beta_now * dout, self.out, self.x))
        dmu, dlogvar = vae_module.reparameterize_backward(dz, self.logvar, self.eps)
        dmu_kl, dlogvar_kl = vae_module.gaussian_kl_backward(dout, self.mu, self.logvar)
        dh = np.concatenate([dmu + dmu_kl, dlogvar + dlogvar_kl], axis=1)
        self.encoder.backward(dh, need_dx=False)

    rng = np.random.default_rng(5)
    x, eps = rng.random((4, 6)), rng.standard_normal((4, 2))
    model = VAE(6, (5,), 2, activation="tanh", beta=0.3, dtype="float64", seed=3)
    assert all(r.ok for r in check_model(model, x, eps))  # the real backward passes
    monkeypatch.setattr(vae_module.VAE, "backward", backward_with_beta_on_recon)
    assert not any(r.ok for r in check_model(model, x, eps))


def test_noise_floor_is_pinned():
    """The floor of the relative error: 1e-4 for losses up to 1, then 1e-4 |L|."""
    assert noise_floor(0.0) == noise_floor(0.5) == noise_floor(1.0) == 1e-4
    assert noise_floor(500.0) == pytest.approx(0.05, rel=1e-15)
    assert noise_floor(-500.0) == 1e-4  # the checks pass magnitudes; a negative is no scale


def test_a_one_percent_error_in_small_gradients_is_caught_at_a_large_loss(monkeypatch):
    """A 784-pixel model at a loss of about 540 nats, with data close to the decoder's own
    means, so the output bias's gradient is about 1e-3 per entry: 1% too large, it is
    flagged. A floor loosened ten-thousandfold (1e-4 |L| to |L|) would let it pass."""
    from npvae.activations import sigmoid

    rng = np.random.default_rng(0)
    model = VAE(784, (4,), 2, activation="tanh", dtype="float64", seed=0)
    eps = rng.standard_normal((3, 2))
    model.forward(rng.random((3, 784)), eps=eps)
    x = np.clip(sigmoid(model.out) + rng.normal(0.0, 2e-3, model.out.shape), 0.0, 1.0)
    terms = model.forward(x, eps=eps)
    model.backward()
    small = "decoder.2.b"
    assert 400 < float(terms.loss) < 700
    assert 1e-5 < np.abs(model.grads[small]).max() < 1e-2
    original = VAE.backward

    def one_percent_off(self):
        original(self)
        self.grads[small] *= 1.01

    monkeypatch.setattr(VAE, "backward", one_percent_off)
    results = {r.name: r for r in check_model(model, x, eps)}
    assert not results[small].ok, results[small]
    assert all(r.ok for name, r in results.items() if name != small)
