# %% [markdown]
# # 16. Two stochastic layers
#
# Every model so far had one layer of latent variables. Burda, Grosse and
# Salakhutdinov (2016) also train a VAE with **two**: a lower layer $h_1$
# (100 units) and, above it, $h_2$ (50 units), each a diagonal Gaussian
# computed by a small tanh MLP:
#
# $$q(h_1, h_2 \mid x) = q(h_1 \mid x)\, q(h_2 \mid h_1), \qquad
# p(x, h_1, h_2) = p(h_2)\, p(h_1 \mid h_2)\, p(x \mid h_1).$$
#
# The prior of $h_1$ is no longer $\mathcal{N}(0, I)$ but is itself learned,
# $p(h_1 \mid h_2)$: that is the road to ladder VAEs and NVAE. This tutorial
# uses `npvae.hvae` (the model, `HVAE`, and its $k$-sample objectives,
# `HKSampleObjective`) to show
#
# - why the KL is no longer closed-form, and what the backward looks like:
#   the gradient into $h_1$ collects three paths;
# - that a gradient check finds a missing path, and *where*;
# - why units of the **top** layer go inactive, counted layer by layer.
#
# Derivation: [derivations.md, Two stochastic layers](derivations.md#two-stochastic-layers).
#
# **How long it runs.** Default: the maths on a small float64 model (seconds),
# then three models trained for one epoch on 10,000 digits (`burda-iwae`,
# `burda2-vae`, `burda2-iwae`, $k = 5$) and bounded with $k = 1000$ on 200
# test digits: several minutes on a busy 2-core machine. `NPVAE_QUICK=1`
# (the test suite): 20 steps each, $k = 100$ on 100 digits. The run folders
# go to `tutorials/runs/16_*`; the quick mode writes them to a temporary
# folder, which it removes at the end.

# %%
import sys
import time
from pathlib import Path

import numpy as np

# A checkout runs without installing npvae: put its root (the folder holding npvae/) on the
# path, found from this file or, in a notebook, from the notebook's folder.
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(next((p for p in (here, *here.parents) if (p / "npvae").is_dir()), here)))

from npvae.data import binarize_dynamic, load_mnist, to_unit_interval  # noqa: E402
from npvae.evaluate import iw_bound  # noqa: E402
from npvae.gradcheck import check_model, format_results  # noqa: E402
from npvae.hvae import HKSampleObjective, HVAE, layer_activity  # noqa: E402
from npvae.train import TrainConfig, train  # noqa: E402
from npvae.tutorial import QUICK, Tutorial  # noqa: E402

tutorial = Tutorial("16_two_stochastic_layers")  # its mode and its run folders
if QUICK:
    N_TRAIN, MAX_STEPS, N_EVAL, K_EVAL = 1_000, 20, 100, 100
else:
    N_TRAIN, MAX_STEPS, N_EVAL, K_EVAL = 10_000, None, 200, 1000
print("mode:", "quick" if QUICK else "default")  # no full version: NPVAE_FULL=1 runs the default
started = time.perf_counter()

# %% [markdown]
# ## The model and its log weights
#
# A small float64 model: 12 pixels, $h_1$ of 4 units, $h_2$ of 3. The noise
# of one sample spans both layers, $\varepsilon = [\varepsilon_1 \mid
# \varepsilon_2]$ ($Z_1 + Z_2 = 7$ columns), and the samples are drawn
# ancestrally: $h_1 = \mu_1(x) + \sigma_1(x)\,\varepsilon_1$, then
# $h_2 = \mu_2(h_1) + \sigma_2(h_1)\,\varepsilon_2$. Each sample's log weight
# has five terms:
#
# $$\log w = \log p(x \mid h_1) + \log p(h_2) + \log p(h_1 \mid h_2)
#   - \log q(h_1 \mid x) - \log q(h_2 \mid h_1).$$
#
# The one-layer KL, $\mathrm{KL}(q(z \mid x) \Vert \mathcal{N}(0, I))$, was a
# formula of $\mu$ and $\log\sigma^2$. Here $p(h_1 \mid h_2)$ depends on the
# *sample* $h_2$, and there is no formula to replace the expectation: the
# "KL" is sampled, $\log q(h \mid x) - \log p(h)$, in both objectives.

