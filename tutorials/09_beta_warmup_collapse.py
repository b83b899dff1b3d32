# %% [markdown]
# # 9. beta, KL warm-up and posterior collapse
#
# The VAE loss weighs its two terms with $\beta$:
#
# $$\mathcal{L}_\beta = \underbrace{\mathbb{E}_q[-\log p(x \mid z)]}_{\text{recon}} + \beta\, \underbrace{\mathrm{KL}(q(z \mid x) \,\Vert\, p(z))}_{\text{kl}}.$$
#
# With $\beta = 1$ it is the negative ELBO, a bound on $-\log p(x)$. The KL,
# averaged over the data, is the information $z$ carries about $x$ *plus* a
# term that is never negative,
#
# $$\mathbb{E}_{x}\,\mathrm{KL}(q(z \mid x) \,\Vert\, p(z)) = I_q(x; z) + \mathrm{KL}(q(z) \,\Vert\, p(z)), \qquad q(z) = \mathbb{E}_x\, q(z \mid x),$$
#
# so it is an upper bound on that information, in nats (the second term
# measures how far the codes of all the digits together, the *aggregate
# posterior* $q(z)$, are from the prior). $\beta$ is the **price of a nat**
# of KL: a latent dimension is worth using only when it lowers the
# reconstruction term by more than $\beta$ times its KL. With $\beta < 1$
# information is cheap; with $\beta > 1$ (the $\beta$-VAE of Higgins et al.,
# 2017) it is dear, and dimensions that do not pay for themselves are
# switched off: their posterior becomes the prior, $q(z_u \mid x) =
# \mathcal{N}(0, 1)$ for every $x$, their KL is 0 and the decoder ignores
# them. That is **posterior collapse**, and when every dimension goes, the
# decoder can only output the mean digit.
#
# Two measurements of a trained model tell which dimensions are in use:
#
# - the **KL per dimension**, $\mathrm{kl}_u = \frac1N \sum_i \tfrac12\bigl(e^{s_{iu}} + \mu_{iu}^2 - 1 - s_{iu}\bigr)$
#   (`npvae.evaluate.kl_per_dim`; it sums to the KL);
# - the **active units** (Burda et al., 2016): dimension $u$ is active when
#   its posterior mean moves with the input,
#   $A_u = \mathrm{Var}_x\bigl(\mu_u(x)\bigr) > 0.01$ (`npvae.evaluate.active_units`).
#
# We train the `pytorch-example` preset (tutorial 8) with several $\beta$,
# then with a **KL warm-up**: $\beta$ rising linearly from 0 over the first
# epochs (`warmup_epochs`), as Bowman et al. (2016) and Sønderby et al. (2016)
# do to keep the code from collapsing before the decoder has learned to use it.
#
# **How long it runs.** Six training runs, each on the first 10,000 training
# digits for 6 epochs: about 40 s on one laptop core. `NPVAE_FULL=1`: each
# on all 60,000 digits for 10 epochs, about 6 minutes. `NPVAE_QUICK=1` (the
# test suite): 2,000 digits for 3 epochs, about 4 s. Collapse is slow, a
# matter of optimizer steps rather than of data, so every run uses batches
# of 32 instead of the preset's 128: more steps in the same time. The run
# folders go to `tutorials/runs/09_*`. In a notebook
# the figures appear below their cells; run as a script, they
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

from npvae.data import load_mnist, to_unit_interval  # noqa: E402
from npvae.evaluate import active_units, evaluate_elbo, kl_per_dim, latent_activity  # noqa: E402
from npvae.train import TrainConfig, train  # noqa: E402
from npvae.tutorial import FULL, QUICK, Tutorial  # noqa: E402

tutorial = Tutorial("09_beta_warmup_collapse")  # its mode, its folders, and inline figures in a notebook
import matplotlib.pyplot as plt  # noqa: E402  (after Tutorial, which picks a script's backend)

if QUICK:
    N_TRAIN, N_TEST, EPOCHS = 2_000, 500, 3
