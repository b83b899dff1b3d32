# %% [markdown]
# # 1. The dense layer: forward, backward by hand, and a finite-difference check
#
# A variational autoencoder is built from dense layers, activations and a loss.
# We start with the dense (affine) layer, the only layer with parameters. Run
# this file with `python tutorials/01_dense_layer.py`; each `# %%` is a cell
# (VS Code, Spyder and Jupytext open it as a notebook).
#
# Examples are **rows**: a batch $x$ of shape $(B, n_\text{in})$ goes to
#
# $$\mathrm{out} = x W + b, \qquad W: (n_\text{in}, n_\text{out}), \quad b: (n_\text{out},), \quad \mathrm{out}: (B, n_\text{out}).$$

# %%
import sys
from pathlib import Path

import numpy as np

# A checkout runs without installing npvae: put its root (the folder holding npvae/) on the
# path, found from this file or, in a notebook, from the notebook's folder.
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(next((p for p in (here, *here.parents) if (p / "npvae").is_dir()), here)))

from npvae.gradcheck import check_layer, format_results, numerical_gradient, rel_error  # noqa: E402
from npvae.layers import Dense  # noqa: E402
from npvae.tutorial import Tutorial  # noqa: E402

tutorial = Tutorial("01_dense_layer")  # where its figure goes, and the figure inline in a notebook

rng = np.random.default_rng(0)
B, n_in, n_out = 4, 3, 2
x = rng.standard_normal((B, n_in))
W = rng.standard_normal((n_in, n_out))
b = rng.standard_normal(n_out)


def affine_forward(x, W, b):
    return x @ W + b


out = affine_forward(x, W, b)
print("out has shape", out.shape)

# %% [markdown]
# ## Backward by hand
#
# `backward` never sees the loss $L$. It receives the **upstream gradient**
# $\mathrm{dout} = \partial L / \partial \mathrm{out}$, of the same shape as
# `out`, and returns the gradients of $L$ with respect to its inputs. Since
# $\mathrm{out}_{ik} = \sum_j x_{ij} W_{jk} + b_k$, the chain rule entry by
# entry gives
#
# $$\mathrm{dW} = x^\top \mathrm{dout}, \qquad \mathrm{db} = \textstyle\sum_i \mathrm{dout}_{i,:}, \qquad \mathrm{dx} = \mathrm{dout}\, W^\top.$$
#
# Check the shapes: $x^\top \mathrm{dout}$ is $(n_\text{in}, B)(B, n_\text{out})
# = (n_\text{in}, n_\text{out})$, the shape of $W$, as it must be. The sums over
# the batch appear because every example uses the same $W$ and $b$. (Full
# derivation: [derivations.md, Dense layer](derivations.md#dense-layer).)

# %%
def affine_backward(dout, x, W):
    dx = dout @ W.T
    dW = x.T @ dout
    db = dout.sum(axis=0)
    return dx, dW, db


dout = rng.standard_normal((B, n_out))
dx, dW, db = affine_backward(dout, x, W)
print("dx", dx.shape, " dW", dW.shape, " db", db.shape)

# %% [markdown]
# ## Checking it with finite differences
#
# A finite-difference check needs a scalar. For a fixed random `dout`, the
# scalar $L = \sum \mathrm{dout} \odot \mathrm{out}$ has exactly the gradients
# our backward claims to compute (its $\partial L / \partial \mathrm{out}$ is
# `dout`). Nudging one entry at a time by $\pm h$,
#
# $$\frac{\partial L}{\partial \theta_j} \approx \frac{L(\theta + h e_j) - L(\theta - h e_j)}{2h},$$
#
# with an error of order $h^2$. `npvae.gradcheck.numerical_gradient` does
# this, perturbing the array in place, and `rel_error` compares the two
# gradients against the scale of the whole gradient:
# $\max_j |a_j - n_j| / (\max_j |a_j| + \max_j |n_j|)$. Everything runs in
# float64, where a correct backward gives about $10^{-10}$.

# %%
def loss():
    return np.sum(dout * affine_forward(x, W, b))


