"""The VQ-VAE and its MADE prior against PyTorch's autograd, in float64 (skipped without PyTorch).

The other side is ``benchmarks/torch_vqvae.py``, the replica that
``benchmarks/compare_vqvae_torch.py`` races against: ``nn.Conv2d`` and
``nn.ConvTranspose2d`` layers, sg[.] as ``.detach()``, the straight-through
z_q = z_e + (E[c] - z_e).detach(), on npvae's weights. So these tests prove
both that npvae's hand-written gradients are autograd's and that the
benchmark compares the same model:

- the codes chosen are the same, the four loss terms agree, and every
  gradient (encoder, decoder, codebook) agrees within 1e-10, for both
  codebook updates (no codebook gradient under ``ema``), relu and tanh, and a
  commitment weight other than 0.25;
- the quantizer alone, with an arbitrary upstream gradient dz_q and per-example
  weights of its two losses: dz_e and the codebook's gradient;
- an epoch of npvae's ``fit`` (the steps ``npvae train`` takes, dead codes
  restarted on its schedule) and of the replica's trainer (``torch.optim.Adam``,
  the moving averages written from the formula in torch operations, restarts
  with npvae's generators) give the same weights, codebook, moving counts and
  sums; dead-code restarts with one seed move the same codes to the same
  vectors; the replica's moving averages equal the formula written in NumPy;
- the MADE prior: every masked layer's W and b and the categorical NLL's
  gradient (per-example weights too), and a masked layer's dx;
- planted bugs are caught by the same comparisons: the straight-through term
  dropped, the commitment's factor lambda dropped, the decoder's gradient let
  into the codebook, a MADE weight gradient without its mask, the
  cross-entropy's gradient without its one-hot.
"""

import numpy as np
import pytest

from npvae.gradcheck import biases_off_zero, rel_error
from npvae.made import MADE, MaskedDense, categorical_nll, categorical_nll_backward, masks
from npvae.optim import Adam
from npvae.randomness import epoch_generators
from npvae.train import fit
from npvae.vq import VectorQuantizer
from npvae.vqvae import VQVAE
from tests.torch_or_skip import import_torch, load_benchmark

torch = import_torch()  # skipped without PyTorch, except in CI (NPVAE_REQUIRE_TORCH=1)
F = torch.nn.functional

TOL = 1e-10
BUG = 1e-3          # a planted bug must be wrong by at least this (relative error)


