# %% [markdown]
# # 17. Discrete codes: the VQ-VAE
#
# Every model so far had a continuous latent, a Gaussian. The **vector-
# quantized VAE** (van den Oord, Vinyals and Kavukcuoglu, 2017) has a
# discrete one: the encoder's output is a grid of vectors ($7 \times 7$ of
# $F = 16$ dimensions for MNIST), and each vector is replaced by the nearest
# of $N = 64$ learned **code vectors**, the rows of a codebook $E$. What the
# decoder sees is a grid of 49 integers, each one of 64 codes: a tokenizer,
# the first half of DALL-E's first version and of many image codecs. This
# tutorial uses `npvae.vq` (the quantizer), `npvae.vqvae` (the model) and
# `npvae.made` (the prior) to show
#
# - the nearest code, and why its gradient is useless: the **straight-through**
#   estimator, shown equal to the decoder's gradient at $z_q$ and unequal to
#   the true one, which is zero;
# - the two losses that pull in opposite directions, the codebook loss and
#   the commitment loss;
# - **codebook collapse** (codes no vector chooses, which never move again)
#   and what fixes it: gradient against moving-average updates, with and
#   without restarting dead codes, measured by perplexity and dead codes;
# - the **prior**: an autoregressive model over the 49 codes (a MADE, and why
#   not a PixelCNN here), trained on codes and sampled.
#
# Derivations: [Vector quantization](derivations.md#vector-quantization) and
# [Masked autoregressive prior](derivations.md#masked-autoregressive-prior).
#
# **How long it runs.** The maths on small float64 models takes seconds. The
# collapse experiment quantizes MNIST's $4 \times 4$ patches with four
# codebook updates, 400 steps each; the `vqvae` preset trains for 3 epochs on
# 10,000 digits, and its prior for 10 epochs on their codes: a few minutes
# on a busy 2-core machine. `NPVAE_QUICK=1` (the test suite): 60 steps each,
# one epoch on 1,000 digits, a prior of 5 epochs, about a minute.
# The run folder goes to `tutorials/runs/17_vqvae`; the quick mode writes it
# to a temporary folder, which it removes at the end.

# %%
import sys
import time
from pathlib import Path

import numpy as np

# A checkout runs without installing npvae: put its root (the folder holding npvae/) on the
# path, found from this file or, in a notebook, from the notebook's folder.
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(next((p for p in (here, *here.parents) if (p / "npvae").is_dir()), here)))

from npvae.data import load_mnist, to_unit_interval  # noqa: E402
from npvae.gradcheck import biases_off_zero, numerical_gradient  # noqa: E402
from npvae.optim import Adam  # noqa: E402
from npvae.tutorial import QUICK, Tutorial  # noqa: E402
from npvae.vq import VectorQuantizer, dead_codes, perplexity  # noqa: E402
from npvae.vqvae import VQVAE, check_gradients  # noqa: E402

tutorial = Tutorial("17_vqvae")  # its mode, its folders, and inline figures in a notebook
if QUICK:
    N_DIGITS, N_TEST, VQ_STEPS, VQ_EPOCHS, PRIOR_EPOCHS = 1_000, 200, 60, 1, 5
else:
    N_DIGITS, N_TEST, VQ_STEPS, VQ_EPOCHS, PRIOR_EPOCHS = 10_000, 1_000, 400, 3, 10
print("mode:", "quick" if QUICK else "default")  # no full version: NPVAE_FULL=1 runs the default
started = time.perf_counter()

# %% [markdown]
# ## Discrete codes
#
# A quantizer of $N = 5$ codes in $F = 3$ dimensions, and a batch of two
# examples on a $2 \times 2$ grid: `z_e` is $(B, F, 2, 2)$, the $F$
# dimensions on axis 1 as npvae's convolutions give them. Each of the
# $B \times 4 = 8$ vectors takes its nearest code,
# $c = \arg\min_v \lVert z_e - E_v \rVert^2$, and is replaced by it,
# $z_q = E[c]$. The forward also returns each example's codebook and
# commitment losses (below), summed over its positions and dimensions.