errors = {
    "dx": rel_error(dx, numerical_gradient(loss, x)),
    "dW": rel_error(dW, numerical_gradient(loss, W)),
    "db": rel_error(db, numerical_gradient(loss, b)),
}
for name, err in errors.items():
    print(f"{name}: relative error {err:.1e}")

# %% [markdown]
# ## What a bug looks like
#
# Take the batch *mean* of `dout` for `db` instead of its sum: a factor $1/B$.
# The relative error is then $(1 - 1/B)/(1 + 1/B) = (B-1)/(B+1)$, here 0.6,
# not a rounding-sized number. A sign error gives exactly 1, a factor of two
# 1/3. (More in [derivations.md, Finite-difference checks](derivations.md#finite-difference-checks).)

# %%
buggy_db = dout.mean(axis=0)
buggy_error = rel_error(buggy_db, numerical_gradient(loss, b))
print(f"db with a mean instead of a sum: relative error {buggy_error:.3f} (expected {(B - 1) / (B + 1):.3f})")

# %% [markdown]
# ## The check, drawn
#
# Every entry of every gradient, the numerical value against the analytic
# one: a correct backward puts them on the diagonal, the mean-for-sum bug
# puts `db` on the line of slope $1/B$.

# %%
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(5, 4.5))
for name, analytic in (("dx", dx), ("dW", dW), ("db", db)):
    numeric = numerical_gradient(loss, {"dx": x, "dW": W, "db": b}[name])
    ax.scatter(numeric.ravel(), analytic.ravel(), label=f"{name} (rel. error {errors[name]:.0e})")
ax.scatter(numerical_gradient(loss, b), buggy_db, marker="x", color="red", s=60,
           label=f"db as a mean (rel. error {buggy_error:.2f})")
lim = 1.1 * max(np.abs(dx).max(), np.abs(dW).max(), np.abs(db).max())
ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, zorder=0)
ax.set(xlabel="numerical gradient (central differences)", ylabel="analytic gradient (our backward)",
       title="Dense layer: every gradient entry")
ax.legend(fontsize=8)
fig.tight_layout()
tutorial.savefig(fig, "01_gradients.png")

# %% [markdown]
# ## The same layer in npvae
#
# `npvae.layers.Dense` keeps its parameters and their gradients side by side,
# in two dicts with the same keys (`params["W"]`, `grads["W"]`), so an
# optimizer can loop over keys without knowing what a layer is. Its
# `backward(dout)` fills `grads` and returns `dx`. We give it our $W$ and $b$
# and compare, then let `npvae.gradcheck.check_layer` run the whole check
# (input and every parameter) for us.

# %%
layer = Dense(n_in, n_out, rng=rng, dtype=np.float64)
layer.params["W"][...] = W
layer.params["b"][...] = b
same_forward = np.allclose(layer.forward(x), out, rtol=1e-12, atol=1e-12)
layer_dx = layer.backward(dout)
same_backward = (np.allclose(layer_dx, dx, rtol=1e-12, atol=1e-12)
                 and np.allclose(layer.grads["W"], dW, rtol=1e-12, atol=1e-12)
                 and np.allclose(layer.grads["b"], db, rtol=1e-12, atol=1e-12))
print("npvae's Dense matches ours: forward", same_forward, " backward", same_backward)

results = check_layer(layer, x, rng)
print(format_results(results))

# %% [markdown]
# ## Check
#
# The hand-written backward passes the finite-difference check, the bug does
# not, and npvae's `Dense` computes exactly what we derived.

# %%
assert all(err < 1e-8 for err in errors.values()), errors
assert abs(buggy_error - (B - 1) / (B + 1)) < 1e-6, buggy_error
assert same_forward and same_backward
assert all(r.ok for r in results)
print("check passed: dx = dout W^T, dW = x^T dout, db = sum_i dout match finite differences and npvae.layers.Dense")
tutorial.finish()  # the quick mode's temporary folder goes

# %% [markdown]
# ## Practise
#
# Write the dense layer's forward and backward yourself in `01_dense.py` (in
# `tutorials/exercises/`), then grade it:
#
#     npvae exercises check dense
#
# The grader checks every gradient against finite differences and, when one is
# wrong, says how (a flipped sign, a transpose, a sum over the wrong axis);
# `npvae exercises list` shows every exercise.