# %%
rng = np.random.default_rng(0)
model = HVAE(12, ((10,), (8,)), (4, 3), dtype="float64", seed=0)
print(model)
for name, p in model.params.items():  # biases off zero: a generic point for the checks below
    if name.endswith(".b"):
        p += rng.normal(0.0, 0.1, p.shape)
for name, p in list(model.params.items())[:4]:
    print(f"  {name:<10} {p.shape}")
print(f"  ... {len(model.params)} tensors: q_h1, q_h2 (inference), p_x, p_h1 (generative)")
x = rng.random((2, 12))
eps = rng.standard_normal((5, 2, model.noise_dim))     # k = 5 samples of 2 examples
lw = model.log_weights(x, eps)
print("log w (k = 5 samples x 2 examples):\n", np.round(lw.log_w, 2))
print("sampled KL, log q(h|x) - log p(h), per sample:\n", np.round(lw.log_qh - lw.log_ph, 2))

# %% [markdown]
# ## The backward: three paths into $h_1$
#
# The gradient of $-\log w$ with respect to the sample $h_1$ arrives from
# three places before it can go down into $q(h_1 \mid x)$'s network:
#
# 1. from $p(x \mid h_1)$, through the likelihood network;
# 2. from $\log p(h_1 \mid h_2)$, whose point $h_1$ enters directly
#    ($\partial / \partial h_1 = -(h_1 - m)\,e^{-t}$);
# 3. from $q(h_2 \mid h_1)$: $h_2 = \mu_2(h_1) + \sigma_2(h_1)\,\varepsilon_2$
#    and $\log q(h_2 \mid h_1)$'s direct term $-\tfrac12 \log\sigma_2^2(h_1)$
#    both depend on $h_1$, so the gradient with respect to $h_2$'s mean and
#    log-variance goes back through $q_{h_2}$'s network to $h_1$.
#
# So `HKSampleObjective.backward` works from the top: the generative side
# first, then $q(h_2 \mid h_1)$, and only then $q(h_1 \mid x)$, once
# $\mathrm{d}h_1$ is complete. Central differences in float64, for both
# objectives:

# %%
xb = rng.random((4, 12))
e5 = rng.standard_normal((5, 4, model.noise_dim))
results = {}
for objective in ("elbo", "iwae"):
    results[objective] = check_model(model, xb, e5, objective=HKSampleObjective(model, 5, objective))
    print(f"{objective}, k = 5: worst relative error {max(r.rel_error for r in results[objective]):.1e}")
print(format_results(results["iwae"]))

# %% [markdown]
# **A missing path is found, and located.** Drop path 3 (the input gradient
# of $q_{h_2}$'s network, as a hand-written backward easily does) and check
# again: every gradient of $q_{h_1}$ fails, and nothing else does, since
# $h_1$ is where the paths meet. The generative networks' gradients never
# pass through $h_1$'s reparameterization, so they stay right.

# %%
q_h2 = model.nets["q_h2"]
backward = q_h2.backward
q_h2.backward = lambda dout, need_dx=True: 0 * backward(dout, need_dx)   # path 3 forgotten
broken = check_model(model, xb, e5, objective=HKSampleObjective(model, 5, "iwae"))
del q_h2.backward                                                         # the real one again
failed = sorted(r.name for r in broken if not r.ok)
print("failed:", ", ".join(failed))
print(f"worst relative error {max(r.rel_error for r in broken):.2f}")

