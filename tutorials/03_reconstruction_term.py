# %% [markdown]
# # 3. The reconstruction term: Bernoulli and Gaussian likelihoods
#
# The decoder of tutorial 2's MLPs outputs one number per pixel. The
# reconstruction term turns it into $-\log p(x \mid z)$, **summed over the
# $D$ pixels**: one value per example, shape $(B,)$. Two choices:
#
# - **Bernoulli** (binary or $[0, 1]$ pixels): the decoder outputs logits $l$,
#   and $p_j = \sigma(l_j)$;
# - **Gaussian** (real pixels): the decoder outputs means $m$, with a fixed
#   standard deviation $\sigma_x$.

# %%
import sys
from pathlib import Path

import numpy as np

# A checkout runs without installing npvae: put its root (the folder holding npvae/) on the
# path, found from this file or, in a notebook, from the notebook's folder.
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(next((p for p in (here, *here.parents) if (p / "npvae").is_dir()), here)))

from npvae.gradcheck import check_function, format_results  # noqa: E402
from npvae.losses import (  # noqa: E402
    bernoulli_nll,
    bernoulli_nll_backward,
    gaussian_kl,
    gaussian_nll,
    gaussian_nll_backward,
)
from npvae.tutorial import Tutorial  # noqa: E402

tutorial = Tutorial("03_reconstruction_term")  # where its figure goes, and the figure inline in a notebook

rng = np.random.default_rng(0)

# %% [markdown]
# ## Bernoulli: the naive formula breaks
#
# The binary cross-entropy, as usually written:
#
# $$-\log p(x \mid l) = -\sum_j x_j \log \sigma(l_j) + (1 - x_j) \log(1 - \sigma(l_j)).$$
#
# Computed literally, $\sigma(l)$ rounds to exactly 1 once $l \gtrsim 37$ in
# float64 (17 in float32), and then $\log(1 - 1) = -\infty$. For a pixel with
# $x = 0$ that is an infinite loss where the truth is about $l$ nats; for
# $x = 1$ it is $0 \cdot (-\infty)$ = NaN, which then poisons every gradient.
# A decoder that becomes confident produces exactly such logits.

# %%
def naive_bce(logits, x):
    p = 1 / (1 + np.exp(-logits))
    return -(x * np.log(p) + (1 - x) * np.log(1 - p))


logits = np.array([-100.0, -40.0, -20.0, 0.0, 20.0, 40.0, 100.0])
print(f"{'logit':>7} {'x':>3} {'naive':>12} {'stable':>12}")
with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    for target in (0.0, 1.0):
        x_pixel = np.full_like(logits, target)
        naive = naive_bce(logits, x_pixel)
        stable = bernoulli_nll(logits[:, None], x_pixel[:, None])
        for l, n, s in zip(logits, naive, stable):
            print(f"{l:7.0f} {target:3.0f} {n + 0.0:12.4g} {s:12.4g}")
    naive_at_40 = naive_bce(np.array([40.0, 40.0]), np.array([0.0, 1.0]))

# %% [markdown]
# The same comparison over every logit: where the naive form breaks. In
# float64 $\sigma(l)$ rounds to exactly 1 once $l > 37$: for $x = 0$,
# $\log(1 - \sigma(l)) = \log 0$ gives $+\infty$, and for $x = 1$ the term
# $0 \cdot \log 0$ gives nan, where the true value is $e^{-l}$. For
# $l < -37$, $1 - \sigma(l)$ rounds to 1 and the $x = 0$ NLL is exactly 0
# instead of $e^{l}$. (Values of 0, inf or nan cannot sit on a log axis: the
# red lines mark where they start.)

# %%
import matplotlib.pyplot as plt  # noqa: E402

grid = np.linspace(-60, 60, 1201)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    for ax, target in zip(axes, (1.0, 0.0)):
        x_pixel = np.full_like(grid, target)
        naive = naive_bce(grid, x_pixel) + 0.0  # + 0.0: no -0.0
        stable = bernoulli_nll(grid[:, None], x_pixel[:, None])
        shown = np.isfinite(naive) & (naive > 0)
        ax.semilogy(grid, stable, lw=3, alpha=0.5, label="npvae.losses.bernoulli_nll (stable)")
        ax.semilogy(grid[shown], naive[shown], "--", color="black", label="naive -x log p - (1-x) log(1-p)")
        for broken, what in ((naive == 0, "0"), (np.isinf(naive), "inf"), (np.isnan(naive), "nan")):
            for half in (grid < 0, grid > 0):
                where = grid[broken & half]
                if where.size:
                    edge = where.max() if where.max() < 0 else where.min()
                    ax.axvline(edge, color="red", lw=1)
                    ax.annotate(f"naive = {what}", (edge, 1e-9), rotation=90, color="red", fontsize=8,
                                ha="right" if edge > 0 else "left")
        ax.set(xlabel="logit l", ylabel="NLL of one pixel (nats)", title=f"x = {target:.0f}")
        ax.legend(fontsize=8, loc="lower center")