# %%
rng = np.random.default_rng(0)
q = VectorQuantizer(5, 3, beta=0.25, rng=rng, dtype=np.float64)
q.codebook[...] = rng.standard_normal((5, 3))          # spread out, to see which is nearest
z_e = rng.standard_normal((2, 3, 2, 2))
z_q, codes, terms = q.forward(z_e)
print("codes (B, 2, 2):\n", codes)
print("z_q at example 0, position (0, 0):", np.round(z_q[0, :, 0, 0], 3),
      "= code", codes[0, 0, 0], np.round(q.codebook[codes[0, 0, 0]], 3))
print("codebook loss per example:", np.round(terms.codebook, 3),
      " commitment (x 0.25):", np.round(terms.commitment, 3))
counts = np.bincount(codes.reshape(-1), minlength=5)
print("usage", counts, f"-> perplexity {perplexity(counts):.2f} of 5, dead codes {dead_codes(counts)}")

# %% [markdown]
# **Code usage** is measured by the **perplexity**, $\exp(-\sum_v f_v \log
# f_v)$ with $f_v$ the fraction of positions given code $v$: $N$ when every
# code is used equally, 1 when one code takes everything. A code no position
# chose is **dead**.
#
# ## The straight-through trick
#
# $c$ is piecewise constant in $z_e$: nudge a vector and its nearest code
# does not change, so $z_q$ does not move. The true derivative of the
# reconstruction with respect to $z_e$ is therefore **zero almost
# everywhere** (and undefined on the boundaries between codes): the encoder
# would learn nothing. The straight-through estimator feeds the decoder
# $z_e + \mathrm{sg}[z_q - z_e]$ instead, whose value is $z_q$ and whose
# derivative in $z_e$ is the identity ($\mathrm{sg}$, the stop-gradient, is a
# constant on the way back): the decoder's gradient $\mathrm{d}z_q$ is handed
# to the encoder unchanged.
#
# On a small float64 VQ-VAE (8 x 8 images, a $2 \times 2$ grid of 3-dimensional
# vectors, 5 codes), npvae's `VectorQuantizer.backward` with the losses' weight
# at 0 returns exactly the decoder's gradient; central differences of the
# reconstruction *through the argmin* (the codes re-chosen at every step) give
# zero:

# %%
model = VQVAE(64, (2, 3), embedding_dim=3, n_codes=5, activation="tanh", dtype="float64", seed=3)
biases_off_zero(model, np.random.default_rng(1))
xs = np.random.default_rng(2).random((4, 64))
model.forward(xs)
B = xs.shape[0]
dz_q = model.decoder.backward(model.nll_backward(1.0 / B, model.out, xs))   # the decoder's gradient at z_q
quantizer = model.quantizer
straight = quantizer.backward(dz_q, 0.0)                                     # no loss term: the decoder's path
z_e0 = model.z_e.copy()


def recon_through_the_argmin():
    """The reconstruction as a function of z_e, each vector taking its nearest code anew."""
    return float(model.nll(model.decoder.forward(quantizer.lookup(quantizer.nearest(z_e0))), xs).mean())


true_gradient = numerical_gradient(recon_through_the_argmin, z_e0)
print(f"straight-through dz_e minus the decoder's dz_q: max |.| = {np.abs(straight - dz_q).max():.1e}")
print(f"straight-through dz_e:                          max |.| = {np.abs(straight).max():.3f}")
print(f"true gradient through the argmin (differences): max |.| = {np.abs(true_gradient).max():.1e}")

# %% [markdown]
# The straight-through gradient is the exact gradient of a *different*
# function: the decoder applied to $z_e + \Delta$ with the offset
# $\Delta = z_q - z_e$ held constant. Along a line through $z_e$ (in the
# direction that lowers that surrogate) the true reconstruction is a
# staircase, flat between the jumps where a vector changes code; the
# surrogate is smooth, and its slope at $t = 0$ is what the encoder is given:

