# %% [markdown]
# # 2. Activations, and stacking layers into an MLP
#
# Tutorial 1 built the dense layer. Between two dense layers sits a
# nonlinearity $f$, applied to each entry on its own. Because
# $\mathrm{out}_{ij}$ depends on $x_{ij}$ only, the Jacobian is diagonal and
# the backward is an elementwise product with the derivative:
#
# $$\mathrm{dx} = \mathrm{dout} \odot f'(x).$$
#
# | activation | $f(x)$ | $f'(x)$ |
# |---|---|---|
# | ReLU | $\max(x, 0)$ | $[\,x > 0\,]$ |
# | leaky ReLU | $x$ or $\alpha x$ | $1$ or $\alpha$ |
# | tanh | $\tanh x$ | $1 - \tanh^2 x$ |
# | sigmoid | $\sigma(x) = 1/(1 + e^{-x})$ | $\sigma(x)(1 - \sigma(x))$ |
# | softplus | $\log(1 + e^{x})$ | $\sigma(x)$ |
#
# Tanh and sigmoid have derivatives that are functions of their *output*, so
# those layers keep the output instead of the input. Derivations:
# [derivations.md, Activations](derivations.md#activations).

# %%
import sys
from pathlib import Path

import numpy as np

# A checkout runs without installing npvae: put its root (the folder holding npvae/) on the
# path, found from this file or, in a notebook, from the notebook's folder.
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(next((p for p in (here, *here.parents) if (p / "npvae").is_dir()), here)))

from npvae.activations import ACTIVATIONS, sigmoid  # noqa: E402
from npvae.gradcheck import check_layer, format_results  # noqa: E402
from npvae.layers import MLP  # noqa: E402
from npvae.tutorial import Tutorial  # noqa: E402

tutorial = Tutorial("02_activations_and_mlp")  # where its figure goes, and the figure inline in a notebook

rng = np.random.default_rng(0)
x = rng.standard_normal((4, 5))
# ReLU has a kink at 0, where a central difference straddling it sees half the
# slope; keep every input at least 1e-3 away from it.
x[np.abs(x) < 1e-3] = 0.5

# %% [markdown]
# ## The derivatives by hand, against npvae's backwards
#
# Each npvae activation is a layer with `forward(x)` and `backward(dout)`. We
# write $f'$ from the table and compare $\mathrm{dout} \odot f'(x)$ with what
# the layer returns.

# %%
by_hand = {
    "relu": lambda x: (x > 0).astype(x.dtype),
    "leaky_relu": lambda x: np.where(x > 0, 1.0, 0.01),
    "tanh": lambda x: 1 - np.tanh(x) ** 2,
    "sigmoid": lambda x: sigmoid(x) * (1 - sigmoid(x)),
    "softplus": lambda x: 1 / (1 + np.exp(-x)),
}

dout = rng.standard_normal(x.shape)
hand_matches = {}
for name, derivative in by_hand.items():
    layer = ACTIVATIONS[name]()
    layer.forward(x)
    hand_matches[name] = np.allclose(layer.backward(dout), dout * derivative(x), rtol=1e-12, atol=1e-14)
    print(f"{name:<11} dout * f'(x) by hand matches npvae's backward: {hand_matches[name]}")

# %% [markdown]
# Each activation and its derivative, both from npvae: `forward` on a grid
# of inputs, then `backward` with $\mathrm{dout} = 1$, which returns $f'(x)$.

# %%
import matplotlib.pyplot as plt  # noqa: E402

