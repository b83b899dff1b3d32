# %% [markdown]
# # 7. The whole VAE, assembled by hand, checked end to end
#
# Every piece is ready: dense layers and activations (tutorials 1-2), the
# reconstruction term (3), the KL (4), the reparameterization (5). Here we wire
# them into a tiny VAE by hand, show that its loss and every gradient equal
# `npvae.VAE`'s, and gradient-check the whole model.
#
# **Forward**, for a batch $x$ $(B, D)$:
#
# 1. encoder MLP: $x \to h = [\,\mu \mid s\,]$ $(B, 2Z)$, split into $\mu$, $s$ $(B, Z)$;
# 2. $z = \mu + e^{s/2} \odot \varepsilon$ $(B, Z)$;
# 3. decoder MLP: $z \to$ logits $(B, D)$;
# 4. $\mathcal{L} = \frac1B \sum_i \bigl(\mathrm{nll}_i + \beta\, \mathrm{kl}_i\bigr)$,
#    summed over pixels and latents, averaged over the batch: nats per example.
#
# **Backward**, the same steps in reverse. The batch mean gives every example
# an upstream gradient of $1/B$ (and $\beta/B$ for its KL). $\mu$ and $s$ are
# used **twice**, in $z$ and in the KL, so their gradients are the **sum** of
# the two paths:
#
# $$\mathrm{dmu} = \underbrace{\mathrm{dz}}_{\text{through } z} + \underbrace{\tfrac{\beta}{B}\,\mu}_{\text{through the KL}},
# \qquad
# \mathrm{dlogvar} = \mathrm{dz} \odot \varepsilon \odot \tfrac12 e^{s/2} + \tfrac{\beta}{B} \cdot \tfrac12\left(e^{s} - 1\right).$$
#
# Full derivation: [derivations.md, The whole ELBO](derivations.md#the-whole-elbo).

# %%
import sys
from pathlib import Path

import numpy as np

# A checkout runs without installing npvae: put its root (the folder holding npvae/) on the
# path, found from this file or, in a notebook, from the notebook's folder.
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(next((p for p in (here, *here.parents) if (p / "npvae").is_dir()), here)))

from npvae import VAE  # noqa: E402
from npvae.activations import ReLU  # noqa: E402
from npvae.gradcheck import check_model, format_results, rel_error  # noqa: E402
from npvae.layers import Dense  # noqa: E402
from npvae.losses import bernoulli_nll, bernoulli_nll_backward, gaussian_kl, gaussian_kl_backward  # noqa: E402
from npvae.reparam import reparameterize, reparameterize_backward  # noqa: E402
from npvae.tutorial import QUICK, Tutorial  # noqa: E402

tutorial = Tutorial("07_whole_vae")  # where its figure goes, and the figure inline in a notebook

rng = np.random.default_rng(0)
B, D, H, Z = 4, 6, 5, 2
beta = 0.5  # not 1, so that a misplaced beta would show
x = rng.uniform(size=(B, D))
eps = rng.standard_normal((B, Z))  # fixed noise: the loss is then a plain function of the weights

# %% [markdown]
# ## The pieces, by hand
#
# Encoder $D \to H \to 2Z$ and decoder $Z \to H \to D$, ReLU between, in float64.

# %%
enc1, enc_act, enc2 = Dense(D, H, rng=rng, dtype=np.float64), ReLU(), Dense(H, 2 * Z, rng=rng, dtype=np.float64)
dec1, dec_act, dec2 = Dense(Z, H, rng=rng, dtype=np.float64), ReLU(), Dense(H, D, rng=rng, dtype=np.float64)


def forward_by_hand(x, eps):
    h = enc2.forward(enc_act.forward(enc1.forward(x)))
    mu, logvar = h[:, :Z], h[:, Z:]
    z, _ = reparameterize(mu, logvar, eps)
    logits = dec2.forward(dec_act.forward(dec1.forward(z)))
    recon = bernoulli_nll(logits, x).mean()
    kl = gaussian_kl(mu, logvar).mean()
    return recon + beta * kl, (mu, logvar, logits)


def backward_by_hand(x, eps, cache, kl_path=True):
    mu, logvar, logits = cache
    dout = 1.0 / B                                                   # the batch mean
    dlogits = bernoulli_nll_backward(dout, logits, x)                # (B, D)
    dz = dec1.backward(dec_act.backward(dec2.backward(dlogits)))     # (B, Z)
    dmu, dlogvar = reparameterize_backward(dz, logvar, eps)          # path 1: through z
    if kl_path:
        dmu_kl, dlogvar_kl = gaussian_kl_backward(beta * dout, mu, logvar)  # path 2: the KL
        dmu, dlogvar = dmu + dmu_kl, dlogvar + dlogvar_kl            # the two paths add
    dh = np.concatenate([dmu, dlogvar], axis=1)                      # undo the split: (B, 2Z)
    enc1.backward(enc_act.backward(enc2.backward(dh)), need_dx=False)
    layers = {"encoder.0": enc1, "encoder.2": enc2, "decoder.0": dec1, "decoder.2": dec2}
    return {f"{name}.{k}": g.copy() for name, layer in layers.items() for k, g in layer.grads.items()}


loss_by_hand, cache = forward_by_hand(x, eps)
grads_by_hand = backward_by_hand(x, eps, cache)
print(f"loss by hand: {loss_by_hand:.10f} nats per example")

# %% [markdown]
# ## npvae's VAE, with the same weights
#
# `VAE(x_dim, hidden, latent)` builds the same architecture. Its parameters are
# named `"encoder.0.W"` (layer 0 of the encoder MLP, a Dense), ..., and its
# `params` and `grads` dicts share those keys. We copy our weights in and
# compare the loss and every gradient.