# %%
import matplotlib.pyplot as plt  # noqa: E402

offset = model.z_q - z_e0
direction = -straight / np.linalg.norm(straight)
ts = np.linspace(-3, 3, 241)
staircase, surrogate = [], []
for t in ts:
    z = z_e0 + t * direction
    staircase.append(float(model.nll(model.decoder.forward(quantizer.lookup(quantizer.nearest(z))), xs).mean()))
    surrogate.append(float(model.nll(model.decoder.forward(z + offset), xs).mean()))
slope = float((straight * direction).sum())
jumps = int((np.diff(staircase) != 0).sum())
print(f"along the line: {jumps} jumps of the true loss in {len(ts)} points; straight-through slope {slope:.3f}")
fig, ax = plt.subplots(figsize=(6.5, 3.4))
ax.plot(ts, staircase, label="true: decoder(E[nearest code of z])")
ax.plot(ts, surrogate, "--", label="straight-through surrogate: decoder(z + Δ)")
ax.plot(ts[100:141], surrogate[120] + slope * ts[100:141], ":", color="k", label="slope given to the encoder")
ax.set_xlabel("t, along z = z_e + t d")
ax.set_ylabel("reconstruction, nats per example")
ax.legend(fontsize=8)
fig.tight_layout()
tutorial.savefig(fig, "17_straight_through.png")

# %% [markdown]
# The guess is good only while $z_e$ stays near its code (the decoder's
# gradient at $z_q$ then being close to its gradient at $z_e$): keeping it
# there is the commitment loss's job. The whole model's gradients pass
# central differences, each against what it claims to be the derivative of
# (`npvae.vqvae.check_gradients`: the decoder against the loss, the codebook
# against the codebook loss, the encoder against the straight-through
# surrogate plus the commitment, the codes held):

# %%
results = check_gradients(model, xs)
print(f"{len(results)} parameters, worst relative error {max(r.rel_error for r in results):.1e}")

# %% [markdown]
# ## Two losses pulling in opposite directions
#
# No gradient of the reconstruction reaches the codebook (it sits under the
# stop-gradient), so two more terms train what the decoder cannot:
#
# $$\underbrace{\lVert \mathrm{sg}[z_e] - E[c] \rVert^2}_{\text{codebook loss}}
# \; + \; \beta\,\underbrace{\lVert z_e - \mathrm{sg}[E[c]] \rVert^2}_{\text{commitment loss}}.$$
#
# Their values are equal up to $\beta$ (0.25); only where their gradients go
# differs. The codebook loss moves each code towards the vectors that chose it,
# and nothing else; the commitment loss moves each vector towards its code,
# and nothing else. One example whose four vectors lie near four different
# codes shows it: each vector's pull and its code's pull are exactly opposite,
# the code's $1/\beta$ times the stronger:

# %%
q = VectorQuantizer(5, 3, beta=0.25, rng=np.random.default_rng(0), dtype=np.float64)
q.codebook[...] = np.random.default_rng(1).standard_normal((5, 3))
near = q.lookup(np.array([[[0, 1], [2, 3]]])) + 0.2 * np.random.default_rng(2).standard_normal((1, 3, 2, 2))
_, codes, _ = q.forward(near)
dz_e = q.backward(np.zeros_like(near), 1.0)              # the two losses alone (B = 1)
pull_on_vectors = -np.moveaxis(dz_e, 1, -1).reshape(-1, 3)      # the commitment's, on each vector
pull_on_codes = -q.grads["codebook"][codes.reshape(-1)]         # the codebook loss's, on its code
cosines = (pull_on_vectors * pull_on_codes).sum(axis=1) / (
    np.linalg.norm(pull_on_vectors, axis=1) * np.linalg.norm(pull_on_codes, axis=1))