elif FULL:
    N_TRAIN, N_TEST, EPOCHS = None, None, 10  # None: all of MNIST
else:
    N_TRAIN, N_TEST, EPOCHS = 10_000, 2_000, 6
BETAS = (0.5, 1.0, 4.0, 8.0, 32.0)
WARMUP_BETA, WARMUP_EPOCHS = 8.0, EPOCHS / 2
print("mode:", tutorial.mode)
RUNS = tutorial.runs
started = time.perf_counter()

# %% [markdown]
# ## The data
#
# As in tutorial 8, `n_train` and `n_test` keep the first $N$ digits of each
# set (`None`: all of them). We measure on the test digits the runs are
# evaluated on.

# %%
mnist = load_mnist()
x_train = to_unit_interval(mnist.x_train[:N_TRAIN])
x_test = to_unit_interval(mnist.x_test[:N_TEST])
p_mean = np.clip(x_train.mean(axis=0, dtype=np.float64), 1e-6, 1 - 1e-6)
mean_digit_nll = float(-(x_test * np.log(p_mean) + (1 - x_test) * np.log1p(-p_mean)).sum(axis=1).mean())
print(f"{len(x_train)} training digits, {len(x_test)} test digits; "
      f"the mean digit (a decoder that ignores z) costs {mean_digit_nll:.1f} nats")

# %% [markdown]
# ## One run per beta
#
# Everything else is the preset's (but the batches of 32), and every run starts from the same
# initial weights (the same `seed`). After training we measure, on the test
# digits: the negative ELBO (`evaluate_elbo(..., beta=1)`, so the runs are
# compared on the same yardstick whatever $\beta$ they were trained with),
# its two terms, the active units, and the KL per dimension.


# %%
def run(beta, warmup_epochs=0.0):
    name = f"09_beta{beta:g}" + (f"_warmup{warmup_epochs:g}" if warmup_epochs else "")
    config = TrainConfig.from_preset("pytorch-example", beta=beta, warmup_epochs=warmup_epochs,
                                     epochs=EPOCHS, batch_size=32, progress=False, figures=False,
                                     n_train=N_TRAIN, n_test=N_TEST)
    t0 = time.perf_counter()
    result = train(config, RUNS / name, overwrite=True, log=lambda line: None)
    model = result.model
    terms = evaluate_elbo(model, x_test, rng=np.random.default_rng(0), beta=1.0)
    return dict(beta=beta, warmup=warmup_epochs, result=result, terms=terms,
                kl_u=kl_per_dim(model, x_test), activity=latent_activity(model, x_test),
                au=active_units(model, x_test), steps=result.state["global_step"],
                seconds=time.perf_counter() - t0)


def show(r):
    t = r["terms"]
    warm = f"{r['warmup']:g} ep" if r["warmup"] else "none"
    print(f"{r['beta']:>5g} {warm:>8} {t['loss']:8.1f} {t['recon']:7.1f} {t['kl']:6.2f} {r['au']:>7} "
          f"{int((r['kl_u'] > 0.1).sum()):>11}   {r['steps']} steps, {r['seconds']:.1f} s")


header = (f"{'beta':>5} {'warm-up':>8} {'-ELBO':>8} {'recon':>7} {'kl':>6} {'active':>7} "
          f"{'kl_u > 0.1':>11}   (test digits, nats per example)")
print(header)
runs = {}
for beta in BETAS:
    runs[beta] = run(beta)
    show(runs[beta])

