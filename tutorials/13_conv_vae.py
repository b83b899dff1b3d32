# %% [markdown]
# # 13. A convolutional VAE on MNIST, next to the MLP VAE
#
# Tutorial 12 built `Conv2D` and `ConvTranspose2D` by hand. Here they become
# a VAE: the `conv` preset, the architecture of TensorFlow's "Convolutional
# Variational Autoencoder" tutorial. The encoder halves the image twice with
# 3 x 3 stride-2 convolutions (padding 1: 28 -> 14 -> 7) and a dense layer
# gives $\mu$ and $\log\sigma^2$; the decoder mirrors it with a dense layer to a
# 32 x 7 x 7 image and 3 x 3 transposed convolutions (stride 2, padding 1,
# output padding 1: 7 -> 14 -> 28; then stride 1 to one channel of logits):
#
#     encoder: (1, 28, 28) Conv 32 -> (32, 14, 14) Conv 64 -> (64, 7, 7) -> 3136 -> Dense 2Z
#     decoder: Z -> Dense 1568 = (32, 7, 7) ConvT 64 -> (64, 14, 14) ConvT 32 -> (32, 28, 28) ConvT 1
#
# ReLU between layers, a Bernoulli likelihood on the logits, and everything
# else as tutorial 8's `pytorch-example` MLP (784-400-20): Adam 1e-3, batch
# 128, the same loss (summed over pixels and latents, averaged over the
# batch). The VAE code is the same for both: `npvae.VAE(architecture="conv")`
# only builds other layers (`npvae.vae.build_stacks`); x stays a flat
# (B, 784) array at the model's boundary, and the stacks reshape inside.
# Training is `npvae.train.train`, whose step is `train_step`: forward,
# backward, Adam, as in tutorial 8. From the command line:
# `npvae train --preset conv` (add `--latent 2` for the manifold).
#
# **How long it runs.** By default: one epoch of each of the three models
# (conv with 20 latents, the MLP, conv with 2 latents). A conv epoch is 469
# steps; the default run below took 41 s for each conv epoch and 4 s for the
# MLP's, on one thread of the project's 2-core machine. Against PyTorch's eager
# epoch on the same CPU (`benchmarks/README.md`) npvae's conv epoch took 0.94
# times its CPU time on one thread, and 1.01 times its time on two. Under a
# load average of about 18 on that machine an earlier version's conv epochs
# took 16 minutes each, and the MLP's one minute.
# `NPVAE_FULL=1`: 10 epochs each, ten times as long.
# `NPVAE_QUICK=1` (the test suite): 4 steps each, 100 test digits, about
# 15 seconds. Run folders go to `tutorials/runs/13_*`. In a notebook the
# figures appear below their cells; run as a script, they go to
# `tutorials/runs/figures/` (`NPVAE_SAVE_FIGURES=1`: the committed
# `tutorials/figures/13_*.png`, which came from the default run). The quick
# mode writes runs and figures to a temporary folder, which it removes at
# the end.

# %%
import sys
import time
from pathlib import Path

import numpy as np

# A checkout runs without installing npvae: put its root (the folder holding npvae/) on the
# path, found from this file or, in a notebook, from the notebook's folder.
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(next((p for p in (here, *here.parents) if (p / "npvae").is_dir()), here)))

from npvae import VAE, plots  # noqa: E402
from npvae.data import load_mnist, to_unit_interval  # noqa: E402
from npvae.evaluate import encode_means, evaluate_elbo  # noqa: E402
from npvae.train import TrainConfig, train  # noqa: E402
from npvae.tutorial import FULL, QUICK, Tutorial  # noqa: E402

tutorial = Tutorial("13_conv_vae")  # its mode, its folders, and inline figures in a notebook
if QUICK:
    EPOCHS, MAX_STEPS, N_EVAL, N_LATENT_PLOT, N_TRAIN = 1, 4, 100, 300, 2_000
