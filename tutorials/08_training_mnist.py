# %% [markdown]
# # 8. Training on MNIST, and reading what training writes
#
# Tutorials 1 to 7 built every piece of a VAE and checked each one. Now we
# train one: the `pytorch-example` preset, PyTorch's `examples/vae` in
# npvae's terms (784-400-20 with ReLU, a Bernoulli likelihood on pixels in
# $[0, 1]$, Adam with learning rate $10^{-3}$, batches of 128). One call does
# it, `npvae.train.train(config, run_dir)`; the rest of this tutorial reads
# what it leaves behind: the metrics of every epoch, the curves, the
# reconstructions and the samples.
#
# **How long it runs.** By default: 2 epochs on all 60,000 training digits,
# about 10 s on one laptop core. With `NPVAE_FULL=1` in the environment
# (`NPVAE_FULL=1 python tutorials/08_training_mnist.py`): the preset's full
# 10 epochs, about 30 s. With `NPVAE_QUICK=1` (what the test suite sets): 2
# epochs on the first 10,000 training and 1,000 test digits, a few seconds.
# The run folder goes to `tutorials/runs/08_training_mnist/`. In a
# notebook the figures appear below their cells; run as a script, they
# go to `tutorials/runs/figures/` (`NPVAE_SAVE_FIGURES=1`: the committed
# `tutorials/figures/`). The quick mode writes runs and figures to a
# temporary folder, which it removes at the end.
#
# **Units.** Every loss below is in **nats per example**: summed over the 784
# pixels and the 20 latent dimensions, averaged over the examples
# ([derivations.md, Conventions](derivations.md#conventions)).

# %%
import sys
import time
from pathlib import Path

import numpy as np

# A checkout runs without installing npvae: put its root (the folder holding npvae/) on the
# path, found from this file or, in a notebook, from the notebook's folder.
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(next((p for p in (here, *here.parents) if (p / "npvae").is_dir()), here)))

from npvae import VAE  # noqa: E402
from npvae import plots  # noqa: E402
from npvae.data import load_mnist, to_unit_interval  # noqa: E402
from npvae.evaluate import evaluate_elbo  # noqa: E402
from npvae.runs import read_metrics  # noqa: E402
from npvae.train import TrainConfig, resume, train  # noqa: E402
from npvae.tutorial import FULL, QUICK, Tutorial  # noqa: E402

tutorial = Tutorial("08_training_mnist")  # its mode, its folders, and inline figures in a notebook
import matplotlib.pyplot as plt  # noqa: E402  (after Tutorial, which picks a script's backend)

if QUICK:
    N_TRAIN, N_TEST, EPOCHS, BOUND = 10_000, 1_000, 2, 185.0
elif FULL:
    N_TRAIN, N_TEST, EPOCHS, BOUND = None, None, 10, 112.0  # None: all of MNIST
else:
    N_TRAIN, N_TEST, EPOCHS, BOUND = None, None, 2, 140.0
print("mode:", tutorial.mode)
RUNS, FIGURES = tutorial.runs, tutorial.figures
started = time.perf_counter()

# %% [markdown]
# ## The data
#
# MNIST ships with npvae, so nothing is downloaded. The quick mode trains on
# the first $N$ digits only: `TrainConfig`'s `n_train` and `n_test` (the
# flags `--n-train` and `--n-test` of `npvae train`) keep the start of each
# set; `None` keeps all of it.

# %%
mnist = load_mnist()
n_test = len(mnist.x_test) if N_TEST is None else N_TEST
x_test = to_unit_interval(mnist.x_test[:n_test])  # (N, 784) in [0, 1], as the trainer sees them
y_test = mnist.y_test[:n_test]

# %% [markdown]
# ## The configuration
#
# `TrainConfig.from_preset(name, **overrides)` takes the preset and changes
# what we ask: the number of epochs, the part of MNIST, and no progress bar or
# per-epoch figures (we draw the figures ourselves below). Everything that
# shapes the numbers is in the config, including the `seed` from which every
# random stream (initial weights, shuffling, the noise $\varepsilon$) is
# derived: the same config gives the same numbers on every run.

# %%
config = TrainConfig.from_preset("pytorch-example", epochs=EPOCHS, progress=False, figures=False,
                                 n_train=N_TRAIN, n_test=N_TEST)
for name in ("hidden", "latent", "activation", "likelihood", "init", "batch_size", "lr", "epochs", "seed"):
    print(f"  {name:<11} {getattr(config, name)}")

# %% [markdown]
# ## Two numbers to beat, before any training
#
# The first is the untrained model: its decoder outputs probabilities near
# $1/2$ for every pixel, and each pixel then costs about $\log 2$ nats, so the
# loss starts near $784 \log 2 \approx 543$ nats (a little above: the
# untrained outputs are not exactly $1/2$).
#
# The second is more telling: the **best model that ignores $z$**. A
# Bernoulli decoder that cannot see the code can do no better than predict,
# for every pixel, its average over the training set: the "mean digit". Its
# loss is the cross-entropy of each test digit against that mean image. A
# VAE whose loss sits at this number has learned nothing from its latent
# code (tutorials 9 and 11 show models that end up there); everything below
# it is what the code buys.

