# %% [markdown]
# # 10. Evaluation: the ELBO, the importance-weighted bound, and a 2-D latent space
#
# Training reports the negative ELBO, and the ELBO is only a **lower bound**
# on the quantity we care about, the log-likelihood $\log p(x)$ of a test
# digit. How loose is it? Burda, Grosse and Salakhutdinov (2016) tighten it
# with $k$ samples $z_1, \dots, z_k \sim q(z \mid x)$ and the importance
# weights $w_l = p(x \mid z_l)\, p(z_l) / q(z_l \mid x)$:
#
# $$\mathcal{L}_k = \mathbb{E}\left[\log \frac1k \sum_{l=1}^{k} w_l\right] \le \log p(x),
# \qquad \mathcal{L}_1 = \text{the ELBO}, \qquad \mathcal{L}_1 \le \mathcal{L}_{10} \le \mathcal{L}_{100} \le \dots \to \log p(x).$$
#
# (Derivation, and the log-sum-exp that keeps $e^{-150}$ from underflowing:
# [derivations.md, Importance-weighted bound](derivations.md#importance-weighted-bound).)
# We measure it with `npvae.evaluate.iw_bound` on a VAE with a **2-D latent
# space**, which also lets us draw the whole latent space on a page.
#
# **How long it runs.** By default: 2 epochs on all of MNIST, then the bound
# for $k$ = 1, 10, 100 on 500 test digits, about 10 s on one laptop core.
# `NPVAE_FULL=1`: 10 epochs, and $k$ up to 1000, about 45 s.
# `NPVAE_QUICK=1` (the test suite): 200 training steps, 200 test digits, a
# few seconds. The run folder goes to `tutorials/runs/10_latent2/`. In a
# notebook the figures appear below their cells; run as a script, they
# go to `tutorials/runs/figures/` (`NPVAE_SAVE_FIGURES=1`: the committed
# `tutorials/figures/`). The quick mode writes runs and figures to a
# temporary folder, which it removes at the end.

# %%
import sys
import time
from pathlib import Path

import numpy as np

# A checkout runs without installing npvae: put its root (the folder holding npvae/) on the
# path, found from this file or, in a notebook, from the notebook's folder.
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(next((p for p in (here, *here.parents) if (p / "npvae").is_dir()), here)))

from npvae import plots  # noqa: E402
from npvae.data import load_mnist, to_unit_interval  # noqa: E402
from npvae.evaluate import encode_means, evaluate_elbo, iw_bound  # noqa: E402
from npvae.train import TrainConfig, train  # noqa: E402
from npvae.tutorial import FULL, QUICK, Tutorial  # noqa: E402

tutorial = Tutorial("10_evaluation")  # its mode, its folders, and inline figures in a notebook
if QUICK:
    EPOCHS, MAX_STEPS, N_EVAL, KS, SEEDS, N_LATENT_PLOT = 1, 200, 200, (1, 10, 100), (10, 11), 1_000
elif FULL:
    EPOCHS, MAX_STEPS, N_EVAL, KS, SEEDS, N_LATENT_PLOT = 10, None, 500, (1, 10, 100, 1000), (10, 11, 12), 5_000
else:
    EPOCHS, MAX_STEPS, N_EVAL, KS, SEEDS, N_LATENT_PLOT = 2, None, 500, (1, 10, 100), (10, 11, 12), 5_000
print("mode:", tutorial.mode)
RUNS, FIGURES = tutorial.runs, tutorial.figures
started = time.perf_counter()

# %% [markdown]
# ## A VAE with two latent dimensions
#
# The `pytorch-example` preset of tutorial 8 with `latent=2`. Two numbers per
# digit is a tight bottleneck, so expect a worse loss than the 20-dimensional
# model's; in exchange we can see where every digit goes. (The quick mode
# stops after `max_steps` steps, in the middle of the first epoch: the model
# is then whatever it is at that step, and no epoch metrics are written.)

# %%
config = TrainConfig.from_preset("pytorch-example", latent=2, epochs=EPOCHS, max_steps=MAX_STEPS,
                                 progress=False, figures=False)
result = train(config, RUNS / "10_latent2", overwrite=True, log=print)
model = result.model
print(model, "after", result.state["global_step"], "steps")

mnist = load_mnist()
x_test = to_unit_interval(mnist.x_test)
y_test = mnist.y_test
x_eval = x_test[:N_EVAL]  # the digits we evaluate the bounds on