ratios = np.linalg.norm(pull_on_codes, axis=1) / np.linalg.norm(pull_on_vectors, axis=1)
print("codes of the four vectors:", codes.reshape(-1))
print("cosine between each vector's pull and its code's:", np.round(cosines, 12))
print("|pull on the code| / |pull on the vector|:", np.round(ratios, 12), "(1 / beta = 4)")

# %% [markdown]
# The codebook loss is k-means' objective: $\mathrm{d}E_v = \tfrac{2}{B}(n_v
# E_v - m_v)$, with $n_v$ the vectors given code $v$ and $m_v$ their sum, is
# zero at their mean. One gradient step of size $B / (2 n_v)$ lands each used
# code on the mean of its vectors exactly:

# %%
z_e = np.random.default_rng(3).standard_normal((4, 3, 2, 2))   # 16 vectors, 5 codes: codes shared
q.codebook[4] = 10.0                                         # and one code far from every vector
_, codes, _ = q.forward(z_e)
q.backward(np.zeros_like(z_e), 1.0 / 4)       # fills grads["codebook"]: the codebook loss's gradient (B = 4)
dE = q.grads["codebook"].copy()
counts = np.bincount(codes.reshape(-1), minlength=5)
print("vectors per code:", counts)
rows = np.moveaxis(z_e, 1, -1).reshape(-1, 3)
used = counts > 0
means = np.zeros_like(q.codebook)
np.add.at(means, codes.reshape(-1), rows)
means[used] /= counts[used, None]
stepped = q.codebook - (4 / (2 * np.maximum(counts, 1)))[:, None] * dE
print(f"used codes {np.flatnonzero(used)}: max |stepped code - mean of its vectors| = "
      f"{np.abs(stepped[used] - means[used]).max():.1e}; the gradient of unused code(s) "
      f"{np.flatnonzero(~used)}: {np.abs(dE[~used]).max():.1f}")

# %% [markdown]
# The last number is the problem of the next section: a code no vector
# chose gets no gradient at all, is never nearest, and never moves.
#
# ## Codebook collapse, and what fixes it
#
# To see the codebook alone, hold the encoder fixed: cut each MNIST digit
# into its $7 \times 7$ grid of $4 \times 4$ patches, a vector of $F = 16$
# pixels per position, the preset's grid and dimension. Quantizing these
# vectors with 64 codes is what the VQ-VAE's quantizer does, with an encoder
# that does not move. Four ways to update the codebook, each for `VQ_STEPS`
# batches of 64 digits (3,136 vectors), from npvae's initial codebook
# (uniform in $\pm 0.05$, where the patches' pixels lie in $[0, 1]$):
#
# - **gradient**: the codebook loss's gradient, Adam at the learning rate
#   $10^{-3}$;
# - **EMA**: each code set to the moving average of the vectors it was given
#   (decay 0.99; `VectorQuantizer.ema_update`);
# - each of them **with restarts**: every 20 steps, each code no vector chose
#   in those steps is moved onto a vector of the batch drawn at random
#   (`VectorQuantizer.restart_dead_codes`).
#
# Usage is counted over each window of 20 steps (62,720 vectors).

# %%
mnist = load_mnist()
images = to_unit_interval(mnist.x_train[:N_DIGITS])
WINDOW = 20


def patches(x):
    """(B, 784) digits as (B, 16, 7, 7): each position's 4 x 4 patch, a vector of 16 pixels."""
    return x.reshape(len(x), 7, 4, 7, 4).transpose(0, 2, 4, 1, 3).reshape(len(x), 16, 7, 7)


