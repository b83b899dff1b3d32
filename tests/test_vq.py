"""Vector quantization and the VQ-VAE by hand (``npvae.vq``, ``npvae.vqvae``).

- the distances and nearest codes against a direct (N, K, D) computation;
- central differences in float64 for every piece that has a derivative, with
  the codes held fixed: the codebook loss with respect to the codebook, the
  commitment loss with respect to z_e, the decoder's parameters, and the
  encoder's through the straight-through path (the gradient of the model
  with the quantizer replaced by the identity plus a constant offset);
- the straight-through backward hands the encoder dz_q itself, and that is
  not the true derivative (which is 0 through the argmin);
- planted bugs are caught: a sign, a missing beta, the stop-gradients swapped,
  the decoder's gradient sent into the codebook;
- the EMA update against a direct loop over codes; dead-code restarts equal
  under one seed; perplexity and dead codes;
- a PyTorch replica in float64 (``.detach()`` as sg[.]) gives the same loss
  terms and every gradient (skipped without PyTorch, except in CI);
- bad arguments are one-line ConfigErrors.
"""

import numpy as np
import pytest

from npvae.errors import ConfigError
from npvae.gradcheck import DEFAULT_TOL, biases_off_zero, noise_floor, numerical_gradient, rel_error
from npvae.vq import VectorQuantizer, dead_codes, perplexity, squared_distances
from npvae.vqvae import VQVAE, check_gradients
from tests.torch_or_skip import import_torch


def quantizer(update="gradient", n_codes=5, dim=3, beta=0.25, seed=0, **kwargs):
    return VectorQuantizer(n_codes, dim, beta=beta, update=update,
                           rng=np.random.default_rng(seed), dtype=np.float64, **kwargs)


def small_model(update="gradient", activation="tanh", seed=3):
    """An 8 x 8 VQ-VAE: a 2 x 2 grid of 3-dimensional vectors, 5 codes."""
    return VQVAE(64, (2, 3), embedding_dim=3, n_codes=5, update=update, activation=activation,
                 dtype="float64", seed=seed)


def z_e_near_codes(q, rng, shape):
    """z_e (B, D, *grid) scattered around the codes, so that every code is someone's nearest."""
    B, D, *grid = shape
    codes = rng.integers(0, q.n_codes, (B, *grid))
    return q.lookup(codes) + 0.02 * rng.standard_normal(shape)


# ---------------------------------------------------------------- forward


def test_distances_and_nearest_codes_match_a_direct_computation():
    rng = np.random.default_rng(0)
    q = quantizer(n_codes=7, dim=4)
    z_e = rng.standard_normal((3, 4, 2, 5)) * 0.05
    rows = np.moveaxis(z_e, 1, -1).reshape(-1, 4)
    direct = ((rows[:, None, :] - q.codebook[None, :, :]) ** 2).sum(axis=-1)
    np.testing.assert_allclose(squared_distances(rows, q.codebook), direct, rtol=1e-12, atol=1e-15)
    codes = q.nearest(z_e)
    assert codes.shape == (3, 2, 5)
    np.testing.assert_array_equal(codes.reshape(-1), direct.argmin(axis=1))
    z_q, _, terms = q.forward(z_e)
    np.testing.assert_array_equal(np.moveaxis(z_q, 1, -1).reshape(-1, 4), q.codebook[codes.reshape(-1)])
    by_example = ((z_e - z_q) ** 2).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(terms.codebook, by_example, rtol=1e-14)
    np.testing.assert_allclose(terms.commitment, 0.25 * by_example, rtol=1e-14)


def test_a_vector_on_a_code_has_distance_zero_not_negative():
    q = quantizer(n_codes=4, dim=3)
    rows = 1e3 + q.codebook.copy()           # far from 0: the expansion cancels badly
    q.codebook[...] += 1e3
    assert (squared_distances(rows, q.codebook) >= 0).all()
    np.testing.assert_array_equal(q.nearest(rows), np.arange(4))