elif FULL:
    EPOCHS, MAX_STEPS, N_EVAL, N_LATENT_PLOT, N_TRAIN = 10, None, 10_000, 5_000, None
else:
    EPOCHS, MAX_STEPS, N_EVAL, N_LATENT_PLOT, N_TRAIN = 1, None, 10_000, 5_000, None
print("mode:", tutorial.mode)
RUNS, FIGURES = tutorial.runs, tutorial.figures
started = time.perf_counter()

mnist = load_mnist()
x_test, y_test = to_unit_interval(mnist.x_test), mnist.y_test
x_eval = x_test[:N_EVAL]

# %% [markdown]
# ## The two models before training
#
# The conv VAE has about a third of the MLP's parameters (214 thousand against
# 653 thousand), most of them in its two dense layers; each 3 x 3 kernel is
# shared by every position in the image. Both start at the same loss, about
# 545 nats: $784 \log 2$ for a decoder that says 1/2 everywhere, plus a little.

# %%
def trained(name, preset, **overrides):
    """Train ``preset`` with npvae.train (the same code as ``npvae train``); return the model."""
    config = TrainConfig.from_preset(preset, epochs=EPOCHS, max_steps=MAX_STEPS, n_train=N_TRAIN,
                                     progress=not QUICK, figures=False, **overrides)
    t0 = time.perf_counter()
    # a progress bar and a line per epoch while it trains (quick mode, in the notebooks: silent)
    result = train(config, RUNS / f"13_{name}", overwrite=True, log=(lambda line: None) if QUICK else print)
    print(f"{name}: {result.state['global_step']} steps in {time.perf_counter() - t0:.0f} s")
    return result.model


def test_loss(model):
    return evaluate_elbo(model, x_eval, beta=1.0, rng=np.random.default_rng(1))


start_losses, initial = {}, {}
for preset in ("conv", "pytorch-example"):
    config = TrainConfig.from_preset(preset).validate()  # the model train() builds, seed 0
    initial[preset] = VAE(**config.model_kwargs(784))
    start_losses[preset] = test_loss(initial[preset])["loss"]
    print(f"{preset:<16} {initial[preset]!r}: {initial[preset].theta.size:,} parameters, "
          f"test loss at the start {start_losses[preset]:.1f} nats")
print("conv encoder:", initial["conv"].encoder)
print("conv decoder:", initial["conv"].decoder)

# %% [markdown]
# ## Training, and the test loss at equal epochs

# %%
conv = trained("conv", "conv")
mlp = trained("mlp", "pytorch-example")
losses = {name: test_loss(model) for name, model in (("conv", conv), ("mlp", mlp))}
for name, terms in losses.items():
    print(f"{name:<5} test -ELBO {terms['loss']:7.2f} = recon {terms['recon']:7.2f} + "
          f"kl {terms['kl']:5.2f} nats ({len(x_eval)} test digits, one z each)")

# %% [markdown]
# In the default run (one epoch each, all 10 000 test digits), the conv VAE
# reached a test loss of 118.1 nats (recon 92.4 + KL 25.7) and the MLP 126.2
# (recon 105.5 + KL 20.7): 8 nats better with a third of the parameters, all
# of it in the reconstruction term; a kernel learned at one position of a
# stroke works at every other. Over 10 epochs (`benchmarks/compare_conv_torch.py`,
# numbers in `benchmarks/README.md`) the gap narrows but stays: 101.8 against
# 105.6 nats after epoch 10, and PyTorch's replica of the conv VAE reached 101.5.
#
# ## Samples and reconstructions, side by side
#
# Same seed for both: the same $z \sim \mathcal{N}(0, I)$ decoded by each model,
# and the same test digits reconstructed (decoder mean at $z = \mu(x)$).

# %%
figures = {}
for name, model in (("conv", conv), ("mlp", mlp)):
    figures[f"{name}_samples"] = plots.plot_samples(model, FIGURES / f"13_{name}_samples.png",
                                                    np.random.default_rng(0))
    figures[f"{name}_reconstructions"] = plots.plot_reconstructions(
        model, x_test, FIGURES / f"13_{name}_reconstructions.png")
