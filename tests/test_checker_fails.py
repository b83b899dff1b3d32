"""The gradient checker can fail: backwards wrong by a sign, a factor of two
or a transpose are flagged, in layers, losses and the whole VAE."""

import numpy as np
import pytest

from npvae import VAE
from npvae.gradcheck import DEFAULT_TOL, check_function, check_layer, check_model, rel_error
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