def test_perplexity_and_dead_codes():
    assert perplexity(np.array([5, 5, 5, 5])) == pytest.approx(4.0)
    assert perplexity(np.array([0, 9, 0, 0])) == pytest.approx(1.0)
    p = np.array([0.5, 0.25, 0.25])
    assert perplexity(np.array([2, 1, 1, 0])) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    np.testing.assert_array_equal(dead_codes(np.array([2, 0, 1, 0])), [1, 3])


# ---------------------------------------------------------------- the layer's gradients


def vq_check(q, rng, shape=(3, 3, 2, 2)):
    """Relative errors of the layer's two loss gradients against central differences.

    With the codes held fixed, the codebook loss sum_b dterms_b codebook_b is
    differentiated with respect to the codebook (z_e constant: sg[z_e]) and
    the commitment loss with respect to z_e (the codebook constant: sg[e]).
    The backward is called with dz_q = 0, so its dz_e is the commitment's
    gradient alone, and its codebook gradient the codebook loss's alone.
    """
    z_e = z_e_near_codes(q, rng, shape)
    dterms = rng.standard_normal(shape[0])
    _, codes, terms = q.forward(z_e)
    dz_e = q.backward(np.zeros_like(z_e), dterms)
    dcodebook = q.grads["codebook"].copy()

    def codebook_loss():
        return float(dterms @ q.forward(z_e, codes)[2].codebook)

    def commitment_loss():
        return float(dterms @ q.forward(z_e, codes)[2].commitment)

    floor = noise_floor(np.abs(dterms) @ (terms.codebook + terms.commitment))
    return {"codebook": rel_error(dcodebook, numerical_gradient(codebook_loss, q.codebook), floor),
            "z_e": rel_error(dz_e, numerical_gradient(commitment_loss, z_e), floor)}


@pytest.mark.parametrize("seed", range(3))
def test_codebook_and_commitment_gradients(seed):
    errors = vq_check(quantizer(seed=seed), np.random.default_rng(seed))
    assert max(errors.values()) <= DEFAULT_TOL, errors


def test_straight_through_hands_the_encoder_the_decoders_gradient():
    """With the losses' weights at 0, dz_e is dz_q itself: the identity's backward. With
    them, the commitment's 2 beta dterms (z_e - z_q) is added and nothing else."""
    rng = np.random.default_rng(1)
    q = quantizer()
    z_e = z_e_near_codes(q, rng, (2, 3, 2, 2))
    z_q, _, _ = q.forward(z_e)
    dz_q = rng.standard_normal(z_e.shape)
    np.testing.assert_array_equal(q.backward(dz_q, 0.0), dz_q)
    np.testing.assert_allclose(q.backward(dz_q, 0.5), dz_q + 2 * 0.25 * 0.5 * (z_e - z_q),
                               rtol=1e-14)


class FlippedSign(VectorQuantizer):
    """The codebook gradient with the wrong sign: 2 (z_e - z_q)."""

    def backward(self, dz_q, dterms):
        dz_e = super().backward(dz_q, dterms)
        self.grads["codebook"] *= -1
        return dz_e


class MissingBeta(VectorQuantizer):
    """The commitment's gradient without its beta: dz_e = dz_q + 2 dterms (z_e - z_q)."""

    def backward(self, dz_q, dterms):
        dz_e = super().backward(dz_q, dterms)
        return dz_q + (dz_e - dz_q) / self.beta


class SwappedStopGradients(VectorQuantizer):
    """sg[.] on the wrong side: the commitment's gradient sent to the codebook and the
    codebook loss's to the encoder (each the true derivative of the other term)."""

    def backward(self, dz_q, dterms):
        dz_e = super().backward(dz_q, dterms)
        self.grads["codebook"] *= self.beta
        return dz_q + (dz_e - dz_q) / self.beta


@pytest.mark.parametrize("bug, wrong", [(FlippedSign, {"codebook"}), (MissingBeta, {"z_e"}),
                                        (SwappedStopGradients, {"codebook", "z_e"})])