# %%
x_probe = x_test[:1000]  # the digits we evaluate on while training runs
untrained = VAE(**config.model_kwargs(x_dim=784))  # the trainer's own initial weights
start_terms = evaluate_elbo(untrained, x_probe, rng=np.random.default_rng(0), beta=1.0)

x_train = to_unit_interval(mnist.x_train[:N_TRAIN])
p_mean = np.clip(x_train.mean(axis=0, dtype=np.float64), 1e-6, 1 - 1e-6)  # (784,)
mean_image_nll = float(-(x_test * np.log(p_mean) + (1 - x_test) * np.log1p(-p_mean)).sum(axis=1).mean())
print(f"untrained model: loss {start_terms['loss']:.1f} nats (784 log 2 = {784 * np.log(2):.1f})")
print(f"the mean digit, a decoder that ignores z: {mean_image_nll:.1f} nats on the test digits")

# %% [markdown]
# ## The first steps, up close: `max_steps` and `resume`
#
# `train` writes a metrics row per epoch, which is coarse for the first few
# hundred steps, where most of the change happens. To look closer we stop
# training after a given number of steps (`max_steps`; the trainer saves a
# checkpoint there) and continue with `resume(run_dir, max_steps=...)`,
# evaluating the model in between on 1,000 test digits. Resuming is exact:
# the checkpoint holds the weights, Adam's moments and the state of every
# random generator, so the stop-and-go run computes the same numbers as an
# uninterrupted one (`tests/test_train.py` checks this bit for bit).

