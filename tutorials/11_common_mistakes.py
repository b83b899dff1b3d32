# %% [markdown]
# # 11. Common mistakes: three broken VAEs that train without complaint
#
# Each mistake below gives a model that trains, whose loss falls, and whose
# every gradient passes a finite-difference check: the bug is in the
# *objective*, not in the derivatives, so only measuring what the model
# learned finds it. The three come from the blog post npvae started from, a
# VAE written the way many first VAEs are:
#
# - **(a) an encoder with no variance output**: the encoder gives one vector,
#   used directly as the code, $z = \mu(x)$;
# - **(b) a loss with no KL term**: reconstruction only;
# - **(c) a mean-reduced MSE next to a summed KL**: the squared error
#   *averaged* over the 784 pixels, plus a KL *summed* over the latents.
#
# We build each one by hand from npvae's pieces (`npvae.layers.MLP`, the
# loss functions of `npvae.losses`, `npvae.VAE` with one thing changed),
# train the three and the fixed model in the same small loop, and measure.
# The fixed model is the `mlp-mse` preset (`npvae train --preset mlp-mse`):
# the blog post's MLP, 784-128-64-20 with ReLU, with its squared error
# **summed** over pixels (a
# Gaussian likelihood with $\sigma^2 = 1/2$, tutorial 3) plus the KL, Adam
# $10^{-3}$, batches of 32.
#
# **How long it runs.** Four models, each for 5 epochs on the first 20,000
# training digits, about 20 s on one laptop core. `NPVAE_FULL=1`: 10 epochs
# on all 60,000 (the preset's length), about 1.5 minutes. `NPVAE_QUICK=1`
# (the test suite): 6 epochs on 8,000 digits, about 8 s. In a
# notebook the figures appear below their cells; run as a script, they
# go to `tutorials/runs/figures/` (`NPVAE_SAVE_FIGURES=1`: the committed
# `tutorials/figures/`). The quick mode writes runs and figures to a
# temporary folder, which it removes at the end.

# %%
import math
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
from npvae.evaluate import active_units, evaluate_elbo  # noqa: E402
from npvae.gradcheck import check_model  # noqa: E402
from npvae.layers import MLP, flatten_parameters  # noqa: E402
from npvae.losses import gaussian_kl, gaussian_kl_backward, gaussian_nll, gaussian_nll_backward  # noqa: E402
from npvae.optim import Adam  # noqa: E402
from npvae.presets import get_preset  # noqa: E402
from npvae.train import fit  # noqa: E402
from npvae.tutorial import FULL, QUICK, Tutorial  # noqa: E402
from npvae.vae import LossTerms  # noqa: E402

tutorial = Tutorial("11_common_mistakes")  # its mode, its folders, and inline figures in a notebook
if QUICK:
    N_TRAIN, EPOCHS = 8_000, 6
elif FULL:
    N_TRAIN, EPOCHS = None, 10  # None: all 60,000
else:
    N_TRAIN, EPOCHS = 20_000, 5
N_TEST = 1_000
print("mode:", tutorial.mode)
FIGURES = tutorial.figures
started = time.perf_counter()

PRESET = get_preset("mlp-mse")
MODEL = PRESET["model"]  # hidden (128, 64), latent 20, relu, gaussian, sigma = sqrt(1/2)
BATCH, LR = PRESET["training"]["batch_size"], PRESET["training"]["lr"]
SIGMA = MODEL["sigma"]
print("mlp-mse preset:", PRESET["description"])

mnist = load_mnist()
x_train = to_unit_interval(mnist.x_train[:N_TRAIN])
x_test = to_unit_interval(mnist.x_test[:N_TEST])
D = x_train.shape[1]
print(f"{len(x_train)} training digits, {len(x_test)} test digits, D = {D} pixels")

# %% [markdown]
# ## The fixed model, and the training loop all four share
#
# `fixed_vae()` is the mlp-mse preset as an `npvae.VAE`. The loop is
# `npvae.train.fit`, the trainer's loop (tutorial 8) without the bookkeeping:
# shuffle, and for each batch `train_step`: `forward`, `backward`, one Adam
# step over the flat parameter buffer.