# %% [markdown]
# Down the table, as $\beta$ grows:
#
# - **The KL falls**: a nat costs more, so the model buys fewer. The
#   reconstruction term rises in step: less information about $x$, blurrier
#   reconstructions.
# - **Dimensions switch off.** The last two columns count the dimensions
#   still in use: active units, and dimensions above 0.1 nats. The small $\beta$s
#   use all or nearly all 20 dimensions, the counts fall as $\beta$ rises,
#   and $\beta = 32$ keeps none: total collapse, where every digit gets the
#   prior as its posterior and the reconstruction term is the mean digit's
#   (compare the number printed above the table; the check at the end
#   asserts both). Collapse continues with training: run the full version
#   (`NPVAE_FULL=1`, 10 epochs on all 60,000 digits) and $\beta = 4$ and $8$
#   end with fewer active units than here, while $\beta = 0.5$ and $1$
#   still use all 20.
# - **The ELBO is best near $\beta = 1$**, the only $\beta$ for which the
#   training objective *is* the ELBO. $\beta = 0.5$ reconstructs better but
#   pays for it in KL.
#
# The active-unit count and the KL per dimension answer slightly different
# questions. A dimension on its way to collapse stops carrying information
# (its KL falls below a tenth of a nat) before its mean stops moving with
# $x$: the variance of its mean can stay just above the 0.01 threshold for a
# while. Sorted, here are both for $\beta = 8$:

# %%
with np.printoptions(precision=3, suppress=True, linewidth=120):
    print("beta = 8, Var_x(mu_u) sorted:", np.sort(runs[8.0]["activity"])[::-1])
    print("beta = 8, kl_u sorted:       ", np.sort(runs[8.0]["kl_u"])[::-1])
fading = (runs[8.0]["activity"] > 0.01) & (runs[8.0]["kl_u"] < 0.1)
print(f"{int(fading.sum())} dimensions count as active units (variance above 0.01) while carrying less "
      f"than 0.1 nats; {int((runs[8.0]['kl_u'] < 0.01).sum())} dimensions carry less than 0.01 nats")

# %% [markdown]
# The last line counts the dimensions caught between the two measures:
# active by the variance of their mean, yet carrying almost nothing. How
# many there are depends on the run (and, by a few, on the machine: the
# order in which a CPU's BLAS sums changes the last bits, and collapse
# amplifies them); in our default runs there were several.

# %% [markdown]
# ## KL warm-up
#
# Warm-up trains with $\beta_t = \beta \cdot \min(1, t / T)$ at step $t$, with
# $T$ the steps of `warmup_epochs` epochs: the code is free at first, and
# its price rises to $\beta$. We repeat the $\beta = 8$ run with a warm-up
# over the first half of training. The metrics rows record the $\beta$ of
# each epoch's last step, and the training terms averaged over the epoch.

# %%
warm = run(WARMUP_BETA, WARMUP_EPOCHS)
print(header)
show(runs[WARMUP_BETA])
show(warm)

print(f"\n{'':>6}{'no warm-up':^28}{'warm-up':^30}")
print(f"{'epoch':>5} {'beta':>6} {'recon':>8} {'kl':>7}    {'beta':>6} {'recon':>8} {'kl':>7}   (training, "
      "averaged over the epoch)")
for plain_row, warm_row in zip(runs[WARMUP_BETA]["result"].metrics, warm["result"].metrics):
    print(f"{plain_row['epoch']:>5} {plain_row['beta']:6.2f} {plain_row['train_recon']:8.1f} "
          f"{plain_row['train_kl']:7.2f}    {warm_row['beta']:6.2f} {warm_row['train_recon']:8.1f} "
          f"{warm_row['train_kl']:7.2f}")
ends = {name: r for name, r in (("no warm-up", runs[WARMUP_BETA]), ("warm-up", warm))}
print("\nat the end, on the test digits: " + "; ".join(
    f"{name}: -ELBO {r['terms']['loss']:.1f} nats, {r['au']} active units, "
    f"{int((r['kl_u'] > 0.1).sum())} dims above 0.1 nats" for name, r in ends.items()))