def test_checker_catches_vq_bugs(bug, wrong):
    q = bug(5, 3, beta=0.25, rng=np.random.default_rng(0), dtype=np.float64)
    errors = vq_check(q, np.random.default_rng(0))
    assert {name for name, e in errors.items() if e > DEFAULT_TOL} == wrong, errors
    assert min(errors[name] for name in wrong) > 0.5, errors


# ---------------------------------------------------------------- the model's gradients


def model_case(update="gradient", seed=3):
    model = small_model(update, seed=seed)
    rng = np.random.default_rng(seed)
    biases_off_zero(model, rng)
    x = rng.random((3, 64))
    terms = model.forward(x)
    model.backward()
    return model, x, terms, {k: g.copy() for k, g in model.grads.items()}


@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_vqvae_gradients_with_the_codes_held_fixed(update):
    """Decoder: the loss's own derivative (the codes fixed, z_q is the codebook's rows).
    Codebook: the codebook loss's derivative alone (the decoder's gradient stops at z_q).
    Encoder: the derivative of the straight-through surrogate, not of the loss."""
    model, x, terms, grads = model_case(update)
    results = check_gradients(model, x)
    assert [r.name for r in results] == list(grads)
    assert ("quantizer.codebook" in grads) == (update == "gradient")
    assert all(r.ok for r in results), [str(r) for r in results]
    for name, grad in model.grads.items():    # the check's own backward gave the same gradients
        np.testing.assert_array_equal(grad, grads[name])


def test_the_straight_through_gradient_is_not_the_true_one():
    """With the codes held, z_q does not move with the encoder, so the loss's true derivative
    in the encoder's weights holds only the commitment's part; the straight-through one adds
    the decoder's gradient: they differ by order 1."""
    model, x, terms, grads = model_case()
    codes = model.codes.copy()

    def loss():
        return float(model.forward(x, codes=codes).loss)

    name = "encoder.1.W"
    true = numerical_gradient(loss, model.params[name])
    assert rel_error(grads[name], true) > 0.1


class DecoderIntoCodebook(VectorQuantizer):
    """The decoder's gradient also added to the codebook (sg[.] forgotten in z_q = z_e +
    sg[e - z_e]): dcodebook += onehot^T dz_q."""

    def backward(self, dz_q, dterms):
        dz_e = super().backward(dz_q, dterms)
        self.grads["codebook"] += self.onehot(self.codes).T @ self.to_rows(dz_q)
        return dz_e


def test_checker_catches_the_decoders_gradient_in_the_codebook():
    model, x, _, _ = model_case()
    model.quantizer.__class__ = DecoderIntoCodebook
    results = {r.name: r for r in check_gradients(model, x)}
    assert {name for name, r in results.items() if not r.ok} == {"quantizer.codebook"}
    assert results["quantizer.codebook"].rel_error > 1e-2


def test_ema_model_leaves_the_codebook_loss_out_of_the_loss():
    model, x, terms, _ = model_case("ema")
    assert float(terms.loss) == pytest.approx(float(terms.recon + terms.commitment), rel=1e-14)
    assert float(terms.codebook) == pytest.approx(float(terms.commitment) / 0.25, rel=1e-14)
    model, x, terms, _ = model_case("gradient")
    assert float(terms.loss) == pytest.approx(
        float(terms.recon + terms.codebook + terms.commitment), rel=1e-14)


# ---------------------------------------------------------------- codebook updates