fig.tight_layout()
tutorial.savefig(fig, "03_bernoulli_nll.png")


# %% [markdown]
# ## The stable form
#
# With $\log \sigma(l) = -\mathrm{softplus}(-l)$ and
# $\log(1 - \sigma(l)) = -\mathrm{softplus}(l)$, each pixel's term is
#
# $$x\,\mathrm{softplus}(-l) + (1 - x)\,\mathrm{softplus}(l) = \mathrm{softplus}(l) - x\, l,
# \qquad \frac{\partial}{\partial l} = \sigma(l) - x,$$
#
# using $\mathrm{softplus}(-l) = \mathrm{softplus}(l) - l$. Softplus is computed
# as $\max(l, 0) + \log(1 + e^{-|l|})$: no exponential of a positive number, no
# logarithm of zero. The short form on the right is the famous one, but for
# $x = 1$ and a large logit it subtracts two nearly equal numbers. So
# `npvae.losses.bernoulli_nll` evaluates a third form, the short one with
# softplus written out and its two pieces kept apart:
#
# $$\max(l, 0) - x\, l + \log(1 + e^{-|l|}).$$
#
# The first two terms are exact products and sums of the inputs (for $x = 1$
# and $l > 0$ they cancel to exactly 0), and the last, small one keeps all
# its digits (`log1p`). Where the naive formula works, all agree. (Derivation:
# [derivations.md, Bernoulli likelihood](derivations.md#bernoulli-likelihood).)

# %%
B, D = 4, 6
logits = 3 * rng.standard_normal((B, D))
x = rng.uniform(size=(B, D))  # grey-level pixels in [0, 1]
agree = np.allclose(bernoulli_nll(logits, x), naive_bce(logits, x).sum(axis=1), rtol=1e-12)
print("stable == naive for moderate logits:", agree)
huge = bernoulli_nll(np.array([[1e4], [-1e4]]), np.array([[1.0], [1.0]]))
print("stable values at logits +1e4 and -1e4 with x = 1:", huge, "(exact, finite)")
short_form_at_40 = np.logaddexp(0, 40.0) - 1.0 * 40.0
npvae_at_40 = float(bernoulli_nll(np.array([[40.0]]), np.array([[1.0]]))[0])
print(f"l = 40, x = 1: softplus(l) - x l = {short_form_at_40:.3g}, npvae {npvae_at_40:.3g}, "
      f"true log(1 + exp(-40)) = {np.log1p(np.exp(-40.0)):.3g}")


def bernoulli_backward(dout, logits, x):
    return {"logits": bernoulli_nll_backward(dout, logits, x)}


bernoulli_results = check_function(bernoulli_nll, bernoulli_backward, {"logits": logits, "x": x}, rng)
print(format_results(bernoulli_results))

# %% [markdown]
# ## Gaussian, and the variance every squared error assumes
#
# $$-\log \mathcal{N}(x; m, \sigma_x^2 I) = \sum_j \frac{(x_j - m_j)^2}{2\sigma_x^2} + \frac{D}{2}\log(2\pi\sigma_x^2),
# \qquad \frac{\partial}{\partial m} = \frac{m - x}{\sigma_x^2}.$$
#
# The constant does not affect any gradient. With $\sigma_x^2 = 1/2$ the first
# term is the summed squared error (SSE): **MSE is a Gaussian likelihood with
# a variance you did not choose on purpose**. (Derivation:
# [derivations.md, Gaussian likelihood](derivations.md#gaussian-likelihood).)

# %%
mean = rng.uniform(size=(B, D))
sse = ((x - mean) ** 2).sum(axis=1)
sse_from_gaussian = gaussian_nll(mean, x, sigma=np.sqrt(0.5)) - D / 2 * np.log(np.pi)
print("gaussian_nll with sigma^2 = 1/2, minus D/2 log(pi), equals the SSE:", np.allclose(sse_from_gaussian, sse))


