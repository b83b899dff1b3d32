# %% [markdown]
# # 15. The conditional VAE: digits on demand, and style analogies
#
# A VAE draws a random digit; it cannot be asked for a 7. The **conditional
# VAE** gives both networks the label $y$ as an extra input, one-hot, and
# keeps the prior $p(z) = \mathcal{N}(0, I)$: Kingma et al. (2014)'s M2 model
# with the label observed (Sohn, Lee and Yan (2015) also make the prior
# conditional, $p(z \mid y)$; see the derivation):
#
# $$q(z \mid x, y) \text{ from } \mathrm{enc}([\,x \mid e_y\,]), \qquad
# p(x \mid z, y) \text{ from } \mathrm{dec}([\,z \mid e_y\,]).$$
#
# Since the decoder is told the digit, $z$ no longer needs to encode it:
# it keeps what the label does not say, the **style** (slant, width,
# stroke). So $z \sim \mathcal{N}(0, I)$ with a chosen $y$ draws that digit,
# and a test digit's $z$ decoded with another label writes the same style as
# another digit: an analogy. The only new gradient is the one through the
# concatenation: the network's input gradient, minus the label columns
# ([derivations.md, Conditional VAE](derivations.md#conditional-vae)).
#
# **How long it runs.** Default: the `cvae` preset (PyTorch's example
# architecture with labels) for 2 epochs on all of MNIST, a few minutes.
# `NPVAE_QUICK=1` (the test suite): a smaller model (784-128 / 8) for 2
# epochs of 5,000 digits at lr 3e-3, well under a minute. The run folder
# goes to `tutorials/runs/15_cvae/`. In a notebook the figures appear below
# their cells; run as a script, they go to `tutorials/runs/figures/`
# (`NPVAE_SAVE_FIGURES=1`: the committed `tutorials/figures/15_*.png`, which
# came from the default run). The quick mode writes runs and figures to a
# temporary folder, which it removes at the end. `npvae train --preset cvae`
# trains the full 10 epochs; then `npvae sample runs/cvae --digit 7` draws
# sevens.

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
from npvae.cvae import CVAE  # noqa: E402
from npvae.data import load_mnist, to_unit_interval  # noqa: E402
from npvae.gradcheck import check_model, format_results  # noqa: E402
from npvae.train import TrainConfig, train  # noqa: E402
from npvae.tutorial import QUICK, Tutorial  # noqa: E402

tutorial = Tutorial("15_conditional_vae")  # its mode, its folders, and inline figures in a notebook
if QUICK:  # a smaller model, a higher learning rate: it learns to obey y in 80 steps
    N_TRAIN, EPOCHS, SIZES = 5_000, 2, dict(hidden=(128,), latent=8, lr=3e-3)
else:
    N_TRAIN, EPOCHS, SIZES = None, 2, {}
print("mode:", "quick" if QUICK else "default")  # no full version: NPVAE_FULL=1 runs the default
RUNS, FIGURES = tutorial.runs, tutorial.figures
started = time.perf_counter()

# %% [markdown]
# ## The concatenation and its gradient
#
# `CVAE` is the VAE with each network's input widened by the ten label
# columns (`LabelledMLP`). Its first weight matrix has $D + 10$ rows: the
# label rows act as a per-digit bias of the first layer, and their gradient
# is the sum of the upstream gradient over each digit's examples. The
# gradient passed down is the input gradient's first columns only. Central
# differences on a small float64 model:

# %%
rng = np.random.default_rng(0)
small = CVAE(12, (8,), 3, n_classes=10, activation="tanh", dtype="float64", seed=0)
for name, p in small.params.items():
    if name.endswith(".b"):
        p += rng.normal(0.0, 0.1, p.shape)
results = check_model(small, rng.random((5, 12)), rng.standard_normal((5, 3)),
                      y=rng.integers(0, 10, 5))
print(format_results(results))
print("first encoder layer W:", small.encoder.layers[0].params["W"].shape,
      "(12 pixels + 10 label columns); first decoder layer W:",
      small.decoder.layers[0].params["W"].shape, "(3 latents + 10)")