# %% [markdown]
# ## The ELBO, two ways
#
# `evaluate_elbo` draws one $z$ per digit and reports the reconstruction term
# at that $z$, and the KL. By default the KL is the closed form of tutorial 4,
# as in training. With `kl="sampled"` it is the one-sample estimate
# $\log q(z \mid x) - \log p(z)$ at the same $z$: noisier, equal to the closed
# form only on average, but it makes $-\mathrm{loss}$ **exactly** the $k = 1$
# importance-weighted bound when both use the same noise. Same seed, so the
# reconstruction terms are identical:

# %%
elbo_analytic = evaluate_elbo(model, x_eval, batch_size=100, rng=np.random.default_rng(1), beta=1.0)
elbo_sampled = evaluate_elbo(model, x_eval, batch_size=100, rng=np.random.default_rng(1), beta=1.0,
                             kl="sampled")
for name, terms in (("closed-form KL", elbo_analytic), ("sampled KL", elbo_sampled)):
    print(f"{name:<15} -ELBO {terms['loss']:8.3f} = recon {terms['recon']:8.3f} + kl {terms['kl']:6.3f}")

# %% [markdown]
# ## The importance-weighted bound
#
# First $k = 1$ with the same seed and batching as the sampled-KL ELBO: the
# same number, up to float32 rounding. Then each $k$ with three other seeds
# (two in quick mode), so we can tell a real rise from the noise of the
# sampling: the spread across seeds is printed next to the mean.

# %%
bound_1 = iw_bound(model, x_eval, 1, np.random.default_rng(1), batch_size=100)
k1_difference = abs(bound_1 + elbo_sampled["loss"])
print(f"L_1 = {bound_1:.6f}, -ELBO (sampled KL) = {elbo_sampled['loss']:.6f}, "
      f"difference {k1_difference:.1e} nats")

bounds = {}
print(f"{'k':>5} {'L_k (mean over seeds)':>22} {'spread':>7} {'L_k - L_1':>10} {'seconds':>8}")
for k in KS:
    t0 = time.perf_counter()
    values = [iw_bound(model, x_eval, k, np.random.default_rng(seed), batch_size=100) for seed in SEEDS]
    bounds[k] = dict(mean=float(np.mean(values)), spread=float(np.ptp(values)))
    print(f"{k:>5} {bounds[k]['mean']:22.3f} {bounds[k]['spread']:7.3f} "
          f"{bounds[k]['mean'] - bounds[1]['mean']:10.3f} {time.perf_counter() - t0:8.1f}")
k_max = KS[-1]
print(f"-L_{k_max} = {-bounds[k_max]['mean']:.2f} nats: the estimate of -log p(x) for these {len(x_eval)} digits "
      f"(above it, up to sampling noise); the negative ELBO, -L_1 = {-bounds[1]['mean']:.2f}, is "
      f"{bounds[k_max]['mean'] - bounds[1]['mean']:.2f} nats higher")
print("gain of each tenfold k:", ", ".join(f"L_{b} - L_{a} = {bounds[b]['mean'] - bounds[a]['mean']:.2f}"
                                          for a, b in zip(KS, KS[1:])), "nats")

# %% [markdown]
# The bound rises with $k$, by less and less: the last line above gives the
# gain of each tenfold $k$. In our default runs, going from $k = 1$ to 10
# gained about 2 nats and from 10 to 100 well under 1 more; in our full
# runs (10 epochs) the three tenfold steps to $k = 1000$ gained about 2,
# 0.8 and 0.5 nats, about 3.4 in all (the check asserts only that the rise
# is well above the sampling spread). Signs: $\mathcal{L}_k$ is a log
# likelihood, negative, $-159$ to $-157$ nats in the default run; it *rises* towards
# $\log p(x)$, so $-\mathcal{L}_k$, the number in nats per digit we
# usually quote, *falls* towards $-\log p(x)$ from above. Since $\mathcal{L}_k$ approaches
# $\log p(x)$ from below, the rise is a lower estimate of the **gap of the
# ELBO**,
# $\log p(x) - \mathrm{ELBO} = \mathbb{E}_x\,\mathrm{KL}(q(z \mid x) \,\Vert\, p(z \mid x))$:
# how far the encoder's Gaussian is from the true posterior. A few nats:
# in two dimensions a Gaussian fits the posterior well. The spread across
# seeds is much smaller for $k \ge 10$ than for $k = 1$: the average of many
# weights is a steadier number than one weight.
#
# Reading the numbers: about 157 nats per digit (about 148 in our full
# runs), where tutorial 8's 20-dimensional model reached about 106 on the
# same pixels. Two latent dimensions hold little: the KL, an upper bound on
# the information $z$ carries about $x$ (tutorial 9), is about 5 nats
# (printed above).
#
# ## The latent space
#
# With $Z = 2$ the encoder means $\mu(x)$ are points in the plane. Coloured by
# the digit's label (the model never saw the labels), the classes form
# regions. A number to go with the picture: classify each digit by the
# nearest class centre of its $\mu(x)$ (centres from the first half of the
# test digits, scored on the second half); chance is 10%.