# %%
def fixed_vae(beta=1.0, **overrides):
    """The mlp-mse preset's VAE (784-128-64-20, Gaussian with sigma^2 = 1/2: SSE + KL)."""
    return VAE(x_dim=D, hidden=MODEL["hidden"], latent=MODEL["latent"], activation=MODEL["activation"],
               likelihood=MODEL["likelihood"], sigma=SIGMA, init=MODEL["init"], beta=beta, seed=1,
               **overrides)


def train_model(model, seed=0):
    """EPOCHS epochs of Adam on x_train, batches of BATCH (npvae.train.fit); returns the model."""
    optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=LR)
    fit(model, optimizer, x_train, epochs=EPOCHS, batch_size=BATCH, seed=seed, log=lambda line: None)
    return model


t0 = time.perf_counter()
fixed = train_model(fixed_vae())
print(f"fixed model trained: {EPOCHS} epochs in {time.perf_counter() - t0:.1f} s")

# %% [markdown]
# ## What we measure
#
# Samples come from decoding $z \sim p(z) = \mathcal{N}(0, I)$. They can only
# look like digits if the codes of real digits fill the region where the
# prior puts its mass: the **aggregate posterior** $q(z) = \frac1N \sum_i
# q(z \mid x_i)$, the cloud of all the codes, must look like
# $\mathcal{N}(0, I)$. Its mean per dimension is the mean of $\mu_u(x)$, its
# variance $\mathrm{Var}_x(\mu_u(x)) + \mathrm{mean}_x\, e^{s_u(x)}$ (spread of
# the means, plus each posterior's own variance). We report, on the test
# digits:
#
# - **codes mean** and **codes std**: averaged over the 20 dimensions (the
#   prior: 0 and 1);
# - **q std**: each posterior's own standard deviation $e^{s/2}$, averaged
#   over digits and dimensions (0 for a code with no variance);
# - **codes KL**: the KL from a Gaussian with those means and variances to
#   $\mathcal{N}(0, I)$, summed over dimensions: 0 when the cloud matches the
#   prior in its first two moments;
# - **active** units (tutorial 9) and the model's **KL** per example, the
#   information in $z$ (infinite for a point mass: a code with no variance);
# - **recon SSE**: the squared error of $\mathrm{decode}(\mu(x))$, summed over
#   pixels;
# - **sample distance**: how far each of 500 samples is from its nearest
#   training digit (squared error summed over pixels). For reference, real
#   test digits are this far from their nearest training digit:
#   printed below. A sample that looks like a digit is about as close;
# - **sample spread**: how much the samples differ from one another (the
#   standard deviation across samples, averaged over pixels): 0 when every
#   sample is the same image.

# %%
prior_z = np.random.default_rng(5).standard_normal((500, MODEL["latent"])).astype(np.float32)
train_sq = (x_train.astype(np.float64) ** 2).sum(axis=1)


def nearest_training_distance(images):
    """Mean over images of min over training digits of sum_j (image_j - digit_j)^2."""
    images = np.clip(images, 0, 1).astype(np.float64)  # as shown: pixels in [0, 1]
    d2 = (images ** 2).sum(axis=1)[:, None] - 2 * images @ x_train.T.astype(np.float64) + train_sq[None]
    return float(np.maximum(d2.min(axis=1), 0).mean())


def measure(model, mu, logvar):
    """The numbers above for a model with encoder outputs mu, logvar (None: no variance)."""
    own_var = 0.0 if logvar is None else np.exp(logvar.astype(np.float64)).mean(axis=0)
    code_mean = mu.astype(np.float64).mean(axis=0)
    code_var = mu.astype(np.float64).var(axis=0) + own_var
    samples = model.decode(prior_z)
    return dict(
        code_mean=float(np.abs(code_mean).mean()), code_std=float(np.sqrt(code_var).mean()),
        q_std=0.0 if logvar is None else float(np.exp(0.5 * logvar.astype(np.float64)).mean()),
        code_kl=float(0.5 * (code_var + code_mean ** 2 - 1 - np.log(code_var)).sum()),
        active=int((mu.astype(np.float64).var(axis=0) > 0.01).sum()),
        kl=math.inf if logvar is None else float(gaussian_kl(mu, logvar).mean()),
        recon_sse=float(((model.decode(mu) - x_test) ** 2).sum(axis=1).mean()),
        sample_distance=nearest_training_distance(samples),
        sample_spread=float(np.clip(samples, 0, 1).std(axis=0).mean()))