def train_codebook(update, restart, steps=VQ_STEPS, seed=0):
    """A 64-code quantizer fitted to the patches: (quantizer, [(step, perplexity, dead, loss)])."""
    rng = np.random.default_rng(seed)
    vq = VectorQuantizer(64, 16, update=update, rng=np.random.default_rng(1))
    optimizer = Adam(vq.params, vq.grads, lr=1e-3) if update == "gradient" else None
    history = []
    for step in range(1, steps + 1):
        z = patches(images[rng.integers(0, len(images), 64)])
        _, _, vq_terms = vq.forward(z)
        if update == "gradient":
            vq.backward(np.zeros_like(z), 1.0 / len(z))   # the codebook loss's gradient (no decoder here)
            optimizer.step()
        else:
            vq.ema_update()
        if step % WINDOW == 0:
            usage = vq.reset_usage()
            history.append((step, perplexity(usage), len(dead_codes(usage)), float(vq_terms.codebook.mean())))
            if restart:
                vq.restart_dead_codes(usage, z, rng)
    return vq, history


runs = {}
for update, restart in [("gradient", False), ("ema", False), ("gradient", True), ("ema", True)]:
    name = f"{update}{' + restarts' if restart else ''}"
    runs[name] = train_codebook(update, restart)
    _, perp, dead, loss = runs[name][1][-1]
    print(f"{name:<20} last {WINDOW} steps: perplexity {perp:5.1f}, dead codes {dead:2d} of 64, "
          f"codebook loss {loss:6.2f} per digit")

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for name, (_, history) in runs.items():
    steps, perps, deads, losses = zip(*history)
    axes[0].plot(steps, perps, "o-", ms=3, label=name)
    axes[1].plot(steps, deads, "o-", ms=3, label=name)
    axes[2].plot(steps, losses, "o-", ms=3, label=name)
axes[0].set_ylabel(f"perplexity (per {WINDOW} steps)")
axes[1].set_ylabel(f"dead codes of 64 (per {WINDOW} steps)")
axes[2].set_ylabel("codebook loss per digit")
axes[2].set_yscale("log")
for ax in axes:
    ax.set_xlabel("step")
axes[1].legend(fontsize=8)
fig.tight_layout()
tutorial.savefig(fig, "17_codebook_usage.png")

# %% [markdown]
# Read the numbers printed above. Started near 0, far from the patches,
# only the codes that happen to be nearest to some patch at the first steps
# receive a gradient (or, under EMA, a new average); the others are dead
# from the start, and the two updates alone leave many of them dead (a few
# come back, slowly, only as the codes in use move away from them). A
# restart puts a dead code where the data is, so it is chosen and trained
# from then on, and the quantization error (the codebook loss) drops with
# every code put to use. The perplexity stays far below 64 even then: most
# of a digit's 49 patches are blank background, and one code takes all of
# them.
#
# In a whole VQ-VAE the encoder also moves (the commitment loss pulls it
# towards its codes, the decoder's gradient pushes it around), which can
# make collapse worse: vectors crowd onto the few codes in use. The same
# remedies apply; npvae offers both (`update="ema"`, and restarts of dead
# codes).
#
# ## The whole model
#
# The `vqvae` preset is that model at the sizes of Keras's VQ-VAE example:
# two stride-2 convolutions (32 and 64 channels) and a 1 x 1 one to the
# $7 \times 7$ grid of 16-dimensional vectors, 64 codes, commitment weight
# 0.25, the codebook trained by its loss's gradient, dead codes restarted
# every 100 steps, transposed convolutions back to Bernoulli logits, Adam
# $10^{-3}$, batches of 128. npvae's trainer runs its step (forward,
# backward, Adam; then the codebook's update and the restarts on their
# schedule) and reports, per epoch, the three loss terms in nats per digit
# and the code usage, on the training batches and on the test digits. Here
# `VQ_EPOCHS` epochs on the first `N_DIGITS` training digits (and its first
# `N_TEST` test digits); the command line trains the preset's 10 epochs on
# all of MNIST, then its prior (next section):
#
#     npvae train --preset vqvae --run-dir runs/vqvae

# %%
from npvae.train import TrainConfig, train  # noqa: E402