grid = np.linspace(-4, 4, 401)
fig, axes = plt.subplots(1, len(ACTIVATIONS), figsize=(3 * len(ACTIVATIONS), 2.8), sharex=True)
for ax, (name, cls) in zip(axes, ACTIVATIONS.items()):
    layer = cls()
    ax.plot(grid, layer.forward(grid), label="f(x)")
    ax.plot(grid, layer.backward(np.ones_like(grid)), label="f'(x): backward(1)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(title=name, xlabel="x")
axes[0].legend(fontsize=8)
fig.tight_layout()
tutorial.savefig(fig, "02_activations.png")

# %% [markdown]
# ## A word on computing the sigmoid
#
# The textbook $1 / (1 + e^{-x})$ overflows inside $e^{-x}$ for $x < -88$ in
# float32. The answer, $1/(1 + \infty) = 0$, happens to be right, but NumPy
# warns, and under `np.errstate(over="raise")` it is an error. npvae computes
# the same function as $\tfrac12 (1 + \tanh(x/2))$, which never overflows.

# %%
x_far = np.array([-100.0, 0.0, 100.0], dtype=np.float32)
with np.errstate(over="raise"):
    try:
        1 / (1 + np.exp(-x_far))
        naive_overflowed = False
    except FloatingPointError:
        naive_overflowed = True
    stable = sigmoid(x_far)
print("naive sigmoid overflows at x = -100 in float32:", naive_overflowed)
print("npvae.activations.sigmoid:", stable)

# %% [markdown]
# ## Gradient-check every activation
#
# `check_layer` builds $L = \sum \mathrm{dout} \odot f(x)$ with a random
# `dout` and compares the layer's `dx` with central differences.

# %%
activation_results = {}
for name, cls in ACTIVATIONS.items():
    (result,) = check_layer(cls(), x.copy(), rng)
    activation_results[name] = result
    print(f"{name:<11} relative error {result.rel_error:.1e}  {'ok' if result.ok else 'FAIL'}")

# %% [markdown]
# ## Stacking: the MLP
#
# An MLP is `Dense`, activation, `Dense`, ..., with no activation after the
# last layer. Forward applies the layers in order; backward applies their
# backwards in **reverse** order, each returned `dx` becoming the `dout` of
# the layer before it. That is the chain rule for a composition:
#
# $$\frac{\partial L}{\partial x} = J_1^\top J_2^\top \cdots J_n^\top\, \mathrm{dout}.$$
#
# Here we run `npvae.layers.MLP`'s layers by hand, in both directions, and
# compare with its own `forward` and `backward`.

# %%
mlp = MLP([5, 8, 8, 3], "tanh", rng=rng, dtype=np.float64)
print(mlp)

h = x
for layer in mlp.layers:
    h = layer.forward(h)
out_by_hand = h

dout = rng.standard_normal(out_by_hand.shape)
d = dout
for layer in reversed(mlp.layers):
    d = layer.backward(d)
dx_by_hand = d
grads_by_hand = {k: g.copy() for k, g in mlp.grads.items()}

out_mlp = mlp.forward(x)
dx_mlp = mlp.backward(dout)
mlp_matches = (np.array_equal(out_mlp, out_by_hand) and np.array_equal(dx_mlp, dx_by_hand)
               and all(np.array_equal(mlp.grads[k], grads_by_hand[k]) for k in grads_by_hand))
print("MLP forward/backward = its layers in order / in reverse order:", mlp_matches)

# %% [markdown]
# ## Gradient-check every layer inside the MLP, then the whole MLP
#
# Each layer is checked on the input it actually receives inside the network;
# then the MLP as one layer: its input and all its parameters (`"0.W"` is the
# first dense layer's weights, `"2.b"` the second's bias, and so on).

# %%
layer_results = []
h = x.copy()
for i, layer in enumerate(mlp.layers):
    for r in check_layer(layer, h, rng):
        r.name = f"layer {i} ({type(layer).__name__}) {r.name}"
        layer_results.append(r)
    h = layer.forward(h).copy()
print(format_results(layer_results))
print()
mlp_results = check_layer(mlp, x.copy(), rng)
print(format_results(mlp_results))

# %% [markdown]
# ## Check

# %%
assert all(hand_matches.values()), hand_matches
assert naive_overflowed and np.allclose(stable, [0.0, 0.5, 1.0])
assert all(r.ok for r in activation_results.values())
assert mlp_matches
assert all(r.ok for r in layer_results + mlp_results)
print("check passed: every activation's backward is dout * f'(x), and every MLP gradient matches finite differences")
tutorial.finish()  # the quick mode's temporary folder goes

# %% [markdown]
# ## Practise
#
# Write each activation's backward yourself in `02_relu.py`,
# `02_leaky_relu.py`, `02_tanh.py`, `02_sigmoid.py` and `02_softplus.py` (in
# `tutorials/exercises/`), then grade them:
#
#     npvae exercises check relu leaky_relu tanh sigmoid softplus
#
# The grader checks every gradient against finite differences and, when one is
# wrong, says how (a missing mask, tanh applied twice, the local derivative
# without dout); `npvae exercises list` shows every exercise.