def show(name, m):
    print(f"{name:<22} {m['code_mean']:>6.2f} {m['code_std']:>6.2f} {m['q_std']:>6.3f} {m['code_kl']:>8.2f} "
          f"{m['active']:>7} {m['kl']:>7.2f} {m['recon_sse']:>7.1f} {m['sample_distance']:>9.1f} "
          f"{m['sample_spread']:>7.3f}")


HEADER = (f"{'':<22} {'codes':>6} {'codes':>6} {'q':>6} {'codes':>8} {'':>7} {'':>7} {'recon':>7} "
          f"{'sample':>9} {'sample':>7}\n{'model':<22} {'mean':>6} {'std':>6} {'std':>6} {'KL':>8} "
          f"{'active':>7} {'KL':>7} {'SSE':>7} {'distance':>9} {'spread':>7}")
test_distance = nearest_training_distance(x_test)
mean_digit_sse = float(((x_train.mean(axis=0) - x_test) ** 2).sum(axis=1).mean())
results = {"fixed (mlp-mse preset)": measure(fixed, *fixed.encode(x_test))}
print(f"real test digits: distance {test_distance:.1f} to their nearest training digit; "
      f"the mean digit reconstructs them with SSE {mean_digit_sse:.1f}")
print(HEADER)
show("fixed (mlp-mse preset)", results["fixed (mlp-mse preset)"])

# %% [markdown]
# The fixed model's codes fill the prior: mean near 0, std near 1, codes KL
# near 0 (after enough training: the quick mode's short run gets only part of
# the way). In the default run its samples sat about as close to a training
# digit as real test digits do (24.1 against 22.4). Its KL is small, 3.5
# nats in the default run: $\sigma^2 = 1/2$ still calls most of a digit's
# detail noise (tutorial 3), so information in $z$ is dear, and its
# reconstructions and samples are blurred. Trained longer it gives up
# dimensions, as the large $\beta$ of tutorial 9 did: when we ran the full
# version (10 epochs on all 60,000 digits) it kept 5 active units and 4.7
# nats, where tutorial 8's Bernoulli model put 25 nats in its code.
#
# ## (a) An encoder with no variance output
#
# The encoder ends in 20 numbers instead of 40, used directly as the code:
# $z = \mu(x)$, nothing sampled. What can be kept of the KL? Its closed form
# with the variance fixed at 1 ($s = 0$) is $\tfrac12 \lVert\mu\rVert^2$, a
# penalty on the size of the codes, and we keep that
# (`gaussian_kl(mu, 0)`). It is built by hand: two `npvae.layers.MLP`s, the
# Gaussian likelihood and the KL of `npvae.losses` with their backward
# functions. It is a plain autoencoder with a penalty on its codes.


# %%
class NoVarianceAE:
    """Mistake (a): the encoder gives only mu, and z = mu. Shapes: x (B, D), z (B, Z)."""

    def __init__(self, x_dim=D, hidden=MODEL["hidden"], latent=MODEL["latent"], dtype="float32", seed=1):
        rng = np.random.default_rng(seed)
        self.encoder = MLP([x_dim, *hidden, latent], MODEL["activation"], rng=rng, dtype=dtype)  # Z outputs, not 2Z
        self.decoder = MLP([latent, *hidden[::-1], x_dim], MODEL["activation"], rng=rng, dtype=dtype)
        self.theta, self.dtheta = flatten_parameters(self.encoder.layers + self.decoder.layers)
        self.x_dim, self.latent, self.dtype, self.xp = x_dim, latent, np.dtype(dtype), np
        self.sigma = SIGMA

    @property
    def params(self):
        return {**{f"encoder.{k}": v for k, v in self.encoder.params.items()},
                **{f"decoder.{k}": v for k, v in self.decoder.params.items()}}

    @property
    def grads(self):
        return {**{f"encoder.{k}": v for k, v in self.encoder.grads.items()},
                **{f"decoder.{k}": v for k, v in self.decoder.grads.items()}}

    def decode(self, z):
        return self.decoder.forward(z)

    def check_input(self, x):  # what npvae.train.fit asks of a model, besides the rest
        return x.astype(self.dtype, copy=False)

    def forward(self, x, *, eps=None, rng=None, beta=None, check=True):  # nothing is sampled
        self.x = x
        self.mu = self.encoder.forward(x)
        self.no_logvar = np.zeros_like(self.mu)  # the variance the encoder does not give: 1
        self.out = self.decoder.forward(self.mu)  # z = mu
        recon = gaussian_nll(self.out, x, self.sigma).mean()
        kl = gaussian_kl(self.mu, self.no_logvar).mean()  # = mean_i 1/2 |mu_i|^2
        return LossTerms(recon + kl, recon, kl)

    def backward(self):
        dout = 1.0 / self.x.shape[0]
        dz = self.decoder.backward(gaussian_nll_backward(dout, self.out, self.x, self.sigma))
        dmu_kl, _ = gaussian_kl_backward(dout, self.mu, self.no_logvar)
        self.encoder.backward(dz + dmu_kl, need_dx=False)