config = TrainConfig.from_preset("vqvae", n_train=N_DIGITS, n_test=N_TEST, epochs=VQ_EPOCHS,
                                 prior_epochs=0, progress=False, figures=False)   # its prior: below
trained = train(config, tutorial.runs / "17_vqvae", overwrite=True,
                log=lambda line: print(line) if line.startswith("epoch") else None)
vqvae = trained.model
last = trained.metrics[-1]
print(f"after {last['step']} steps: test recon {last['test_recon']:.1f} nats per digit, "
      f"test perplexity {last['test_perplexity']:.1f} of 64, {last['test_dead_codes']} dead codes")

# %% [markdown]
# Each epoch line gives the three terms on the training batches and on the
# test digits, and the code usage: the perplexity, and the codes no position
# chose in the epoch. They are the codebook's health: a run whose dead codes
# climb while its perplexity falls is collapsing. `npvae train --preset vqvae
# --restart-every 0` trains without the restarts; `--codebook-update ema`
# with the moving averages.
#
# ## The prior, and sampling
#
# A VQ-VAE is not a generative model until its codes have a distribution:
# the paper fits one **after** training, on the codes of the training
# images, and draws new images by sampling codes and decoding them. By the
# chain rule in raster order, exactly,
# $p(c) = \prod_{t=1}^{49} p(c_t \mid c_1, \ldots, c_{t-1})$.
#
# **Why a MADE here, not a PixelCNN.** The paper (and Keras's example) use a
# PixelCNN: masked convolutions, each output seeing only earlier positions
# within its receptive field. For a $7 \times 7$ grid, npvae uses a MADE
# (Germain et al., 2015), one masked MLP:
#
# - 49 positions of 64 codes are a one-hot input of 3,136 numbers: a dense
#   layer over all of them is small and fast, and the convolution's weight
#   sharing, what makes a PixelCNN affordable on large images, buys little
#   on 49 positions;
# - every conditional sees **all** earlier positions in one layer, where a
#   PixelCNN needs a stack of layers to cover the grid and a second stack
#   to fill the blind spot of its masked kernels (van den Oord et al., 2016);
# - its backward is the dense layer's with the mask applied,
#   $\mathrm{d}W = (x^\top \mathrm{d}\text{out}) \odot M$: one derivation
#   on top of tutorial 1's, and the exercise below;
# - sampling costs the same for both: 49 passes, one position at a time.
#
# On larger grids (32 x 32 codes) the argument turns around: the dense
# layers grow with the square of the grid, and convolutions win.
#
# Here, the prior over the codes of the VQ-VAE just trained, as `npvae
# train-prior RUN` fits it (`npvae.prior`; the trainer does the same at the
# end of a run unless `--prior-epochs 0`): the codes of the run's training
# digits, a MADE with one hidden layer of 512 units, Adam at $10^{-3}$,
# batches of 128 grids, `PRIOR_EPOCHS` epochs, and after each its negative
# log-likelihood on the codes of the run's test digits, against the uniform
# prior's $49 \log 64$ nats (6 bits per code).

# %%
from npvae.prior import sample_images, train_prior_for_run  # noqa: E402

prior, prior_metrics, _ = train_prior_for_run(trained.run_dir, epochs=PRIOR_EPOCHS,
                                              log=lambda line: print(line) if "epoch" in line else None)
test_nll = prior_metrics[-1]["test_nll"]
uniform = 49 * np.log(64)
print(f"test -log p(codes): {test_nll:.1f} nats per digit; the uniform prior: {uniform:.1f}")

# %% [markdown]
# Sampling draws the 49 codes one position at a time (`MADE.sample`), and the
# VQ-VAE's decoder turns each grid into pixel probabilities
# (`VQVAE.decode`). Top: test digits; middle: their reconstructions, the
# decoder's output for their codes; bottom: code grids drawn from the prior,
# decoded.