tutorial.show(*figures.values())

# %% [markdown]
# | | conv VAE | MLP VAE |
# |---|---|---|
# | samples | ![conv samples](figures/13_conv_samples.png) | ![MLP samples](figures/13_mlp_samples.png) |
# | reconstructions | ![conv reconstructions](figures/13_conv_reconstructions.png) | ![MLP reconstructions](figures/13_mlp_reconstructions.png) |
#
# ## A 2-D latent space
#
# With `latent=2` (`npvae train --preset conv --latent 2`) the encoder means
# are points in the plane: coloured by label (never seen in training), and
# the decoded grid of $z$, evenly spaced over the plane.

# %%
conv2 = trained("conv_latent2", "conv", latent=2)
latent2_loss = test_loss(conv2)["loss"]
mu = encode_means(conv2, x_test[:N_LATENT_PLOT]).astype(np.float64)
labels = y_test[:N_LATENT_PLOT]
half = len(mu) // 2
centres = np.stack([mu[:half][labels[:half] == c].mean(axis=0) for c in range(10)])
nearest = np.argmin(((mu[half:, None, :] - centres[None]) ** 2).sum(axis=-1), axis=1)
centre_accuracy = float((nearest == labels[half:]).mean())
print(f"conv, latent 2: test loss {latent2_loss:.2f} nats; nearest class centre of mu(x): "
      f"{centre_accuracy:.1%} correct (chance 10%)")
figures["latents"] = plots.plot_latents(conv2, x_test[:N_LATENT_PLOT], labels,
                                        FIGURES / "13_conv_latents.png")
figures["manifold"] = plots.plot_manifold(conv2, FIGURES / "13_conv_manifold.png")
tutorial.show(figures["latents"], figures["manifold"])

# %% [markdown]
# ![conv latents](figures/13_conv_latents.png) ![conv manifold](figures/13_conv_manifold.png)
#
# In the default run (one epoch) the 2-D conv VAE reached 172.6 nats, and the
# nearest class centre of $\mu(x)$ was right for 40.9% of the digits (tutorial
# 10's 2-D MLP, after two epochs: 54%).
#
# ## Check
#
# Both models learned (the test loss fell by more than 100 nats from the
# start in the default and full runs; in quick mode, four steps, by more than
# 10), every figure was written, and (after an epoch or more) the 2-D codes
# put 30% of the digits nearest their own class centre, three times chance.

# %%
print(f"total time {time.perf_counter() - started:.1f} s")
drop = {name: start_losses[p] - losses[name]["loss"]
        for name, p in (("conv", "conv"), ("mlp", "pytorch-example"))}
print("test loss fell by", {k: round(v, 1) for k, v in drop.items()}, "nats")
assert all(v > (10 if QUICK else 100) for v in drop.values()), drop
assert all(np.isfinite(t["loss"]) for t in losses.values()) and np.isfinite(latent2_loss)
assert all(path.is_file() for path in figures.values())
assert QUICK or centre_accuracy > 0.3, centre_accuracy  # 4 steps (quick) teach no digits yet
print(f"check passed: the conv VAE and the MLP VAE both trained (test loss down by "
      f"{drop['conv']:.0f} and {drop['mlp']:.0f} nats), figures written, 2-D codes "
      f"{centre_accuracy:.0%} nearest-centre correct")
tutorial.finish()  # the quick mode's temporary folder goes

# %% [markdown]
# ## Practise
#
# The conv VAE is built from tutorial 12's two layers. Write their forward and
# backward yourself in `12_conv.py` and `12_conv_transpose.py` (in
# `tutorials/exercises/`), then grade them:
#
#     npvae exercises check conv conv_transpose
#
# The grader compares them with npvae's and with finite differences and, when
# one is wrong, says how (the kernel flipped in dx, a flipped sign, a missing
# 1/B); `npvae exercises list` shows every exercise.