# Its gradients are right: the mistake is in the objective, not in the backward.
tiny_rng = np.random.default_rng(0)
x_tiny = tiny_rng.uniform(size=(4, 6))
gradcheck_a = check_model(NoVarianceAE(x_dim=6, hidden=(5,), latent=2, dtype="float64"), x_tiny,
                          eps=np.zeros((4, 2)))
print(f"(a) gradient check: {len(gradcheck_a)} tensors, worst relative error "
      f"{max(r.rel_error for r in gradcheck_a):.1e}")

t0 = time.perf_counter()
no_variance = train_model(NoVarianceAE())
print(f"(a) trained in {time.perf_counter() - t0:.1f} s")
results["(a) no variance"] = measure(no_variance, no_variance.encoder.forward(x_test), None)
print(HEADER)
for name in ("fixed (mlp-mse preset)", "(a) no variance"):
    show(name, results[name])

# %% [markdown]
# It reconstructs *better* than the fixed model (lower recon SSE): nothing
# blurs its codes. But the codes have shrunk into a small ball around 0
# (codes std far below 1): the penalty $\tfrac12\lVert\mu\rVert^2$ pulls them
# in, and nothing pushes them *out* to fill $\mathcal{N}(0, I)$. With no
# noise on the codes, the decoder can tell two codes apart however close
# they are, so packing them tightly costs the reconstruction almost nothing.
# A sample $z \sim \mathcal{N}(0, I)$ therefore lands far outside everywhere
# the decoder has ever been, and decodes to garbage (in the figure below,
# saturated blobs): the sample distance is many times that of real digits.
# The KL of a code with no variance is infinite: a point mass has no density
# to compare.
#
# **The fix** is the variance output and the sampling: $z = \mu + e^{s/2}
# \varepsilon$ with the full KL. The noise makes shrunken codes useless
# (they drown in it), and the terms $e^{s} - 1 - s$ of the KL pull each
# posterior's variance towards 1. Together they spread the codes over the
# prior: the fixed model's row.
#
# ## (b) A loss with no KL term
#
# The encoder has its variance output and the codes are sampled, but the
# loss is the reconstruction alone. In npvae this is exactly `beta=0`: the
# forward computes $\mathrm{recon} + 0 \cdot \mathrm{kl}$ and the backward
# drops the KL's path to $\mu$ and $s$ (tutorial 7 showed that path).

# %%
t0 = time.perf_counter()
no_kl = train_model(fixed_vae(beta=0.0))
print(f"(b) trained in {time.perf_counter() - t0:.1f} s")
results["(b) no KL term"] = measure(no_kl, *no_kl.encode(x_test))

# Judge both by the fixed model's objective, the negative ELBO (beta = 1):
elbo = {name: evaluate_elbo(model, x_test, rng=np.random.default_rng(0), beta=1.0)
        for name, model in (("fixed (mlp-mse preset)", fixed), ("(b) no KL term", no_kl))}
print(HEADER)
for name in ("fixed (mlp-mse preset)", "(b) no KL term"):
    show(name, results[name])
