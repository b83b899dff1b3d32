"""npvae against PyTorch's autograd and optimizers, in float64 (skipped without PyTorch).

micrograd's way of proving itself: rerun the same computation in PyTorch and
assert that values and gradients agree. Here:

- the loss terms and every parameter gradient of a small random VAE (relu
  and tanh; Bernoulli and Gaussian likelihoods; beta != 1) equal autograd's
  on the same weights and the same eps, with PyTorch's own likelihoods and
  KL (``torch.distributions``), not npvae's formulas retyped;
- npvae's Adam (and its AdamW decay) after 5 steps equals ``torch.optim``'s
  on the same gradients;
- the PyTorch example that ``benchmarks/compare_torch.py`` races against
  (``benchmarks/torch_vae.py``), given npvae's weights, computes npvae's loss
  times the batch size (it sums over the batch) and its gradients likewise,
  so the benchmark compares the same model.
"""


import numpy as np
import pytest

from npvae import VAE
from npvae.optim import Adam
from tests.torch_or_skip import import_torch, load_benchmark

torch = import_torch()  # skipped without PyTorch, except in CI (NPVAE_REQUIRE_TORCH=1)

TOL = 1e-10


def t(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


def torch_mlp(h, params, prefix, n_layers, activation):
    """Dense layers ``{prefix}.{2i}.W``/``.b`` with the activation between (none after the last)."""
    act = {"relu": torch.relu, "tanh": torch.tanh}[activation]
    for i in range(n_layers):
        h = h @ params[f"{prefix}.{2 * i}.W"] + params[f"{prefix}.{2 * i}.b"]
        if i < n_layers - 1:
            h = act(h)
    return h


def torch_loss(params, x, eps, *, n_enc, n_dec, latent, activation, likelihood, sigma, beta):
    """The negative ELBO per example, from PyTorch's own distributions."""
    from torch.distributions import Normal, kl_divergence
    from torch.nn import functional as F

    h = torch_mlp(x, params, "encoder", n_enc, activation)
    mu, logvar = h[:, :latent], h[:, latent:]
    std = torch.exp(0.5 * logvar)
    z = mu + std * eps
    out = torch_mlp(z, params, "decoder", n_dec, activation)
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(1)
    else:
        nll = -Normal(out, sigma).log_prob(x).sum(1)
    kl = kl_divergence(Normal(mu, std), Normal(torch.zeros_like(mu), torch.ones_like(std))).sum(1)
    recon, kl = nll.mean(), kl.mean()
    return recon + beta * kl, recon, kl


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_loss_and_every_gradient_match_autograd(likelihood, activation):
    rng = np.random.default_rng(7)
    D, hidden, Z, B, sigma, beta = 9, (7, 5), 3, 6, 0.7, 0.6
    model = VAE(D, hidden, Z, activation=activation, likelihood=likelihood, sigma=sigma,
                beta=beta, dtype="float64", seed=3)
    for p in model.params.values():  # nonzero biases: exercise every gradient
        p += 0.1 * rng.standard_normal(p.shape)
    x = rng.random((B, D)) if likelihood == "bernoulli" else rng.standard_normal((B, D))
    eps = rng.standard_normal((B, Z))

    terms = model.forward(x, eps=eps)
    model.backward()

    params = {k: t(v, grad=True) for k, v in model.params.items()}
    loss, recon, kl = torch_loss(params, t(x), t(eps), n_enc=len(hidden) + 1,
                                 n_dec=len(hidden) + 1, latent=Z, activation=activation,
                                 likelihood=likelihood, sigma=sigma, beta=beta)
    loss.backward()

    for name, ours, theirs in (("loss", terms.loss, loss), ("recon", terms.recon, recon),
                               ("kl", terms.kl, kl)):
        np.testing.assert_allclose(float(ours), theirs.item(), rtol=TOL, atol=TOL, err_msg=name)
    assert set(model.grads) == set(params)
    for name, grad in model.grads.items():
        np.testing.assert_allclose(grad, params[name].grad.numpy(), rtol=TOL, atol=TOL,
                                   err_msg=name)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_matches_torch_after_five_steps(weight_decay):
    rng = np.random.default_rng(11)
    shapes = {"W": (4, 3), "b": (3,)}
    start = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads_per_step = [{k: rng.standard_normal(s) * 10.0 ** rng.integers(-3, 2)
                       for k, s in shapes.items()} for _ in range(5)]

    params = {k: v.copy() for k, v in start.items()}
    grads = {k: np.zeros(s) for k, s in shapes.items()}
    ours = Adam(params, grads, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    theirs_params = [t(start[k], grad=True) for k in shapes]
    cls = torch.optim.AdamW if weight_decay else torch.optim.Adam
    theirs = cls(theirs_params, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)

    for step in grads_per_step:
        for k in shapes:
            grads[k][...] = step[k]
        ours.step()
        for p, k in zip(theirs_params, shapes):
            p.grad = t(step[k])
        theirs.step()

    for p, k in zip(theirs_params, shapes):
        np.testing.assert_allclose(params[k], p.detach().numpy(), rtol=1e-12, atol=1e-12,
                                   err_msg=k)


def test_benchmark_reference_is_npvaes_model_summed_over_the_batch(monkeypatch):
    torch_vae = load_benchmark("torch_vae")
    rng = np.random.default_rng(5)
    B = 4
    model = VAE(784, (400,), 20, init="pytorch", dtype="float64", seed=2)
    x = rng.random((B, 784))
    eps = rng.standard_normal((B, 20))
    terms = model.forward(x, eps=eps)
    model.backward()

    reference = torch_vae.make_model(torch_vae.weights_from_npvae(model), dtype=torch.float64)
    monkeypatch.setattr(torch, "randn_like", lambda like: t(eps))  # the example's eps
    data = t(x)
    recon, mu, logvar = reference(data)
    loss = torch_vae.loss_function(recon, data, mu, logvar)
    loss.backward()

    np.testing.assert_allclose(loss.item(), B * float(terms.loss), rtol=1e-10)
    theirs = {k: v.grad.numpy() for k, v in reference.named_parameters()}
    ours = torch_vae.weights_from_npvae(type("Grads", (), {"params": model.grads,
                                                           "latent": 20})())
    for name, grad in ours.items():
        np.testing.assert_allclose(theirs[name], B * grad, rtol=1e-9, atol=1e-12, err_msg=name)


def test_train_torch_follows_the_given_order():
    torch_vae = load_benchmark("torch_vae")
    rng = np.random.default_rng(0)
    x_train = rng.random((96, 784), dtype=np.float32)
    x_test = rng.random((40, 784), dtype=np.float32)
    order = [rng.permutation(96), rng.permutation(96)]
    runs = [torch_vae.train_torch(x_train, x_test, 2, batch_size=32, order=order)
            for _ in range(2)]
    assert runs[0]["train_loss"] == runs[1]["train_loss"]
    assert runs[0]["test_loss"] == runs[1]["test_loss"]
    assert len(runs[0]["epoch_seconds"]) == 2
    other = torch_vae.train_torch(x_train, x_test, 2, batch_size=32, order=order[::-1])
    assert other["train_loss"] != runs[0]["train_loss"]


def test_the_examples_dataloader_feeds_the_same_pixels():
    torch_vae = load_benchmark("torch_vae")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 784)).astype(np.float32) / np.float32(255)
    order = torch.as_tensor(rng.permutation(40))
    arrays = list(torch_vae.batches_of(torch.from_numpy(x), 16, order, "arrays"))
    loaded = list(torch_vae.batches_of(torch_vae.mnist_dataset(x), 16, order, "dataloader"))
    assert [tuple(b.shape) for b in loaded] == [(16, 1, 28, 28), (16, 1, 28, 28), (8, 1, 28, 28)]
    for a, b in zip(arrays, loaded):
        assert torch.equal(a, b.view(-1, 784))