# %%
run_dir = RUNS / "08_training_mnist"
steps_per_epoch = -(-len(x_train) // config.batch_size)
probe_steps = [s for s in (1, 2, 5, 10, 20, 50, 100, 200) if s < steps_per_epoch * EPOCHS]
quiet = lambda line: None  # noqa: E731  (resume's own log lines would repeat ours)

first_steps = [(0, start_terms)]
result = None
for steps in probe_steps:
    if result is None:
        config.max_steps = steps
        result = train(config, run_dir, overwrite=True, log=quiet)
    else:
        result = resume(run_dir, max_steps=steps, progress=False, figures=False, log=quiet)
    terms = evaluate_elbo(result.model, x_probe, rng=np.random.default_rng(0), beta=1.0)
    first_steps.append((result.state["global_step"], terms))

print(f"{'step':>5} {'loss':>7} {'recon':>7} {'kl':>6}   (1,000 test digits, nats per example)")
for step, t in first_steps:
    print(f"{step:>5} {t['loss']:7.1f} {t['recon']:7.1f} {t['kl']:6.1f}")

# %% [markdown]
# Read the columns against each other. The reconstruction term falls fast
# from about 550 nats: within about 50 steps the decoder has learned the
# mean digit, and the reconstruction term passes the mean-digit number above.
# The KL starts near 0 (the untrained encoder gives $\mu \approx 0$ and
# $\log \sigma^2 \approx 0$, almost the prior) and does not rise steadily:
# in our default runs it jumped to about 25 nats by step 10, fell back to
# about 5 by step 50 while the decoder was busy learning the mean digit, and then rose
# again, steadily, as the encoder learned codes that tell the decoder
# *which* digit it is looking at. The KL, averaged over the digits, is an
# upper bound on the information $z$ carries about $x$: it equals that
# information plus how far the codes of all digits together are from the
# prior (tutorial 9 writes it out). A nat of KL is worth paying only when it
# lowers the reconstruction term by more.
#
# ## The rest of training
#
# `resume` without `max_steps` runs to the end of the last epoch and logs one
# line per epoch: the training loss (the average over the epoch's batches)
# and the test loss (the whole test set at the end of the epoch, one sample
# of $z$ per digit, $\beta = 1$: the negative ELBO).

# %%
result = resume(run_dir, progress=False, figures=False, log=print)
assert result.completed

# %% [markdown]
# ## Reading the metrics
#
# The same rows are in `run_dir/metrics.csv` (rewritten after every epoch),
# and in `result.metrics` as dicts.

# %%
rows = read_metrics(run_dir / "metrics.csv")
print(f"{'epoch':>5} {'train loss':>10} {'test loss':>9} {'train recon':>11} {'test recon':>10} "
      f"{'train kl':>8} {'test kl':>7} {'gap':>6}")
for r in rows:
    print(f"{r['epoch']:>5} {r['train_loss']:10.2f} {r['test_loss']:9.2f} {r['train_recon']:11.2f} "
          f"{r['test_recon']:10.2f} {r['train_kl']:8.2f} {r['test_kl']:7.2f} "
          f"{r['test_loss'] - r['train_loss']:6.2f}")
same_rows = all(abs(r[k] - m[k]) < 1e-3 for r, m in zip(rows, result.metrics)
                for k in ("train_loss", "test_loss", "train_kl", "test_kl"))
print("metrics.csv holds result.metrics:", same_rows and len(rows) == len(result.metrics) == EPOCHS)

# %% [markdown]
# What the columns say:
#
# - **Recon falls, KL rises, then both settle.** From epoch to epoch the
#   reconstruction term falls while the KL rises, more and more slowly: the
#   model buys better reconstructions with more information in $z$, and the
#   loss, their sum, falls. In our full runs (`NPVAE_FULL=1`, 10 epochs on
#   all of MNIST), the test KL rose from about 21 to about 25 nats in the
#   first four epochs and then stayed near 25, while the test
#   reconstruction term went from about 105 to about 81 nats.
# - **The gap between train and test.** In the first epoch the training loss
#   is far *above* the test loss (about 163 against 126 nats in our default
#   runs; your numbers are in the table above). That is not the test set being easier: the training number
#   averages over the epoch's batches, from the untrained model at 550 nats
#   onwards, while the test number is the model at the end of the epoch.
#   Later the two close in: in our full runs the gap (test minus train) went
#   from about $-36$ nats in epoch 1 to about $-0.5$ in epoch 10 (both
#   losses about 106). The test loss never rose above the training loss, so
#   there is no overfitting in 10 epochs: that would show as a test loss
#   climbing above a still-falling training loss.
# - **Compare like with like.** These are nats on MNIST's grey pixels in
#   $[0, 1]$ under a Bernoulli likelihood; a model of binarized (0/1)
#   pixels, or a Gaussian likelihood (tutorial 11), gives numbers on another
#   scale. Compare losses only across the same data and likelihood.
#
# ## The figures
#
# `npvae.plots` draws each figure from a trained model (or the metrics) and
# writes a PNG. The curves are the metrics above, epoch by epoch (with 2
# epochs, two points per line); the first-steps plot is the table above.

# %%
curves = plots.plot_curves(result.metrics, FIGURES / "08_curves.png")
recons = plots.plot_reconstructions(result.model, x_test, FIGURES / "08_reconstructions.png")
samples = plots.plot_samples(result.model, FIGURES / "08_samples.png", np.random.default_rng(0))

fig, ax = plt.subplots(figsize=(6, 3.6))
steps = [max(s, 0.5) for s, _ in first_steps]  # step 0 drawn at 0.5 on the log axis
for term in ("recon", "kl"):
    ax.plot(steps, [t[term] for _, t in first_steps], marker="o", label=term)
ax.axhline(mean_image_nll, color="grey", ls=":", label="the mean digit")
ax.set(xscale="log", yscale="log", xlabel="optimizer step (step 0 at 0.5)", ylabel="nats per example",
       title="The first steps, on 1,000 test digits")
ax.legend(fontsize=8)
fig.tight_layout()
tutorial.show(curves, recons, samples)
first_steps_figure = tutorial.savefig(fig, "08_first_steps.png")

# %% [markdown]
# In the reconstructions (top: test digits; bottom: the decoder's mean at
# $z = \mu(x)$) the digits are recognisable but blurred: a 20-dimensional
# code cannot keep every stroke. The samples decode $z \sim \mathcal{N}(0, I)$:
# after 2 epochs some are clear digits and many are blurred blends of two.
#
# ## Check
#
# Training worked if the test loss fell far below both reference numbers:
# the untrained model (about 550 nats) and the mean digit (about 200 nats on
# the test digits), which is where a trainer that learns nothing, or a model
# that ignores its latent code, would stay. The bound for this mode (185
# nats in quick mode, 140 by default, 112 for the full run) is printed below.

# %%
final = result.metrics[-1]
print(f"final test loss {final['test_loss']:.1f} nats (recon {final['test_recon']:.1f}, kl "
      f"{final['test_kl']:.1f}); bound for this mode {BOUND:.0f}; mean digit {mean_image_nll:.1f}")
print(f"total time {time.perf_counter() - started:.1f} s")
assert final["test_loss"] < BOUND < mean_image_nll - 10, (final, BOUND, mean_image_nll)
assert start_terms["loss"] > 500 and first_steps[-1][1]["loss"] < start_terms["loss"] - 200
assert final["test_kl"] > 10  # the code is used: a collapsed posterior has a KL near 0
assert rows[-1]["test_recon"] < rows[0]["test_recon"] and same_rows
assert all(p.is_file() for p in (curves, recons, samples, first_steps_figure))
print(f"check passed: after {EPOCHS} epochs the test loss is {final['test_loss']:.1f} nats per example, "
      f"below {BOUND:.0f} (untrained {start_terms['loss']:.0f}, mean digit {mean_image_nll:.0f}), "
      f"with {final['test_kl']:.1f} nats in the code")
tutorial.finish()  # the quick mode's temporary folder goes