# %%
vae = VAE(x_dim=D, hidden=(H,), latent=Z, beta=beta, dtype="float64", seed=1)
print(vae)
for name, layer in {"encoder.0": enc1, "encoder.2": enc2, "decoder.0": dec1, "decoder.2": dec2}.items():
    for k, value in layer.params.items():
        vae.params[f"{name}.{k}"][...] = value
terms = vae.forward(x, eps=eps)
vae.backward()
print(f"loss by npvae: {float(terms.loss):.10f}  (recon {float(terms.recon):.4f}, kl {float(terms.kl):.4f})")
same_loss = abs(float(terms.loss) - loss_by_hand) < 1e-12
grad_diffs = {k: rel_error(vae.grads[k], grads_by_hand[k]) for k in grads_by_hand}
print("same loss:", same_loss, "  largest gradient difference:", f"{max(grad_diffs.values()):.1e}")

# %% [markdown]
# ## What forgetting the KL path does
#
# Drop path 2 (the KL's own gradient with respect to $\mu$ and $s$) and the
# decoder's gradients are untouched, while every encoder gradient is off by the
# share that path carries. The model would still train, as an autoencoder with
# noise, and never learn to match the prior.

# %%
grads_no_kl = backward_by_hand(x, eps, cache, kl_path=False)
no_kl_errors = {k: rel_error(grads_no_kl[k], vae.grads[k]) for k in grads_no_kl}
for k, err in no_kl_errors.items():
    print(f"without the KL path: {k:<12} relative error {err:.2e}")

# %% [markdown]
# ## Every parameter, end to end
#
# `check_model` runs the model in float64 with the noise fixed, perturbs every
# weight in turn by $\pm h$, and compares the central differences of the loss
# with `backward`'s gradients, one line per parameter tensor.

# %%
results = check_model(vae, x, eps)
print(format_results(results))

# %% [markdown]
# The same check for a Gaussian decoder with tanh units and two hidden layers,
# where the likelihood's gradient is $(\mathrm{mean} - x)/\sigma_x^2$ instead of
# $\sigma(l) - x$:

# %%
gaussian_vae = VAE(x_dim=D, hidden=(H, 3), latent=Z, activation="tanh", likelihood="gaussian", sigma=0.5,
                   beta=2.0, dtype="float64", seed=2)
gaussian_results = check_model(gaussian_vae, x, eps)
print(format_results(gaussian_results))

# %% [markdown]
# ## The two terms while it learns
#
# The same model at PyTorch's example size (784-400-20) on MNIST digits,
# trained with `npvae.train.train_step` (forward, backward, one Adam step),
# the step `npvae train` runs. The reconstruction term falls from hundreds
# of nats as the decoder learns the digits; the KL starts at a few nats (every
# $q(z \mid x)$ is close to the prior) and rises while the encoder learns to
# put information in $z$: the ELBO's two terms pull against each other, and
# their sum, the loss, falls.

# %%
import matplotlib.pyplot as plt  # noqa: E402

from npvae.data import load_mnist, to_unit_interval  # noqa: E402
from npvae.optim import Adam  # noqa: E402
from npvae.train import train_step  # noqa: E402

STEPS = 30 if QUICK else 300
digits = to_unit_interval(load_mnist().x_train[:128 * STEPS])  # (N, 784) in [0, 1]
mnist_vae = VAE(784, hidden=(400,), latent=20, seed=0)  # float32, as npvae trains
optimizer = Adam({"theta": mnist_vae.theta}, {"theta": mnist_vae.dtheta}, lr=1e-3)
step_rng = np.random.default_rng(0)
history = np.array([[float(t.recon), float(t.kl)] for t in
                    (train_step(mnist_vae, optimizer, digits[i:i + 128], rng=step_rng)
                     for i in range(0, 128 * STEPS, 128))])
print(f"step 1: recon {history[0, 0]:.1f}, kl {history[0, 1]:.2f}; "
      f"step {STEPS}: recon {history[-1, 0]:.1f}, kl {history[-1, 1]:.2f} (nats per example)")
fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 4.5), sharex=True)
top.plot(np.arange(1, STEPS + 1), history[:, 0], label="recon: -E_q log p(x | z)")
top.plot(np.arange(1, STEPS + 1), history.sum(axis=1), "--", label="loss = recon + kl = -ELBO")
top.set(ylabel="nats per example", title="the ELBO's two terms over the first steps")
top.legend(fontsize=8)
bottom.plot(np.arange(1, STEPS + 1), history[:, 1], color="C2", label="kl: KL(q(z | x) || p(z))")
bottom.set(xlabel="Adam step (batches of 128)", ylabel="nats per example")
bottom.legend(fontsize=8)
fig.tight_layout()
tutorial.savefig(fig, "07_elbo_terms.png")


# %% [markdown]
# ## Check

# %%
assert same_loss and max(grad_diffs.values()) < 1e-12, grad_diffs
assert all(no_kl_errors[k] == 0 for k in no_kl_errors if k.startswith("decoder"))
assert all(no_kl_errors[k] > 1e-3 for k in no_kl_errors if k.startswith("encoder"))
assert all(r.ok for r in results + gaussian_results)
print(f"check passed: the VAE assembled by hand equals npvae.VAE, and the gradients of all {len(results) + len(gaussian_results)} "
      "parameter tensors match finite differences end to end")
tutorial.finish()  # the quick mode's temporary folder goes

# %% [markdown]
# ## Practise
#
# Write the whole VAE backward, both paths into mu and logvar yourself in
# `07_vae_backward.py` (in `tutorials/exercises/`), then grade it:
#
#     npvae exercises check vae_backward
#
# The grader checks every gradient against finite differences and, when one is
# wrong, says how (a missing path, a missing 1/B, the KL without beta); `npvae
# exercises list` shows every exercise.