for name, terms in elbo.items():
    print(f"{name:<22} -ELBO {terms['loss']:7.1f} = recon {terms['recon']:6.1f} + KL {terms['kl']:6.1f} "
          "(Gaussian, sigma^2 = 1/2)")

# %% [markdown]
# The same symptom, for a different reason. With nothing asking for
# $q(z \mid x)$ to stay near the prior, the encoder shrinks its variances
# towards 0 (q std near 0: the noise only hurts the reconstruction), so each
# code becomes almost a point, and the means go wherever suits the decoder:
# the cloud of codes drifts away from $\mathcal{N}(0, I)$ (codes mean far
# from 0, codes KL large). Samples from the prior fall between the codes and decode to
# garbage. Judged by the full objective, the reconstruction is better and
# the KL is many times larger; the negative ELBO, what a VAE is meant to
# minimise, is far worse.
#
# **The fix** is the KL term, with $\beta = 1$: the fixed model.
#
# ## (c) A mean-reduced MSE next to a summed KL
#
# `torch.nn.functional.mse_loss` and Keras' `mse` **average** over pixels by
# default; the KL is a **sum** over latents. The loss
# $\frac1D \sum_j (x_j - m_j)^2 + \mathrm{KL}$ is, up to a constant, the
# Gaussian likelihood with $\sigma^2 = D/2 = 392$ instead of $1/2$: the same
# as the fixed loss with the KL weighted by $D = 784$ (tutorial 3 worked
# this out on paper). We build it as an `npvae.VAE` whose reconstruction
# term and its gradient are replaced by the pixel mean, and check both facts.


