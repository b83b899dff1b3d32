# %% [markdown]
# # 5. The reparameterization trick, and a bug no gradient check can see
#
# The reconstruction term of tutorial 3 is evaluated at a sample
# $z \sim q(z \mid x) = \mathcal{N}(\mu, e^{s})$, and training needs its
# gradient with respect to $\mu$ and $s = \mathrm{logvar}$. But a sample from
# a random number generator is just a number: nothing in it says how it would
# have moved had $\mu$ been slightly different.

# %%
import sys
from pathlib import Path

import numpy as np

# A checkout runs without installing npvae: put its root (the folder holding npvae/) on the
# path, found from this file or, in a notebook, from the notebook's folder.
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(next((p for p in (here, *here.parents) if (p / "npvae").is_dir()), here)))

from npvae.gradcheck import check_function, format_results  # noqa: E402
from npvae.losses import log_normal  # noqa: E402
from npvae.reparam import reparameterize, reparameterize_backward  # noqa: E402
from npvae.tutorial import QUICK, Tutorial  # noqa: E402  (QUICK: the test suite's quick mode, fewer samples)

tutorial = Tutorial("05_reparameterization")  # where its figure goes, and the figure inline in a notebook

rng = np.random.default_rng(0)

# %% [markdown]
# ## Sampling blocks gradients
#
# Take $f(z) = z^2$, so $\mathbb{E}_q[f] = \mu^2 + e^{s}$ and the gradient
# we want is $\partial / \partial \mu = 2\mu$. A finite difference of a *freshly
# drawn* sample, $(f(z^+) - f(z^-)) / 2h$ with $z^\pm \sim \mathcal{N}(\mu \pm h, e^{s})$,
# measures mostly the difference between two random draws, divided by a tiny
# $2h$:

# %%
mu0, s0, h = 0.7, np.log(0.5), 1e-4
fresh = [(rng.normal(mu0 + h, np.exp(s0 / 2)) ** 2 - rng.normal(mu0 - h, np.exp(s0 / 2)) ** 2) / (2 * h)
         for _ in range(5)]
print(f"wanted d/dmu E[z^2] = 2 mu = {2 * mu0:.2f}; finite differences of fresh samples:",
      np.round(fresh, 0))

# %% [markdown]
# ## The trick
#
# Move the randomness into parameter-free noise:
#
# $$z = \mu + e^{s/2} \odot \varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, I).$$
#
# This $z$ has mean $\mu$ and standard deviation $e^{s/2}$ (the **half**
# matters: $e^{s}$ is the variance). With $\varepsilon$ held fixed, $z$ is a
# plain differentiable function of $\mu$ and $s$:
#
# $$\mathrm{dmu} = \mathrm{dz}, \qquad \mathrm{dlogvar} = \mathrm{dz} \odot \varepsilon \odot \tfrac12 e^{s/2},$$
#
# and $\nabla\, \mathbb{E}_\varepsilon[f(z)] = \mathbb{E}_\varepsilon[\nabla f(z)]$:
# averaging the pathwise gradients over $\varepsilon$ gives the true gradient.
# For $f = z^2$, $\mathrm{dz} = 2z$, and the exact answers are
# $\partial_\mu \mathbb{E}[f] = 2\mu$ and $\partial_s \mathbb{E}[f] = e^{s}$.
# (Derivation: [derivations.md, Reparameterization](derivations.md#reparameterization).)

# %%
N = 50_000 if QUICK else 400_000
mu1, s1 = np.full((N, 1), mu0), np.full((N, 1), s0)
z, eps = reparameterize(mu1, s1, rng=rng)
dmu, dlogvar = reparameterize_backward(2 * z, s1, eps)
print(f"pathwise gradients averaged over {N} draws: d/dmu {dmu.mean():.4f} (exact {2 * mu0:.4f}), "
      f"d/dlogvar {dlogvar.mean():.4f} (exact {np.exp(s0):.4f})")

B, Z = 4, 3
mu = rng.standard_normal((B, Z))
logvar = rng.normal(0.0, 1.0, (B, Z))
eps_fixed = rng.standard_normal((B, Z))


def reparam_backward(dz, mu, logvar):
    dmu, dlogvar = reparameterize_backward(dz, logvar, eps_fixed)
    return {"mu": dmu, "logvar": dlogvar}


good_grad = check_function(lambda mu, logvar: reparameterize(mu, logvar, eps_fixed)[0], reparam_backward,
                           {"mu": mu, "logvar": logvar}, rng)
print(format_results(good_grad))

# %% [markdown]
# ## The statistical check of the sampler
#
# A gradient check proves that `backward` is the derivative of `forward`,
# nothing more. The forward itself needs its own test: draw many samples and
# compare their mean with $\mu$ and their variance with $e^{s}$. The standard
# error of a sample mean is $\sigma / \sqrt{N}$, and of a sample variance about
# $\sigma^2 \sqrt{2 / N}$; we allow five of them. Note the log-variances are
# chosen **away from 0**: there, $e^{s/2}$ and $e^{s}$ would agree.

# %%
mu_test = np.array([0.5, -1.0, 2.0])
logvar_test = np.log(np.array([4.0, 0.25, 1.0]))