# %% [markdown]
# ## Training, and the active units of each layer
#
# Burda et al. measure how many latent dimensions a model uses with the
# **activity** of a unit, $A_u = \mathrm{Var}_x\, \mathbb{E}_q[h_u \mid x]$:
# a unit whose mean does not move with $x$ carries nothing, and a unit is
# *active* when $A_u > 0.01$. For two layers it is counted per layer
# (`npvae.hvae.layer_activity`, with $\mathbb{E}[h_2 \mid x]$ taken through
# $h_1$'s mean).
#
# **Why the top layer loses units.** In the sampled KL, each unit of $h_2$
# pays $\log q(h_{2u} \mid h_1) - \log p(h_{2u})$: it costs nats as soon as
# it moves away from the prior. What it buys is indirect: it can only help
# $p(h_1 \mid h_2)$ predict $h_1$, which in turn explains $x$. Much of what
# $h_2$ could say, $h_1$'s own 100 units already carry, and the prior
# $p(h_1 \mid h_2)$ can fit a lot with its mean and variance alone. So the
# optimisation switches units of $h_2$ off (mean fixed, variance 1) early in
# training, and they rarely come back. The IWAE's gradient, dominated by the
# samples that explain $x$ best, rewards a unit that helps those samples, so
# it tends to keep more units active (Burda et al. count them per layer).
#
# Here a miniature: one epoch on the first `N_TRAIN` digits at the first
# learning rate, for the one-layer IWAE and the two-layer VAE and IWAE
# ($k = 5$), then the bound with $k$ = `K_EVAL` on test digits and the active
# units per layer.

# %%
mnist = load_mnist()
x_test = binarize_dynamic(to_unit_interval(mnist.x_test[:N_EVAL]), np.random.default_rng(0))
table = {}
for preset in ("burda-iwae", "burda2-vae", "burda2-iwae"):
    t0 = time.perf_counter()
    config = TrainConfig.from_preset(preset, n_train=N_TRAIN, n_test=N_EVAL, epochs=1,
                                     max_steps=MAX_STEPS, progress=False, figures=False)
    trained = train(config, tutorial.runs / f"16_{preset}", overwrite=True, log=lambda line: None).model
    seconds = time.perf_counter() - t0
    bound = -iw_bound(trained, x_test, K_EVAL, np.random.default_rng(1))
    if isinstance(trained, HVAE):
        activity = layer_activity(trained, x_test)
    else:
        from npvae.evaluate import latent_activity

        activity = [latent_activity(trained, x_test)]
    table[preset] = (bound, activity)
    units = ", ".join(f"h{l + 1} {int((a > 0.01).sum())} of {a.size}" for l, a in enumerate(activity))
    print(f"{preset:<12} -log p(x) <= {bound:7.2f} nats (k={K_EVAL}, {N_EVAL} digits); "
          f"active units: {units}; trained in {seconds:.0f} s")