# %%
digits = to_unit_interval(mnist.x_test[:10])
reconstructions = vqvae.decode(vqvae.encode(digits))
_, samples = sample_images(vqvae, prior, 10, np.random.default_rng(4))
fig, axes = plt.subplots(3, 10, figsize=(10, 3.3))
for row, (images_row, title) in enumerate([(digits, "test digits"), (reconstructions, "reconstructed"),
                                          (samples, "drawn from the prior, decoded")]):
    for col in range(10):
        axes[row, col].imshow(np.asarray(images_row[col]).reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        axes[row, col].axis("off")
    axes[row, 0].set_title(title, fontsize=8, loc="left")
fig.tight_layout()
tutorial.savefig(fig, "17_prior_samples.png")

# %% [markdown]
# The reconstructions keep each digit's shape. The samples are strokes and
# loops, a few of them digit-like: both the VQ-VAE and its prior trained
# briefly here, and the test log-likelihood printed above says how far the
# prior still is from the codes of real digits (though far ahead of the
# uniform prior). For a run of the command line:
#
#     npvae train-prior runs/vqvae --epochs 20   # its prior again, trained longer
#     npvae sample runs/vqvae                    # code grids from the prior, decoded
#     npvae plot runs/vqvae                      # reconstructions, samples, code usage, codes in context
#
# ## Check
#
# The straight-through backward hands the encoder the decoder's gradient
# exactly, the true gradient through the argmin is zero, every gradient of
# the small VQ-VAE passes central differences, the two losses pull in
# opposite directions, restarts leave fewer dead codes than either update
# alone, the `vqvae` preset trains, and its prior beats the uniform one on
# test codes.

# %%
print(f"total time {time.perf_counter() - started:.1f} s")
assert np.abs(straight - dz_q).max() == 0 and np.abs(straight).max() > 1e-3
assert np.abs(true_gradient).max() == 0
assert all(r.ok for r in results), [str(r) for r in results]
assert np.allclose(cosines, -1, rtol=0, atol=1e-12) and np.allclose(ratios, 4, rtol=1e-12)
last_dead = {name: history[-1][2] for name, (_, history) in runs.items()}
assert max(last_dead["gradient + restarts"], last_dead["ema + restarts"]) < min(last_dead["gradient"],
                                                                              last_dead["ema"]), last_dead
assert all(np.isfinite(last[k]) for k in ("test_recon", "test_codebook", "test_commitment"))
assert np.isfinite(test_nll) and test_nll < uniform
print("check passed: straight-through dz_e equals the decoder's dz_q and the true gradient is 0, "
      f"the VQ-VAE's {len(results)} gradients match central differences, restarts leave fewer dead "
      f"codes ({last_dead}), the vqvae preset trains (test recon {last['test_recon']:.1f}), and its "
      f"prior beats the uniform one ({test_nll:.1f} < {uniform:.1f} nats)")
tutorial.finish()  # the quick mode's temporary folder goes

# %% [markdown]
# ## Practise
#
# Write the quantizer yourself in `17_quantize.py` (in `tutorials/exercises/`):
# the nearest code of every position and its vector (on a tie the first
# code, as `np.argmin` takes it), then the straight-through backward; the
# codebook and commitment losses and their gradients in `17_vq_losses.py`;
# and MADE's masked layer, forward and backward, in `17_masked_dense.py`.
# Then grade them:
#
#     npvae exercises check quantize vq_losses masked_dense
#
# The grader compares your values with npvae's and with central differences
# and, when one is wrong, says how: argmax for argmin, the argmin over the
# wrong axis, rows read without moving $F$ last, the true (zero) gradient
# for the straight-through one, the decoder's gradient sent to the codebook,
# a stop-gradient forgotten (the commitment pulling the codebook, or the
# codebook loss pulling $z_e$), $\beta$ missing, the factor 2, repeated codes
# not added up, the mask missing on $\mathrm{d}W$. `npvae exercises list`
# shows every exercise.