# %% [markdown]
# ## Training
#
# The trainer batches the labels alongside the images (the same shuffle),
# and evaluates the test ELBO with the test labels: a bound on
# $\log p(x \mid y)$, which is lower than the VAE's $\log p(x)$ loss by
# roughly the information in the label (at most $\log 10 = 2.3$ nats).

# %%
config = TrainConfig.from_preset("cvae", n_train=N_TRAIN, n_test=1000, epochs=EPOCHS,
                                 progress=False, figures=False, **SIZES)
result = train(config, RUNS / "15_cvae", overwrite=True, log=print)
model = result.model
mnist = load_mnist()
x_test, y_test = to_unit_interval(mnist.x_test[:1000]), mnist.y_test[:1000].astype(np.int64)

# %% [markdown]
# ## Digits on demand
#
# One row per label, the same ten draws of $z$ in every row: each column is
# one "style", written as each digit.

# %%
grid = plots.plot_digit_grid(model, FIGURES / "15_digits.png", np.random.default_rng(1))
tutorial.show(grid)

# %% [markdown]
# ![digits](figures/15_digits.png)
#
# ## Analogies
#
# Encode a test digit with its own label, keep its $z$, and decode it with
# each of the ten labels. The aim is the same slant and stroke written as
# other digits; a short run does not reach it yet. In the default run's
# figure below each row keeps the input's own digit for all ten labels, only
# its thickness and slant shifting a little: $z$ still holds the digit
# itself, and the decoder follows $z$ rather than $y$ (the quick run's figure,
# in the notebook, after 80 steps, is blurrier still and keeps the input's
# shape the same way). After the preset's 10
# epochs (`npvae train --preset cvae`; the README's analogies figure) most
# cells turn into the requested digit, in the input's slant, with some of the
# input's shape left.

# %%
analogies = plots.plot_analogies(model, x_test, y_test, FIGURES / "15_analogies.png")
tutorial.show(analogies)

# %% [markdown]
# ![analogies](figures/15_analogies.png)
#
# ## Check
#
# Does the decoder obey the label? Decode 100 draws of $z$ with each label
# and give each image to the nearest class-mean image of the test digits.
# A model that ignored $y$ would score about 10%; the real test digits
# themselves score about 80% with this crude classifier. We ask for three
# times chance, 30%. The default run scored 35% (quick mode: 40%, with its
# 8 latents): above chance, far from the real digits. The grid shows why:
# after 2 epochs many columns keep one shape in every row, the label only
# nudging it. The encoder sees the image, and 20 latent dimensions are room
# enough to copy the digit itself into $z$; the KL's pressure to leave the
# identity to the label takes longer to act. After the preset's 10 epochs
# (`npvae train --preset cvae`, figures in the README) the rows are clearly
# the requested digits, with some leakage left.

# %%
means = np.stack([x_test[y_test == c].mean(axis=0) for c in range(10)])
z = np.random.default_rng(2).standard_normal((1000, model.latent)).astype(np.float32)
labels = np.repeat(np.arange(10), 100)


def nearest_mean(images):
    return ((images[:, None, :] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)


accuracy = float((nearest_mean(model.decode(z, labels)) == labels).mean())
ceiling = float((nearest_mean(x_test) == y_test).mean())
print(f"decoded digits assigned to their label's class mean: {100 * accuracy:.1f}% "
      f"(the real test digits: {100 * ceiling:.1f}%)")
print(f"total time {time.perf_counter() - started:.1f} s")
assert all(r.ok for r in results)
assert accuracy > 0.3, accuracy
assert grid.is_file() and analogies.is_file()
print(f"check passed: the conditional VAE's gradients match central differences, and "
      f"{100 * accuracy:.0f}% of the digits drawn for a label are nearest to that label's mean image")
tutorial.finish()  # the quick mode's temporary folder goes

# %% [markdown]
# ## Practise
#
# Write the label concatenation's forward and backward yourself in
# `15_conditional.py` (in `tutorials/exercises/`): the one-hot label appended
# to a network's input, and the input gradient without its label columns.
# Then grade it:
#
#     npvae exercises check conditional
#
# The grader compares your values with npvae's and with central differences
# and, when one is wrong, says how: the labels repeated example-major where
# the $k$ samples are sample-major, the label columns kept in dx, the wrong
# $C$ columns dropped, no gradient for the label rows of $W$.
# `npvae exercises list` shows every exercise.