def test_ema_update_matches_a_direct_computation():
    rng = np.random.default_rng(4)
    q = quantizer("ema", n_codes=6, dim=3, decay=0.9, epsilon=1e-3)
    count, total = q.buffers["ema_count"].copy(), q.buffers["ema_sum"].copy()
    for step in range(3):
        z_e = z_e_near_codes(q, rng, (4, 3, 2, 2))
        _, codes, _ = q.forward(z_e)
        q.ema_update()
        rows = np.moveaxis(z_e, 1, -1).reshape(-1, 3)
        flat = codes.reshape(-1)
        for k in range(6):
            count[k] = 0.9 * count[k] + 0.1 * (flat == k).sum()
            total[k] = 0.9 * total[k] + 0.1 * rows[flat == k].sum(axis=0)
        n = count.sum()
        expected = np.array([total[k] / ((count[k] + 1e-3) / (n + 6 * 1e-3) * n) for k in range(6)])
        np.testing.assert_allclose(q.buffers["ema_count"], count, rtol=1e-13)
        np.testing.assert_allclose(q.buffers["ema_sum"], total, rtol=1e-13)
        np.testing.assert_allclose(q.codebook, expected, rtol=1e-12)


def test_ema_update_with_no_memory_puts_each_used_code_at_its_vectors_mean():
    """decay 0: e_k = (the mean of the vectors given code k), up to the smoothing's 1e-8."""
    rng = np.random.default_rng(5)
    q = quantizer("ema", n_codes=4, dim=2, decay=0.0, epsilon=1e-10)
    z_e = z_e_near_codes(q, rng, (6, 2, 3))
    _, codes, _ = q.forward(z_e)
    q.ema_update()
    rows, flat = np.moveaxis(z_e, 1, -1).reshape(-1, 2), codes.reshape(-1)
    for k in np.unique(flat):
        np.testing.assert_allclose(q.codebook[k], rows[flat == k].mean(axis=0), rtol=1e-8)


def test_dead_code_restarts_are_deterministic_under_a_seed():
    def restarted(seed, update):
        model = VQVAE(64, (2, 3), embedding_dim=3, n_codes=20, update=update, dtype="float64",
                      seed=3)
        x = np.random.default_rng(3).random((3, 64))
        model.forward(x)
        counts, dead = model.restart_dead_codes(np.random.default_rng(seed))
        return counts, dead, model.quantizer.codebook.copy(), model

    for update in ("gradient", "ema"):
        counts, dead, codebook, model = restarted(0, update)
        assert counts.sum() == 3 * 4 and dead.size >= 8         # 12 positions, 20 codes
        np.testing.assert_array_equal(dead, dead_codes(counts))
        rows = np.moveaxis(model.z_e, 1, -1).reshape(-1, 3)
        for k in dead:                                           # each restarted onto a z_e row
            assert np.isclose(rows, codebook[k]).all(axis=1).any()
        again = restarted(0, update)
        np.testing.assert_array_equal(codebook, again[2])
        assert not np.array_equal(codebook, restarted(1, update)[2])
        if update == "ema":
            np.testing.assert_array_equal(model.quantizer.buffers["ema_sum"][dead], codebook[dead])
            np.testing.assert_array_equal(model.quantizer.buffers["ema_count"][dead], 1)
        assert model.quantizer.reset_usage().sum() == 0          # restarting reset the usage


# ---------------------------------------------------------------- PyTorch


TORCH_TOL = 1e-10


def torch_vqvae(model, x, torch):
    """The same VQ-VAE in PyTorch (float64), from the model's weights: its loss terms and the
    leaf tensors. sg[.] is ``.detach()``; the straight-through z_q is z_e + (e[k] - z_e).detach()."""
    from torch.nn import functional as F

    from npvae.conv import Conv2D, ConvTranspose2D, Reshape

    params = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}

    def stack(name, layers, h):
        for i, layer in enumerate(layers):
            W, b = params.get(f"{name}.{i}.W"), params.get(f"{name}.{i}.b")
            if isinstance(layer, Reshape):
                h = h.reshape(h.shape[0], *layer.shape)
            elif isinstance(layer, Conv2D):
                h = F.conv2d(h, W, b, stride=layer.stride, padding=layer.padding)
            elif isinstance(layer, ConvTranspose2D):
                h = F.conv_transpose2d(h, W, b, stride=layer.stride, padding=layer.padding,
                                       output_padding=layer.output_padding)
            else:
                h = getattr(torch, model.config["activation"])(h)
        return h

    x = torch.tensor(x)
    z_e = stack("encoder", model.encoder.layers, x)
    e = params["quantizer.codebook"]
    rows = z_e.permute(0, 2, 3, 1).reshape(-1, e.shape[1])
    codes = torch.cdist(rows, e).argmin(dim=1)
    e_k = e[codes].reshape(z_e.shape[0], z_e.shape[2], z_e.shape[3], -1).permute(0, 3, 1, 2)
    z_q = z_e + (e_k - z_e).detach()
    logits = stack("decoder", model.decoder.layers, z_q)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
    codebook = ((z_e.detach() - e_k) ** 2).sum() / x.shape[0]
    commitment = model.quantizer.beta * ((z_e - e_k.detach()) ** 2).sum() / x.shape[0]
    return (recon + codebook + commitment, recon, codebook, commitment), codes, params