# %%
class MeanMSEVAE(VAE):
    """Mistake (c): recon = mean_j (x_j - m_j)^2 over the D pixels, next to the summed KL."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.nll = lambda out, x: ((x - out) ** 2).mean(axis=-1)                       # (B,)
        self.nll_backward = lambda dout, out, x: (out - x) * (2.0 * dout / x.shape[-1])  # (B, D)


rng_c = np.random.default_rng(1)
out_c, x_c = rng_c.uniform(size=(3, D)), rng_c.uniform(size=(3, D))
as_gaussian = gaussian_nll(out_c, x_c, sigma=math.sqrt(D / 2)) - D / 2 * math.log(math.pi * D)
same_as_gaussian = np.allclose(((x_c - out_c) ** 2).mean(axis=1), as_gaussian, rtol=1e-12, atol=1e-12)
print(f"mean-reduced MSE = Gaussian NLL with sigma^2 = D/2 = {D / 2:g}, minus a constant:", same_as_gaussian)
gradcheck_c = check_model(MeanMSEVAE(x_dim=6, hidden=(5,), latent=2, likelihood="gaussian", dtype="float64"),
                          x_tiny, eps=tiny_rng.standard_normal((4, 2)))
print(f"(c) gradient check: {len(gradcheck_c)} tensors, worst relative error "
      f"{max(r.rel_error for r in gradcheck_c):.1e}")

t0 = time.perf_counter()
mean_mse = train_model(MeanMSEVAE(x_dim=D, hidden=MODEL["hidden"], latent=MODEL["latent"],
                          activation=MODEL["activation"], likelihood="gaussian", sigma=SIGMA,
                          init=MODEL["init"], seed=1))
print(f"(c) trained in {time.perf_counter() - t0:.1f} s")
results["(c) mean-reduced MSE"] = measure(mean_mse, *mean_mse.encode(x_test))
active_c = active_units(mean_mse, x_test)
print(HEADER)
for name in ("fixed (mlp-mse preset)", "(c) mean-reduced MSE"):
    show(name, results[name])
print(f"the mean digit, for comparison: recon SSE {mean_digit_sse:.1f}")

# %% [markdown]
# Total posterior collapse. With every nat of KL costing 784 times as much as
# it should, no latent dimension pays for itself: all are inactive, the KL
# is 0, every posterior is the prior. The codes "match the prior" perfectly
# (codes KL 0, q std 1), because they carry nothing: the decoder gets pure
# noise, and its best answer to noise is the mean digit. The reconstruction
# error is the mean digit's, and the samples are all the same image (sample
# spread near 0): the sample distance looks fine only because the mean
# digit is not far from many digits.
#
# **The fix** is to sum over pixels, as the mlp-mse preset does (and every
# npvae likelihood does): the fixed model's row, whose code carries a few
# nats (18 of 20 units active in the default run, 5 in the full run: a
# partial collapse, not a total one).
# If an MSE library function is all you have, use `reduction="sum"` and
# divide by the batch size yourself.

# %% [markdown]
# ## The figures
#
# Samples of each model (decoder means of $z \sim \mathcal{N}(0, I)$, shown
# clipped to $[0, 1]$) and the reconstructions of the collapsed model.

# %%
figures = [plots.plot_samples(model, FIGURES / f"11_samples_{name}.png", np.random.default_rng(0), n=36,
                              title=title)
           for name, title, model in (("fixed", "The fixed VAE (mlp-mse preset)", fixed),
                                      ("a_no_variance", "(a) No variance output", no_variance),
                                      ("b_no_kl", "(b) No KL term", no_kl),
                                      ("c_mean_mse", "(c) Pixel-mean MSE next to a summed KL", mean_mse))]
figures.append(plots.plot_reconstructions(mean_mse, x_test, FIGURES / "11_reconstructions_c_mean_mse.png"))
tutorial.show(*figures)

# %% [markdown]
# ## Check
#
# Each mistake shows its symptom in the numbers, and the fixed model does not:
#
# - (a) and (b): the codes' cloud is far from the prior (codes KL at least 5
#   times the fixed model's) and the samples are at least twice as far from
#   any training digit as the fixed model's;
# - (a): the codes have shrunk (codes std below 0.3); (b): the posteriors
#   have shrunk to near points (q std below a tenth of the fixed model's),
#   the KL per example is at least 5 times the fixed model's and the
#   negative ELBO is more than 20 nats worse;
# - (c): no active unit, a KL below 0.1 nats, reconstructions within 2% of
#   the mean digit's error, and samples that hardly differ (a sample spread
#   below a quarter of the fixed model's);
# - the fix: active units and a KL above 1 nat (its code is used), its
#   samples no farther from a training digit than 2.5 times the distance of
#   real test digits (a loose bound, which the quick mode's short run also
#   meets), its reconstructions better than the mean digit's by more than 5;
#   and every hand-built gradient passes its check.

# %%
fix, a, b, c = (results[k] for k in ("fixed (mlp-mse preset)", "(a) no variance", "(b) no KL term",
                                     "(c) mean-reduced MSE"))
print(HEADER)
for name, m in results.items():
    show(name, m)
print(f"total time {time.perf_counter() - started:.1f} s")
for broken in (a, b):
    assert broken["code_kl"] > 5 * fix["code_kl"], (broken, fix)
    assert broken["sample_distance"] > 2 * fix["sample_distance"], (broken, fix)
assert a["code_std"] < 0.3 and a["kl"] == math.inf, a
assert b["q_std"] < 0.1 * fix["q_std"], (b, fix)
assert b["kl"] > 5 * fix["kl"] and elbo["(b) no KL term"]["loss"] > elbo["fixed (mlp-mse preset)"]["loss"] + 20
assert active_c == c["active"] == 0 and c["kl"] < 0.1, c
assert abs(c["recon_sse"] - mean_digit_sse) < 0.02 * mean_digit_sse, c
assert c["sample_spread"] < 0.25 * fix["sample_spread"], (c, fix)
assert fix["active"] >= 1 and fix["kl"] > 1 and fix["sample_distance"] < 2.5 * test_distance, fix
assert fix["recon_sse"] < mean_digit_sse - 5, fix
assert same_as_gaussian and all(r.ok for r in gradcheck_a + gradcheck_c)
assert all(p.is_file() for p in figures)
print(f"check passed: (a) codes std {a['code_std']:.2f} and (b) codes KL {b['code_kl']:.0f} nats leave the "
      f"prior (samples {a['sample_distance']:.0f} and {b['sample_distance']:.0f} from any digit against "
      f"{fix['sample_distance']:.0f} for the fix); (c) collapses to {c['active']} active units and the mean "
      f"digit; the fixed mlp-mse preset keeps {fix['active']} active units")
tutorial.finish()  # the quick mode's temporary folder goes
