# %% [markdown]
# # 4. The Gaussian KL: closed form, Monte Carlo, gradients
#
# The encoder outputs, per example, a mean $\mu$ and a log-variance
# $s = \mathrm{logvar}$, each of shape $(B, Z)$: the posterior is
# $q(z \mid x) = \mathcal{N}(\mu, \mathrm{diag}\, e^{s})$. The second term of
# the VAE loss is its KL divergence from the prior $p(z) = \mathcal{N}(0, I)$.
# Per latent dimension, from the two log densities,
#
# $$\log q(z) - \log p(z) = -\tfrac12\left(s + \frac{(z - \mu)^2}{e^{s}} - z^2\right),$$
#
# and taking the expectation under $q$ with $\mathbb{E}[(z-\mu)^2] = e^{s}$ and
# $\mathbb{E}[z^2] = e^{s} + \mu^2$:
#
# $$\mathrm{KL}(q \,\Vert\, p) = \tfrac12 \left(e^{s} + \mu^2 - 1 - s\right), \qquad \text{summed over the } Z \text{ latents}.$$
#
# Full derivation: [derivations.md, Gaussian KL](derivations.md#gaussian-kl).

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
    gaussian_kl,
    gaussian_kl_backward,
    gaussian_kl_per_dim,
    log_normal,
    log_standard_normal,
)
from npvae.reparam import reparameterize  # noqa: E402
from npvae.tutorial import QUICK, Tutorial  # noqa: E402  (QUICK: the test suite's quick mode, fewer samples)

tutorial = Tutorial("04_gaussian_kl")  # where its figure goes, and the figure inline in a notebook

rng = np.random.default_rng(0)
mu = np.array([[0.0, 0.5, -1.5]])
logvar = np.array([[0.0, np.log(0.25), np.log(3.0)]])
print("KL per dimension:", gaussian_kl_per_dim(mu, logvar))
print("KL, summed over Z:", gaussian_kl(mu, logvar))

# %% [markdown]
# The first dimension is the prior itself ($\mu = 0$, $s = 0$): its KL is 0.
# The KL is never negative, since $e^{s} \ge 1 + s$ and $\mu^2 \ge 0$.
#
# ## Closed form against a Monte Carlo estimate
#
# The KL is an expectation, so we can also estimate it by sampling:
# draw $z_n \sim q$, average $\log q(z_n) - \log p(z_n)$. `npvae.losses` has
# both log densities (they serve the importance-weighted bound later). The
# estimate has a standard error $\mathrm{sd}/\sqrt{N}$; the closed form should
# lie within a few of them.

# %%
N = 50_000 if QUICK else 400_000
eps = rng.standard_normal((N, *mu.shape))  # (N, B, Z): N samples of the batch
z, _ = reparameterize(mu, logvar, eps)
log_ratio = log_normal(z, mu, logvar) - log_standard_normal(z)  # (N, B)
mc = log_ratio.mean(axis=0)
std_error = log_ratio.std(axis=0) / np.sqrt(N)
closed = gaussian_kl(mu, logvar)
z_score = float(np.abs(mc - closed).max() / std_error.max())
print(f"closed form {closed[0]:.4f}   Monte Carlo {mc[0]:.4f} +/- {std_error[0]:.4f}   "
      f"({z_score:.2f} standard errors apart, N = {N})")

# %% [markdown]
# Left, the KL of one latent dimension over its mean and standard deviation:
# zero only at the prior, $\mu = 0, \sigma = 1$. Right, the Monte Carlo
# estimate above as the number of samples grows, closing in on the closed
# form (the band: two standard errors).

# %%
import matplotlib.pyplot as plt  # noqa: E402

mus, sigmas = np.meshgrid(np.linspace(-2.5, 2.5, 201), np.linspace(0.1, 2.5, 200))
kl_grid = gaussian_kl_per_dim(mus, np.log(sigmas**2))
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
levels = [0.05, 0.25, 0.5, 1, 2, 4]
contours = left.contour(mus, sigmas, kl_grid, levels=levels, cmap="viridis")
left.clabel(contours, fontsize=8)
left.plot([0], [1], "k*", ms=10, label="the prior N(0, 1): KL = 0")
left.set(xlabel="mu", ylabel="sigma = exp(logvar / 2)", title="KL( N(mu, sigma^2) || N(0, 1) ), nats")
left.legend(fontsize=8, loc="upper right")
n = np.arange(1, N + 1)
running = np.cumsum(log_ratio[:, 0]) / n
band = 2 * log_ratio[:, 0].std() / np.sqrt(n)
right.semilogx(n, running, label="Monte Carlo mean of log q(z)/p(z)")
right.fill_between(n, closed[0] - band, closed[0] + band, color="grey", alpha=0.3, label="closed form +/- 2 s.e.")
right.axhline(closed[0], color="black", lw=1)
right.set(xlabel="samples N", ylabel="KL estimate (nats)", ylim=(closed[0] - 1, closed[0] + 1),
          title="the estimate converges to gaussian_kl")
right.legend(fontsize=8)
fig.tight_layout()
tutorial.savefig(fig, "04_kl.png")


# %% [markdown]
# ## Gradients
#
# Differentiating $\tfrac12 (e^{s} + \mu^2 - 1 - s)$:
#
# $$\frac{\partial\,\mathrm{kl}}{\partial \mu} = \mu, \qquad \frac{\partial\,\mathrm{kl}}{\partial s} = \tfrac12\left(e^{s} - 1\right).$$
#
# `gaussian_kl_backward(dout, mu, logvar)` multiplies them by each example's
# upstream gradient `dout` (shape $(B,)$; in the VAE it is $\beta / B$).
# First by hand, then against central differences on a random batch.

# %%
B, Z = 5, 4
mu_b = rng.standard_normal((B, Z))
logvar_b = rng.normal(0.0, 1.0, (B, Z))
dout = rng.standard_normal(B)
dmu, dlogvar = gaussian_kl_backward(dout, mu_b, logvar_b)
by_hand = (np.allclose(dmu, dout[:, None] * mu_b)
           and np.allclose(dlogvar, dout[:, None] * 0.5 * (np.exp(logvar_b) - 1)))
print("gaussian_kl_backward matches mu and (exp(logvar) - 1) / 2:", by_hand)


def kl_backward(dout, mu, logvar):
    dmu, dlogvar = gaussian_kl_backward(dout, mu, logvar)
    return {"mu": dmu, "logvar": dlogvar}


results = check_function(gaussian_kl, kl_backward, {"mu": mu_b, "logvar": logvar_b}, rng)
print(format_results(results))

# %% [markdown]
# ## Check

# %%
assert abs(gaussian_kl_per_dim(mu, logvar)[0, 0]) < 1e-15
assert np.all(gaussian_kl_per_dim(mu_b, logvar_b) >= 0)
assert z_score < 4, z_score
assert by_hand and all(r.ok for r in results)
print(f"check passed: the closed-form KL agrees with Monte Carlo ({z_score:.2f} standard errors) "
      "and its gradients mu, (exp(logvar) - 1) / 2 match finite differences")
tutorial.finish()  # the quick mode's temporary folder goes

# %% [markdown]
# ## Practise
#
# Write the Gaussian KL and its backward yourself in `04_gaussian_kl.py` (in
# `tutorials/exercises/`), then grade it:
#
#     npvae exercises check gaussian_kl
#
# The grader checks every gradient against finite differences and, when one is
# wrong, says how (a missing 1/2 or -1, a sum over the wrong axis); `npvae
# exercises list` shows every exercise.