def test_vqvae_matches_pytorch_autograd():
    torch = import_torch()  # skipped without PyTorch, except in CI
    model = VQVAE(64, (3, 4), embedding_dim=3, n_codes=6, dtype="float64", seed=2)
    x = np.random.default_rng(2).random((4, 64))
    terms = model.forward(x)
    model.backward()
    theirs, codes, params = torch_vqvae(model, x, torch)
    theirs[0].backward()
    np.testing.assert_array_equal(model.codes.reshape(-1), codes.numpy())
    for ours, other in zip(terms, theirs):
        assert float(ours) == pytest.approx(other.item(), rel=TORCH_TOL)
    for name, grad in model.grads.items():
        assert rel_error(grad, params[name].grad.numpy()) <= TORCH_TOL, name


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("kwargs, match", [
    (dict(update="adam"), "update='adam' is unknown; choose one of gradient, ema"),
    (dict(decay=1.0), r"decay=1.0 must be in \[0, 1\)"),
    (dict(decay=-0.1), "decay=-0.1 must be a non-negative number"),
    (dict(n_codes=0), "n_codes=0 must be a positive integer"),
    (dict(embedding_dim=2.5), "embedding_dim=2.5 must be a positive integer"),
    (dict(beta=float("nan")), "beta=nan must be a non-negative number"),
    (dict(epsilon=0), "epsilon=0 must be a positive number"),
    (dict(x_dim=60), "square images whose side divides by 2"),
    (dict(decoder_hidden=(4,)), "must hold 2 channel counts"),
    (dict(likelihood="gaussian"), "likelihood='gaussian' is unknown; choose one of bernoulli"),
])
def test_bad_vqvae_arguments_are_one_line_config_errors(kwargs, match):
    args = {"x_dim": 64, "hidden": (2, 3), **kwargs}
    with pytest.raises(ConfigError, match=match) as info:
        VQVAE(**args)
    assert "\n" not in str(info.value)


def test_the_config_rebuilds_the_same_model():
    for update in ("gradient", "ema"):
        model = small_model(update)
        again = VQVAE(**model.config, seed=3)
        assert again.config == model.config
        np.testing.assert_array_equal(again.theta, model.theta)
        np.testing.assert_array_equal(again.quantizer.codebook, model.quantizer.codebook)


def test_bad_codes_and_shapes_are_one_line_config_errors():
    q = quantizer()
    for codes, match in ((np.array([[0, 5]]), r"codes must lie in \[0, 5\)"),
                         (np.array([[-1, 0]]), r"codes must lie in \[0, 5\)"),
                         (np.array([[0.0, 1.0]]), "codes must be an integer array")):
        with pytest.raises(ConfigError, match=match):
            q.lookup(codes)
    with pytest.raises(ConfigError, match=r"z_e of shape \(batch, 3, ...\)"):
        q.forward(np.zeros((2, 4, 2, 2)))
    with pytest.raises(ConfigError, match=r"codes must have shape \(2, 2, 2\)"):
        q.forward(np.zeros((2, 3, 2, 2)), codes=np.zeros((2, 4), dtype=int))
    with pytest.raises(ConfigError, match="update='ema'"):
        q.ema_update()