# %%
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
for ax, (preset, (_, activity)) in zip(axes, table.items()):
    for l, a in enumerate(activity):
        ax.plot(np.sort(a)[::-1], "o-", ms=3, label=f"h{l + 1} ({a.size} units)")
    ax.axhline(0.01, color="gray", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_title(preset)
    ax.set_xlabel("unit, by activity")
    ax.legend()
axes[0].set_ylabel("activity Var_x E[h_u | x]")
fig.tight_layout()
tutorial.savefig(fig, "16_activity_per_layer.png")

# %% [markdown]
# The dashed line is the paper's threshold. After one epoch both layers of
# the two-layer models are still largely active: an encoder near its initial
# weights moves every mean with $x$, and it takes training for the KL to
# push the unused units onto the prior (tutorial 14 saw the same for one
# layer). The short runs below go further.
#
# **At a short budget, from the command line.** Two epochs on the first
# 10,000 training digits, each preset as it stands ($k = 5$), the bound with
# $k = 500$ on the first 500 test digits:
#
#     npvae train --preset burda2-iwae --n-train 10000 --epochs 2 --run-dir runs/burda2-iwae
#     npvae evaluate runs/burda2-iwae --iw-samples 500 --limit 500
#
# and the same for `burda2-vae`, `burda-iwae` and `burda-vae`. On this
# project's shared 2-core machine (load average 12 to 15, from other jobs)
# this printed:
#
# | preset | -log p(x) <= (k = 500, 500 digits) | test -ELBO | active units per layer | training |
# | --- | ---: | ---: | ---: | ---: |
# | `burda-vae`   | 154.19 ± 1.79 | 158.87 | h 50 of 50 | 30 s |
# | `burda-iwae`  | 148.33 ± 1.73 | 165.71 | h 50 of 50 | 15 s |
# | `burda2-vae`  | 178.51 ± 2.04 | 180.68 | h1 96 of 100, **h2 1 of 50** | 61 s |
# | `burda2-iwae` | 150.43 ± 1.79 | 165.14 | h1 100 of 100, h2 36 of 50 | 28 s |
#
# Two findings of the paper already show after two epochs: the two-layer
# VAE has switched off all but one unit of its top layer, while the
# two-layer IWAE keeps 36 of them (the paper too finds the IWAE using more
# units than the VAE), and the IWAE is ahead of the VAE at equal
# $k$. What the second layer buys is not visible yet: at this budget the
# two-layer models are no better than the one-layer ones (the VAE far
# worse, its top layer unused), and all are 60 to 95 nats from the paper's
# numbers, which come from 3,280 epochs. The standard errors are over the
# 500 digits. At the presets' full 8 epochs on all 60,000 digits
# (`python benchmarks/reproduce_burda.py --layers 1,2 --ks 5 --sampled-ks none
# --eval-k 1000 --limit 1000`, paired over the first 1,000 test digits; the README's
# table) the picture holds: the two-layer IWAE is 10.99 ± 0.32 nats ahead of
# the two-layer VAE, whose top layer keeps 1 active unit of 50 (the IWAE's:
# 4), and two layers are still behind one, by 15.86 ± 0.43 (VAE) and
# 5.22 ± 0.23 (IWAE) nats, where the paper, after 3,280 epochs, has them
# ahead by 1.46 and 1.65.
#
# ## Check
#
# The two-layer backward passes central differences for both objectives; the
# gradient check finds a dropped path into $h_1$ in $q_{h_1}$'s gradients and
# nowhere else; and every trained model gives a finite bound.

# %%
print(f"total time {time.perf_counter() - started:.1f} s")
assert all(r.ok for rs in results.values() for r in rs)
assert failed and all(name.startswith("q_h1.") for name in failed), failed
assert all(np.isfinite(b) and b > 0 for b, _ in table.values())
assert [a.size for a in table["burda2-iwae"][1]] == [100, 50]
print("check passed: the two-layer gradients match central differences (elbo and iwae, k = 5), "
      f"a dropped path into h1 fails exactly q_h1's {len(failed)} gradients, and all three "
      "models train and bound")
tutorial.finish()  # the quick mode's temporary folder goes

# %% [markdown]
# ## Practise
#
# Write the backward through the second stochastic layer yourself in
# `16_hvae.py` (in `tutorials/exercises/`): one $q$ layer's gradients (the
# path through $h = \mu + e^{\log\sigma^2/2} \varepsilon$ and $\log q$'s direct
# term), then the gradient into $h_1$ of a two-layer model whose
# $q(h_2 \mid h_1)$ and $p(h_1 \mid h_2)$ are one affine layer each: from
# $\log p(h_1 \mid h_2)$ directly (path A) and back through $h_2$ and
# $q(h_2 \mid h_1)$ (path B). Then grade it:
#
#     npvae exercises check hvae
#
# The grader compares your values with npvae's own two-layer backward and
# with central differences and, when one is wrong, says how: path A or
# path B left out, $\log q$'s direct term added where it is subtracted, the
# standard deviation where the variance belongs (or the other way round), a
# missing $1/B$, the prior's term or $p(h_1 \mid h_2)$'s path into $h_2$
# forgotten. `npvae exercises list` shows every exercise.