def gaussian_backward(dout, mean, x):
    return {"mean": gaussian_nll_backward(dout, mean, x, sigma=0.3)}


gaussian_results = check_function(lambda mean, x: gaussian_nll(mean, x, sigma=0.3), gaussian_backward,
                                  {"mean": mean, "x": x}, rng)
print(format_results(gaussian_results))

# %% [markdown]
# ## Sum or mean over pixels: what it does to the KL
#
# The VAE loss adds the KL of tutorial 4 to this term. Whatever the
# reconstruction term is, its scale against the KL decides how much the model
# may spend on the latent code. Write it as $c \cdot \mathrm{SSE}$: the same
# optimum as $\mathrm{SSE} + \beta_\text{eff}\,\mathrm{KL}$ with
# $\beta_\text{eff} = 1/c$, and the Gaussian with $\sigma_x^2 = 1/(2c)$.
# Averaging over the $D$ pixels instead of summing makes $c = 1/D$: the KL
# weighs $D$ times more. Below, an MNIST-sized example ($D = 784$) with a
# decent reconstruction (pixel error 0.1) and a typical KL of 25 nats.

# %%
D_mnist = 784
x_img = rng.uniform(size=(1, D_mnist))
recon_img = x_img + 0.1 * rng.standard_normal((1, D_mnist))
mu, logvar = rng.normal(0, 1.2, (1, 20)), rng.normal(-2, 0.3, (1, 20))
kl = float(gaussian_kl(mu, logvar)[0])
sse_img = float(((x_img - recon_img) ** 2).sum())
forms = {
    "Gaussian NLL, sigma=0.1 (sum)": 1 / (2 * 0.1**2),
    "Gaussian NLL, sigma=1 (sum)": 0.5,
    "SSE (sum over pixels)": 1.0,
    "MSE (mean over pixels)": 1.0 / D_mnist,
}
print(f"KL = {kl:.1f} nats, SSE = {sse_img:.2f}")
print(f"{'reconstruction term':<30} {'c * SSE':>8} {'KL share':>9} {'sigma^2':>8} {'beta_eff':>9}")
kl_share = {}
for name, c in forms.items():
    recon = c * sse_img
    kl_share[name] = kl / (recon + kl)
    print(f"{name:<30} {recon:8.3f} {kl_share[name]:9.1%} {1 / (2 * c):8.3g} {1 / c:9.3g}")

# %% [markdown]
# Every row is the same reconstruction and the same posterior; only the
# assumed pixel noise changes. With $\sigma_x = 0.1$ (a plausible noise level)
# the reconstruction dominates. With the mean over pixels the KL is almost the
# whole loss, and the model is told that pixels in $[0, 1]$ carry noise of
# standard deviation $\sqrt{392} \approx 20$: the cheapest explanation is to
# ignore $z$, and the posterior collapses.
# npvae always sums over pixels and exposes the balance as `beta` (and
# `sigma`).
#
# ## Check

# %%
assert np.isinf(naive_at_40[0]) and np.isnan(naive_at_40[1])
assert huge[0] == 0.0 and huge[1] == 1e4
assert agree and np.allclose(sse_from_gaussian, sse)
assert short_form_at_40 == 0.0 and np.isclose(npvae_at_40, np.log1p(np.exp(-40.0)), rtol=1e-12)
assert all(r.ok for r in bernoulli_results + gaussian_results)
assert kl_share["MSE (mean over pixels)"] > 0.9 > kl_share["SSE (sum over pixels)"]
print("check passed: the stable Bernoulli NLL is finite where the naive one gives inf/nan, "
      "both likelihood gradients match finite differences, and a pixel mean reweights the KL by D")
tutorial.finish()  # the quick mode's temporary folder goes

# %% [markdown]
# ## Practise
#
# Write the stable Bernoulli NLL (forward and backward) and the Gaussian NLL's
# backward yourself in `03_bernoulli_nll.py` and `03_gaussian_nll.py` (in
# `tutorials/exercises/`), then grade them:
#
#     npvae exercises check bernoulli_nll gaussian_nll
#
# The grader checks every gradient against finite differences and, when one is
# wrong, says how (an overflow at logits of +/-1e4, a sum over the batch
# instead of the pixels, sigma where sigma^2 belongs); `npvae exercises list`
# shows every exercise.