def sampler_check(sample, n):
    """Sample mean and variance of n draws against mu_test and exp(logvar_test)."""
    mus = np.broadcast_to(mu_test, (n, 3))
    lvs = np.broadcast_to(logvar_test, (n, 3))
    z, _ = sample(mus, lvs, rng.standard_normal((n, 3)))
    var = np.exp(logvar_test)
    mean_ok = np.abs(z.mean(axis=0) - mu_test) < 5 * np.sqrt(var / n)
    var_ok = np.abs(z.var(axis=0) - var) < 5 * var * np.sqrt(2 / n)
    return z.mean(axis=0), z.var(axis=0), mean_ok & var_ok


mean, var, ok = sampler_check(reparameterize, N)
print("npvae's sampler: mean", np.round(mean, 3), "vs mu", mu_test)
print("                 var ", np.round(var, 3), "vs exp(logvar)", np.exp(logvar_test), "->", ok)

# %% [markdown]
# ## The bug: scaling the noise by $e^{s}$
#
# A classic mistake (it is in a well-known NumPy VAE) is
# $z = \mu + e^{s} \varepsilon$. Its backward, written to match, is
# $\mathrm{dlogvar} = \mathrm{dz} \odot \varepsilon \odot e^{s}$, and it
# **passes the gradient check**, because backward and forward agree with each
# other. The sampler check catches it: the variance comes out as $e^{2s}$
# (16 instead of 4, 0.0625 instead of 0.25), and only the dimension with
# $s = 0$ looks right.

# %%
def buggy_reparameterize(mu, logvar, eps):
    return mu + np.exp(logvar) * eps, eps


def buggy_backward(dz, mu, logvar):
    return {"mu": dz, "logvar": dz * eps_fixed * np.exp(logvar)}


buggy_grad = check_function(lambda mu, logvar: buggy_reparameterize(mu, logvar, eps_fixed)[0], buggy_backward,
                            {"mu": mu, "logvar": logvar}, rng)
print("gradient check of the buggy sampler:")
print(format_results(buggy_grad))
bug_mean, bug_var, bug_ok = sampler_check(buggy_reparameterize, N)
print("buggy sampler:   var ", np.round(bug_var, 3), "vs exp(logvar)", np.exp(logvar_test), "->", bug_ok)

# %% [markdown]
# The two samplers drawn: histograms of $z$ for each latent of the test above
# against the density they should follow, $\mathcal{N}(\mu, e^{s})$. npvae's
# sampler fits; the $e^{s}$ bug is too wide where $e^{s} > 1$, too narrow
# where $e^{s} < 1$, and right only where $s = 0$.

# %%
import matplotlib.pyplot as plt  # noqa: E402

eps_plot = rng.standard_normal((20_000, 3))
z_good, _ = reparameterize(mu_test, logvar_test, eps_plot)
z_bug, _ = buggy_reparameterize(mu_test, logvar_test, eps_plot)
fig, axes = plt.subplots(2, 3, figsize=(11, 5), sharex="col")
for j in range(3):
    sd = np.exp(logvar_test[j] / 2)
    grid = np.linspace(mu_test[j] - 8 * sd, mu_test[j] + 8 * sd, 400)
    density = np.exp(log_normal(grid[:, None], mu_test[j], logvar_test[j]))  # npvae's log N(z; mu, e^s)
    for row, (z_row, title) in enumerate(((z_good, "mu + exp(logvar/2) eps"), (z_bug, "bug: mu + exp(logvar) eps"))):
        ax = axes[row, j]
        ax.hist(z_row[:, j], bins=80, range=(grid[0], grid[-1]), density=True, alpha=0.6,
                color="C0" if row == 0 else "C3")
        ax.plot(grid, density, color="black", lw=1.2)
        ax.set_title(f"{title}\nmu = {mu_test[j]}, exp(logvar) = {np.exp(logvar_test[j]):g}", fontsize=9)
    axes[1, j].set_xlabel("z")
axes[0, 0].set_ylabel("density")
axes[1, 0].set_ylabel("density")
fig.tight_layout()
tutorial.savefig(fig, "05_samplers.png")


# %% [markdown]
# ## Check
#
# npvae's sampler passes both checks; the $e^{s}$ bug passes the gradient check
# and fails the statistical one. Check the maths, not only the derivatives.

# %%
assert abs(dmu.mean() - 2 * mu0) < 0.03 and abs(dlogvar.mean() - np.exp(s0)) < 0.03
assert all(r.ok for r in good_grad) and ok.all()
assert all(r.ok for r in buggy_grad), "the buggy backward matches its buggy forward"
assert not bug_ok[:2].any() and bug_ok[2], "the bug shows where logvar != 0, and hides where logvar = 0"
print("check passed: z = mu + exp(logvar / 2) eps has mean mu and variance exp(logvar); "
      "the exp(logvar) bug passes the gradient check and fails the statistical one")
tutorial.finish()  # the quick mode's temporary folder goes

# %% [markdown]
# ## Practise
#
# Write the reparameterization and its backward yourself in
# `05_reparameterize.py` (in `tutorials/exercises/`), then grade it:
#
#     npvae exercises check reparameterize
#
# The grader checks every gradient against finite differences and, when one is
# wrong, says how (the variance where the standard deviation belongs, caught by
# the sampler's mean and variance); `npvae exercises list` shows every
# exercise.