def t(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


# ---------------------------------------------------------------- the VQ-VAE


def batch(rng, B=5):
    return rng.random((B, 144))


def small_model(update="gradient", activation="relu", beta=0.25, seed=2):
    """A 12 x 12 VQ-VAE in float64: a 3 x 3 grid of 3-dimensional vectors, 6 codes, the
    codes moved near the encoder's vectors of ``batch`` (so that most are chosen)."""
    model = VQVAE(144, (3, 4), embedding_dim=3, n_codes=6, beta=beta, update=update,
                  activation=activation, dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    biases_off_zero(model, rng)
    rows = model.quantizer.to_rows(model.encoder.forward(batch(np.random.default_rng(0))))
    pick = rng.choice(len(rows), model.quantizer.n_codes, replace=False)
    model.quantizer.codebook[...] = rows[pick] + 0.01 * rng.standard_normal((6, 3))
    return model


def replica(model):
    """The benchmark's PyTorch replica of ``model``, on its weights, in float64."""
    torch_vqvae = load_benchmark("torch_vqvae")
    return torch_vqvae.TorchVQVAE(model.config, torch_vqvae.weights_from_npvae(model),
                                  dtype=torch.float64)


def autograd_errors(model, x):
    """npvae's loss terms and gradients against the replica's autograd on the same batch.

    Returns ``(codes equal, {term or parameter name: relative error})``; the
    replica's parameters are matched to npvae's names in order (encoder,
    decoder, codebook), their shapes checked.
    """
    terms = model.forward(x)
    model.backward()
    other = replica(model)
    theirs = other.forward(t(x))
    theirs[0].backward()
    same_codes = np.array_equal(model.codes.reshape(-1), other.codes.numpy())
    errors = {name: rel_error(ours, their.item()) for name, ours, their
              in zip(("loss", "recon", "codebook", "commitment"), terms, theirs)}
    tensors = other.parameters()
    assert len(tensors) == len(model.grads)
    for (name, grad), tensor in zip(model.grads.items(), tensors):
        assert grad.shape == tuple(tensor.shape), name
        errors[name] = rel_error(grad, tensor.grad.numpy())
    return same_codes, errors


@pytest.mark.parametrize("update, activation, beta", [
    ("gradient", "relu", 0.25), ("gradient", "tanh", 0.7), ("ema", "relu", 0.25),
    ("ema", "tanh", 0.4)])
def test_every_vqvae_gradient_matches_autograd(update, activation, beta):
    model = small_model(update, activation, beta)
    same_codes, errors = autograd_errors(model, batch(np.random.default_rng(0)))
    assert same_codes
    assert len(np.unique(model.codes)) >= 3            # several codes: A^T spreads the rows
    assert ("quantizer.codebook" in errors) == (update == "gradient")
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_the_quantizer_alone_matches_autograd(update):
    """dz_e and dE from an arbitrary dz_q and per-example weights dterms of the two losses:
    autograd of sum(dz_q * z_q) + sum_b dterms_b (codebook_b + commitment_b) with
    z_q = z_e + sg[E[c] - z_e]."""
    rng = np.random.default_rng(1)
    q = VectorQuantizer(7, 4, beta=0.3, update=update, rng=rng, dtype=np.float64)
    z_e = 0.05 * rng.standard_normal((3, 4, 2, 5))
    dz_q, dterms = rng.standard_normal(z_e.shape), rng.standard_normal(3)
    _, codes, _ = q.forward(z_e)
    dz_e = q.backward(dz_q, dterms)

    z, E = t(z_e, grad=True), t(q.codebook, grad=True)
    rows = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    chosen = torch.cdist(rows, E.detach()).argmin(dim=1)     # a different distance code
    e = E[chosen].reshape(3, 2, 5, 4).permute(0, 3, 1, 2)
    z_q = z + (e - z).detach()
    codebook = ((z.detach() - e) ** 2).sum(dim=(1, 2, 3))
    commitment = 0.3 * ((z - e.detach()) ** 2).sum(dim=(1, 2, 3))
    ((t(dz_q) * z_q).sum() + (t(dterms) * (codebook + commitment)).sum()).backward()

    np.testing.assert_array_equal(codes.reshape(-1), chosen.numpy())
    assert len(np.unique(codes)) >= 4
    assert rel_error(dz_e, z.grad.numpy()) <= TOL
    if update == "gradient":
        assert rel_error(q.grads["codebook"], E.grad.numpy()) <= TOL
    else:
        assert q.grads == {}


def vq_backward_without(part):
    """VectorQuantizer.backward with a planted bug: the straight-through term dz_q dropped,
    the commitment's lambda dropped, or the decoder's gradient sent into the codebook."""
    original = VectorQuantizer.backward

    def backward(self, dz_q, dterms):
        dz_e = original(self, dz_q, dterms)
        if part == "straight-through":
            return dz_e - dz_q
        if part == "lambda":
            return dz_q + (dz_e - dz_q) / self.beta
        self.grads["codebook"] += self.onehot(self.codes).T @ self.to_rows(dz_q)
        return dz_e
    return backward


@pytest.mark.parametrize("part, wrong", [
    ("straight-through", "encoder."), ("lambda", "encoder."), ("sg", "quantizer.codebook")])
def test_autograd_catches_planted_vq_bugs(monkeypatch, part, wrong):
    monkeypatch.setattr(VectorQuantizer, "backward", vq_backward_without(part))
    model = small_model()
    same_codes, errors = autograd_errors(model, batch(np.random.default_rng(0)))
    assert same_codes
    bad = {name for name, e in errors.items() if e > TOL}
    assert bad and all(name.startswith(wrong) for name in bad), errors
    assert max(errors[name] for name in bad) > BUG, errors
    assert all(errors[name] <= TOL for name in errors if name.startswith("decoder."))


# ---------------------------------------------------------------- training steps, EMA, restarts


def replica_state(trainer):
    """The replica's weights and codebook as NumPy arrays, in ``weights_from_npvae``'s order."""
    model = trainer.model
    return [p.detach().numpy() for p in model.layer_parameters() + [model.codebook]]


@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_npvae_fit_and_the_replica_take_the_same_steps(update):
    """An epoch of ``npvae.train.fit`` (``train_step``: forward, backward, Adam,
    ``update_codebook``; dead codes restarted every 2 steps as ``npvae train`` does) and of
    the replica's trainer, from the same weights on the same batches: the same weights,
    codebook and moving counts and sums after (npvae's ``ema_update`` against the formula
    in torch operations), and the restarts mattered (without them the codebook differs).
    Then restarts with one generator on both sides move the same codes to the same vectors."""
    torch_vqvae = load_benchmark("torch_vqvae")
    model = VQVAE(144, (3, 4), embedding_dim=3, n_codes=12, update=update, decay=0.8,
                  dtype="float64", seed=4)
    x = np.random.default_rng(4).random((24, 144))
    start = [a.copy() for a in torch_vqvae.weights_from_npvae(model)]
    trainers = [torch_vqvae.TorchVQTrainer(x, model.config, start, batch_size=6, lr=1e-2,
                                           dtype=torch.float64, restart_every=every, seed=5)
                for every in (2, 0)]
    fit(model, Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=1e-2), x, epochs=1,
        batch_size=6, seed=5, restart_every=2, log=lambda line: None)
    order = epoch_generators(5, 0)[0].permutation(len(x))
    usage = [trainer.epoch(order)[1] for trainer in trainers]
    assert usage[0].sum() == len(x) * 9                 # every position of every batch
    ours = torch_vqvae.weights_from_npvae(model)
    theirs, unrestarted = (replica_state(trainer) for trainer in trainers)
    assert max(rel_error(a, b) for a, b in zip(ours, theirs)) <= 1e-9
    assert rel_error(ours[-1], start[-1]) > 1e-3       # the codebook did move
    assert rel_error(ours[-1], unrestarted[-1]) > 1e-3  # and the restarts moved it
    if update == "ema":
        buffers, other = model.quantizer.buffers, trainers[0].model
        assert rel_error(buffers["ema_count"], other.ema_count.numpy()) <= 1e-12
        assert rel_error(buffers["ema_sum"], other.ema_sum.numpy()) <= 1e-9

    counts, dead = model.restart_dead_codes(np.random.default_rng(9))
    their_counts, their_dead = trainers[0].model.restart_dead_codes(np.random.default_rng(9))
    np.testing.assert_array_equal(counts, their_counts)
    np.testing.assert_array_equal(dead, their_dead)
    assert dead.size >= 1                              # 12 codes, few used: some restarted
    assert rel_error(model.quantizer.codebook, replica_state(trainers[0])[-1]) <= 1e-9


def test_the_replicas_ema_is_the_formula():
    """One moving-average step of the replica against the formula of derivations.md written
    out in NumPy, code by code: nbar_v, mbar_v, then E_v = mbar_v / ntilde_v."""
    torch_vqvae = load_benchmark("torch_vqvae")
    model = VQVAE(144, (3, 4), embedding_dim=3, n_codes=6, update="ema", decay=0.7,
                  epsilon=1e-3, dtype="float64", seed=2)
    other = torch_vqvae.TorchVQVAE(model.config, torch_vqvae.weights_from_npvae(model),
                                   dtype=torch.float64)
    count, total = other.ema_count.numpy().copy(), other.ema_sum.numpy().copy()
    other.forward(t(batch(np.random.default_rng(3))))
    other.ema_update()
    rows, codes = other.rows.numpy(), other.codes.numpy()
    N = len(count)
    count = 0.7 * count + 0.3 * np.bincount(codes, minlength=N)
    total = 0.7 * total + 0.3 * np.array([rows[codes == v].sum(axis=0) for v in range(N)])
    n = count.sum()
    expected = total / ((count + 1e-3) / (n + N * 1e-3) * n)[:, None]
    np.testing.assert_allclose(other.codebook.numpy(), expected, rtol=1e-12)
    assert len(np.unique(codes)) >= 3


# ---------------------------------------------------------------- the MADE prior


def made_autograd_errors(made, codes, dout=None):
    """npvae's MADE gradients against autograd: the masked layers rebuilt in torch on the
    same weights and masks, the NLL from ``F.cross_entropy``; ``dout`` (B,) weights each
    example's NLL (default: the batch mean, the prior's loss)."""
    B = len(codes)
    if dout is None:
        loss = made.forward(codes)
        made.backward()
        dout = np.full(B, 1.0 / B)
    else:
        logits = made.logits(codes)
        loss = float(dout @ categorical_nll(logits, codes))
        dlogits = categorical_nll_backward(dout, logits, codes)
        made.net.backward(dlogits.reshape(B, -1), need_dx=False)
    params = {k: t(v, grad=True) for k, v in made.params.items()}
    h = F.one_hot(torch.tensor(codes), made.n_codes).reshape(B, -1).double()
    dense = [i for i, layer in enumerate(made.net.layers) if isinstance(layer, MaskedDense)]
    act = {"relu": torch.relu, "tanh": torch.tanh}[made.config["activation"]]
    for j, i in enumerate(dense):
        h = h @ (params[f"{i}.W"] * t(made.net.layers[i].mask)) + params[f"{i}.b"]
        h = act(h) if j < len(dense) - 1 else h
    logits = h.reshape(B, made.n_positions, made.n_codes)
    nll = F.cross_entropy(logits.permute(0, 2, 1), torch.tensor(codes), reduction="none").sum(1)
    theirs = (t(dout) * nll).sum()
    theirs.backward()
    errors = {"loss": rel_error(float(loss), theirs.item())}
    errors.update({name: rel_error(grad, params[name].grad.numpy())
                   for name, grad in made.grads.items()})
    return errors, dense


def tiny_made(hidden=(8, 7, 6), activation="tanh", seed=0):
    made = MADE(5, 4, hidden, activation=activation, dtype="float64", seed=seed)
    biases_off_zero(made, np.random.default_rng(seed))
    return made


@pytest.mark.parametrize("hidden, activation", [((8, 7, 6), "tanh"), ((9,), "relu"),
                                                ((6, 8), "relu")])
def test_every_made_gradient_matches_autograd(hidden, activation):
    made = tiny_made(hidden, activation)
    rng = np.random.default_rng(1)
    codes = rng.integers(0, made.n_codes, (6, made.n_positions))
    errors, dense = made_autograd_errors(made, codes)
    assert len(dense) == len(hidden) + 1
    assert set(errors) == {"loss"} | {f"{i}.{k}" for i in dense for k in ("W", "b")}
    assert max(errors.values()) <= TOL, errors
    for i in dense:                    # the masked weights get exactly no gradient
        assert not made.grads[f"{i}.W"][made.net.layers[i].mask == 0].any()
    errors, _ = made_autograd_errors(made, codes, dout=rng.standard_normal(6))
    assert max(errors.values()) <= TOL, errors


def test_a_masked_layers_dx_matches_autograd():
    rng = np.random.default_rng(2)
    mask = masks(4, 3, (7,))[1]                            # the output layer's: degree >
    layer = MaskedDense(7, 12, mask, rng=rng, init="glorot", dtype=np.float64)
    x, dout = rng.standard_normal((5, 7)), rng.standard_normal((5, 12))
    layer.forward(x)
    dx = layer.backward(dout)
    xt, W, b = t(x, grad=True), t(layer.params["W"], grad=True), t(layer.params["b"], grad=True)
    ((xt @ (W * t(mask)) + b) * t(dout)).sum().backward()
    for ours, theirs in ((dx, xt), (layer.grads["W"], W), (layer.grads["b"], b)):
        assert rel_error(ours, theirs.grad.numpy()) <= TOL


def test_autograd_catches_planted_made_bugs(monkeypatch):
    made = tiny_made()
    codes = np.random.default_rng(3).integers(0, made.n_codes, (6, made.n_positions))
    with monkeypatch.context() as patch:                   # dW without its mask
        original = MaskedDense.backward

        def unmasked(self, dout, need_dx=True):
            dx = original(self, dout, need_dx)
            self.grads["W"][...] = self.x.T @ dout
            return dx

        patch.setattr(MaskedDense, "backward", unmasked)
        errors, dense = made_autograd_errors(made, codes)
    wrong = {name for name, e in errors.items() if e > TOL}
    assert wrong == {f"{i}.W" for i in dense} and min(errors[n] for n in wrong) > BUG, errors

    import npvae.made as made_module

    def no_onehot(dout, logits, codes):                    # softmax, the -1 forgotten
        return np.exp(made_module.log_softmax(logits)) * dout
    monkeypatch.setattr(made_module, "categorical_nll_backward", no_onehot)
    errors, _ = made_autograd_errors(tiny_made(), codes)
    assert all(errors[name] > BUG for name in errors if name != "loss"), errors