# %% [markdown]
# During warm-up the model uses its code freely: its KL in the first epoch is
# many times that of the run that paid the full price from step 1 (the
# first row of the table; the check asserts at least twice). Once $\beta$
# reaches 8 the warm-up run's KL falls as well: warm-up changes the path
# more than the destination. Where the two end after the same number of
# steps is printed below. In our default runs warm-up ended with more active
# units and a better ELBO (by a few nats): the dimensions that were in use
# when the price went up were worth keeping, for a while at least. In our
# full runs the two ended close, and the ELBO after warm-up was slightly
# *worse* (by about a nat): with more training, the destination wins.
# At $\beta = 1$ there is nothing for warm-up to rescue here: without it,
# all 20 dimensions stayed in use (the first table). Our decoder, an MLP
# that draws each pixel independently given $z$, needs the code to draw a
# digit at all. Bowman et al. introduced warm-up for an LSTM decoder of
# sentences, which can model its data well without $z$ and so collapses
# far more readily.
#
# ## The figure: KL per dimension
#
# Each run's 20 values of $\mathrm{kl}_u$, sorted from largest to smallest
# (dimension numbers mean nothing across runs: which dimension survives
# depends on the initial weights).

# %%
fig, (ax_beta, ax_warm) = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
dims = np.arange(1, 21)
width = 0.8 / len(BETAS)
for i, beta in enumerate(BETAS):
    ax_beta.bar(dims + (i - (len(BETAS) - 1) / 2) * width, np.sort(runs[beta]["kl_u"])[::-1], width,
                label=f"beta = {beta:g} ({runs[beta]['au']} active)")
ax_beta.set(xlabel="latent dimension, sorted by its KL", ylabel="KL per dimension (nats)",
            title="KL per dimension, by beta", xticks=dims)
ax_beta.legend(fontsize=8)
for i, (r, label) in enumerate(((runs[WARMUP_BETA], "no warm-up"),
                                (warm, f"warm-up over {WARMUP_EPOCHS:g} epochs"))):
    ax_warm.bar(dims + (i - 0.5) * 0.4, np.sort(r["kl_u"])[::-1], 0.4,
                label=f"{label} ({r['au']} active)", color=f"C{3 + 2 * i}")
ax_warm.set(xlabel="latent dimension, sorted by its KL", title=f"beta = {WARMUP_BETA:g}, with and without warm-up",
            xticks=dims)
ax_warm.legend(fontsize=8)
fig.tight_layout()
figure = tutorial.savefig(fig, "09_kl_per_dim.png")

# %% [markdown]
# ## Check
#
# Raising $\beta$ lowers the KL at every step of the ladder, never adds an
# active unit, and at the top leaves fewer active units than at the bottom;
# the largest $\beta$ reconstructs no better than the mean digit (within 5
# nats); and warm-up lets the code carry more in the first epoch.

# %%
kls = [runs[b]["terms"]["kl"] for b in BETAS]
aus = [runs[b]["au"] for b in BETAS]
first_kl = {name: r["result"].metrics[0]["train_kl"] for name, r in (("plain", runs[WARMUP_BETA]), ("warm", warm))}
print("betas", BETAS, " KL", [round(k, 2) for k in kls], " active units", aus)
print(f"first-epoch KL at beta = {WARMUP_BETA:g}: {first_kl['plain']:.2f} without warm-up, "
      f"{first_kl['warm']:.2f} with")
print(f"total time {time.perf_counter() - started:.1f} s")
assert all(a > b for a, b in zip(kls, kls[1:])), kls
assert all(a >= b for a, b in zip(aus, aus[1:])) and aus[-1] < aus[0], aus
assert runs[BETAS[-1]]["terms"]["recon"] > mean_digit_nll - 5
assert first_kl["warm"] > 2 * first_kl["plain"], first_kl
assert figure.is_file()
print(f"check passed: as beta rises from {BETAS[0]:g} to {BETAS[-1]:g} the KL falls from {kls[0]:.1f} to "
      f"{kls[-1]:.2f} nats and the active units from {aus[0]} to {aus[-1]}; warm-up raises the first "
      f"epoch's KL from {first_kl['plain']:.2f} to {first_kl['warm']:.2f} nats")
tutorial.finish()  # the quick mode's temporary folder goes