# %%
mu = encode_means(model, x_test[:N_LATENT_PLOT]).astype(np.float64)
labels = y_test[:N_LATENT_PLOT]
half = len(mu) // 2
centres = np.stack([mu[:half][labels[:half] == c].mean(axis=0) for c in range(10)])
nearest = np.argmin(((mu[half:, None, :] - centres[None]) ** 2).sum(axis=-1), axis=1)
centre_accuracy = float((nearest == labels[half:]).mean())
print(f"encoder means of {len(mu)} test digits: mean {np.round(mu.mean(axis=0), 2)}, "
      f"std {np.round(mu.std(axis=0), 2)}")
print(f"nearest class centre in the 2-D latent space: {centre_accuracy:.1%} correct (chance: 10%)")

latents_figure = plots.plot_latents(model, x_test[:N_LATENT_PLOT], labels, FIGURES / "10_latents.png")
manifold_figure = plots.plot_manifold(model, FIGURES / "10_manifold.png", x=x_test[:N_LATENT_PLOT])
print(f"the manifold grid runs over z from -{plots.manifold_reach(mu):g} to {plots.manifold_reach(mu):g} on each axis")
tutorial.show(latents_figure, manifold_figure)

# %% [markdown]
# The means spread over a region about the prior's size (their standard
# deviations, printed above, are between 1 and 2; the prior's is 1): the KL
# keeps them there. The nearest class centre was right for about 55% of
# the digits in our default and full runs (your run's share is printed
# above; the check asserts more than 30%, three times chance).
# Classes that are drawn alike (4 and 9, 3, 5 and 8) border each other,
# which is why the nearest-centre score is far from perfect.
#
# The manifold figure turns the question round: a 20 x 20 grid of $z$, each
# decoded. The grid is evenly spaced in $z$, from $-r$ to $r$ on each axis,
# with $r$ (printed above) at least 3 prior standard deviations and wide
# enough to hold 99% of the latent means' coordinates: it covers the
# scatter beside it, on the same axes. Moving across it, one digit morphs
# smoothly into the next: the decoder is a continuous function of $z$, and
# the KL term packed the codes of all the digits into the region the prior
# covers, leaving no empty space between them for samples to fall into.
#
# To move through this space yourself: `npvae explore tutorials/runs/10_latent2`
# opens a window with this scatter (click or drag on it) beside the decoded
# digit at that point; in a notebook, `npvae.explore.LatentExplorer(model,
# x_test, y_test).widget()` shows the same with sliders (it needs
# ipywidgets).
#
# ## Check
#
# The $k = 1$ bound equals the sampled-KL ELBO for the same noise (to
# float32 rounding), and the bound for the largest $k$ exceeds the $k = 1$
# bound by more than the sampling spread of either, so the rise is not noise.
# Each step up in $k$ does not fall by more than that spread.

# %%
noise = max(b["spread"] for b in bounds.values())
rise = bounds[k_max]["mean"] - bounds[1]["mean"]
print(f"|L_1 + ELBO_sampled| = {k1_difference:.1e}; L_{k_max} - L_1 = {rise:.2f} nats; largest spread "
      f"across seeds {noise:.2f} nats")
print(f"total time {time.perf_counter() - started:.1f} s")
assert k1_difference < 1e-4, k1_difference
assert abs(elbo_sampled["recon"] - elbo_analytic["recon"]) < 1e-9
assert rise > max(0.5, 2 * noise), (rise, noise)
assert all(bounds[b]["mean"] > bounds[a]["mean"] - noise for a, b in zip(KS, KS[1:])), bounds
assert centre_accuracy > 0.3
assert (np.abs(mu) <= plots.manifold_reach(mu)).mean() >= 0.99  # the manifold covers the scatter
assert latents_figure.is_file() and manifold_figure.is_file()
print(f"check passed: the k = 1 bound equals the sampled-KL ELBO (difference {k1_difference:.0e} nats), "
      f"and the bound rises by {rise:.2f} nats from k = 1 to k = {k_max}, more than twice the "
      f"sampling spread ({noise:.2f})")
tutorial.finish()  # the quick mode's temporary folder goes

# %% [markdown]
# ## Practise
#
# Write log-mean-exp and the importance-weighted bound yourself in
# `10_iw_bound.py` (in `tutorials/exercises/`), then grade it:
#
#     npvae exercises check iw_bound
#
# The grader compares your values with npvae's and, when one is wrong, says how
# (log-sum-exp for log-mean-exp, an overflow at +/-1000, the mean log weight
# for the bound); `npvae exercises list` shows every exercise.
