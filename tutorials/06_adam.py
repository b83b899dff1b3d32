# %% [markdown]
# # 6. Adam, by hand and in npvae; against SGD with momentum
#
# Tutorials 1 to 5 computed gradients. An optimizer turns them into updates.
# npvae's optimizers hold two dicts with the same keys, `params` and `grads`,
# and update `params` in place on `step()`: they never need to know what a
# layer is.
#
# **Adam** (Kingma and Ba, 2015, Algorithm 1), for each parameter $\theta$
# with gradient $g_t$ at step $t = 1, 2, \dots$, from $m_0 = v_0 = 0$:
#
# $$m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2,$$
#
# $$\hat m_t = \frac{m_t}{1 - \beta_1^t}, \qquad \hat v_t = \frac{v_t}{1 - \beta_2^t}, \qquad
# \theta_t = \theta_{t-1} - \alpha \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}.$$
#
# The divisions by $1 - \beta^t$ undo the bias of starting the averages at 0.
# npvae computes the same update with fewer passes over the arrays: it keeps
# the decaying sums $M_t = m_t / (1 - \beta_1) = \beta_1 M_{t-1} + g_t$ and
# $V_t = v_t / (1 - \beta_2) = \beta_2 V_{t-1} + g_t^2$ (`m_sum`, `v_sum`) and
# folds every constant into two scalars a step:
# $\theta_t = \theta_{t-1} - \alpha_t\, M_t / (\sqrt{V_t} + \epsilon_t)$ with
# $c_t = \sqrt{(1 - \beta_2^t) / (1 - \beta_2)}$,
# $\alpha_t = \alpha\, c_t (1 - \beta_1) / (1 - \beta_1^t)$ and $\epsilon_t = \epsilon\, c_t$.
# Derivations: [derivations.md, Adam](derivations.md#adam).

# %%
import inspect
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] if "__file__" in globals() else Path.cwd().parent
sys.path.insert(0, str(ROOT))  # so that a checkout runs without installing npvae

from npvae.optim import SGD, Adam, adam_reference_step  # noqa: E402

FIGURES = ROOT / "tutorials" / "figures"
FIGURES.mkdir(exist_ok=True)

# %% [markdown]
# ## A test function: Rosenbrock's banana
#
# $$f(x, y) = (1 - x)^2 + 100\,(y - x^2)^2, \qquad \nabla f = \bigl(-2(1 - x) - 400\,x\,(y - x^2),\ 200\,(y - x^2)\bigr).$$
#
# Its minimum is $(1, 1)$, at the end of a long, curved, narrow valley: steep
# across, nearly flat along. Plain gradient descent zig-zags across it.

# %%
def rosenbrock(p):
    x, y = p[..., 0], p[..., 1]
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def rosenbrock_grad(p):
    x, y = p
    return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


START = np.array([-1.5, 2.0])
STEPS = 2000

# %% [markdown]
# ## Algorithm 1, by hand
#
# npvae keeps Algorithm 1 exactly as the paper writes it, one step on plain
# arrays, as `npvae.optim.adam_reference_step`: the tests check the fast
# `Adam` against it. Here it is:

# %%
print(inspect.getsource(adam_reference_step))


def adam_by_hand(grad_fn, theta, steps, lr):
    """Algorithm 1's steps from ``theta``, with m = v = 0 at the start; the path taken."""
    m, v, path = 0.0, 0.0, [theta.copy()]
    for t in range(1, steps + 1):
        theta, m, v = adam_reference_step(theta, grad_fn(theta), m, v, t, lr=lr)
        path.append(theta.copy())
    return np.array(path)


# %% [markdown]
# ## The same, with npvae's optimizers
#
# The model (here, one array `p`) fills `grads` and the optimizer steps:
# exactly what the training loop will do with a VAE's `params` and `grads`.

# %%
def optimize(make_optimizer, steps):
    params, grads = {"p": START.copy()}, {"p": np.zeros(2)}
    optimizer = make_optimizer(params, grads)
    path = [params["p"].copy()]
    for _ in range(steps):
        grads["p"][...] = rosenbrock_grad(params["p"])
        optimizer.step()
        path.append(params["p"].copy())
    return np.array(path)


adam_lr, sgd_lr = 0.02, 5e-4
hand = adam_by_hand(rosenbrock_grad, START, STEPS, lr=adam_lr)
adam = optimize(lambda p, g: Adam(p, g, lr=adam_lr), STEPS)
sgd = optimize(lambda p, g: SGD(p, g, lr=sgd_lr, momentum=0.9), STEPS)
max_diff = float(np.abs(hand - adam).max())
print(f"Algorithm 1 by hand vs npvae.optim.Adam over {STEPS} steps: largest difference {max_diff:.1e}")
print("(the folded form rounds differently, by a few units in the last place)")
for name, path in (("Adam", adam), ("SGD + momentum", sgd)):
    print(f"{name:<15} ends at ({path[-1, 0]:.4f}, {path[-1, 1]:.4f}), f = {rosenbrock(path[-1]):.2e}")

# %% [markdown]
# ## The two paths
#
# SGD with momentum ($u_t = \rho\, u_{t-1} + g_t$, $\theta_t = \theta_{t-1} - \alpha u_t$)
# follows the gradient, which across the valley is large and along it tiny;
# its learning rate is capped by the steep direction. Adam divides each
# coordinate by its own gradient scale, so its steps have size about $\alpha$
# whatever the curvature. In the figure, SGD zig-zags across the valley at the
# start, then momentum carries it down faster; Adam's steps stay about
# $\alpha$ long and it ends lower. Neither wins everywhere; Adam's appeal is
# that one learning rate works across very differently scaled parameters,
# which is what a VAE's encoder, decoder, means and log-variances are.

# %%
fig, (ax_path, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
gx, gy = np.meshgrid(np.linspace(-2, 2, 300), np.linspace(-1, 3, 300))
ax_path.contour(gx, gy, np.log10(rosenbrock(np.stack([gx, gy], axis=-1)) + 1e-3), levels=25, cmap="Greys")
every = slice(0, None, 100)  # a dot every 100 steps shows the speed along the valley
ax_path.plot(adam[:, 0], adam[:, 1], lw=3, alpha=0.6, color="C0", label=f"Adam, lr={adam_lr}")
ax_path.plot(adam[every, 0], adam[every, 1], "o", ms=3, color="C0")
ax_path.plot(sgd[:, 0], sgd[:, 1], lw=1, color="C1", label=f"SGD, momentum 0.9, lr={sgd_lr}")
ax_path.plot(sgd[every, 0], sgd[every, 1], "s", ms=3, color="C1")
ax_path.plot(*START, "ko", ms=5, label="start")
ax_path.plot(1, 1, "r*", ms=12, label="minimum (1, 1)")
ax_path.set(xlabel="x", ylabel="y", title="Paths on the Rosenbrock function (a dot per 100 steps)")
ax_path.legend(loc="lower right", fontsize=8)
ax_loss.semilogy(rosenbrock(adam), label="Adam")
ax_loss.semilogy(rosenbrock(sgd), label="SGD + momentum")
ax_loss.set(xlabel="step", ylabel="f", title="Function value")
ax_loss.legend(fontsize=8)
fig.tight_layout()
figure = FIGURES / "06_adam_vs_sgd_rosenbrock.png"
fig.savefig(figure, dpi=110)
plt.close(fig)
print("saved", figure.relative_to(ROOT))

# %% [markdown]
# ## AdamW: decoupled weight decay
#
# `weight_decay` $= \lambda$ shrinks every weight by $(1 - \alpha\lambda)$
# before the Adam step, instead of adding $\lambda\theta$ to the gradient
# (which Adam would rescale). With a zero gradient, only the shrink is left:

# %%
params, grads = {"w": np.array([1.0, -2.0])}, {"w": np.zeros(2)}
adamw = Adam(params, grads, lr=0.1, weight_decay=0.5)
adamw.step()
decay_ok = np.allclose(params["w"], np.array([1.0, -2.0]) * (1 - 0.1 * 0.5))
print("after one AdamW step with a zero gradient, w =", params["w"], "= w0 * (1 - lr * weight_decay)")

# %% [markdown]
# ## Subnormals: why npvae flushes tiny moments to zero
#
# A ReLU unit that stops firing gets exactly zero gradients; its $m$ then
# shrinks by 0.9 every step (and so does `m_sum`) and, after a few hundred steps, falls below
# float32's smallest normal number ($1.2 \times 10^{-38}$). CPUs compute on
# such subnormal numbers many times more slowly. Every `flush_every` steps
# npvae sets them to zero. Their effect on $\theta$ is far below float32's
# rounding, so the parameters come out **bitwise identical**:

# %%
def run_float32(flush_every):
    params = {"w": np.array([0.3, -0.7], dtype=np.float32)}
    grads = {"w": np.zeros(2, dtype=np.float32)}
    opt = Adam(params, grads, lr=1e-3, flush_every=flush_every)
    for t in range(1200):
        grads["w"][...] = [1.0, -0.5] if t < 10 else [0.0, 0.0]  # the unit dies after 10 steps
        opt.step()
    return params["w"], opt.m_sum["w"]


w_flushed, m_flushed = run_float32(flush_every=50)
w_kept, m_kept = run_float32(flush_every=0)
tiny = np.finfo(np.float32).tiny
print("m_sum without flushing:", m_kept, " subnormal:", bool(np.all((m_kept != 0) & (np.abs(m_kept) < tiny))))
print("m_sum with flushing:   ", m_flushed)
print("parameters bitwise equal:", np.array_equal(w_flushed, w_kept))

# %% [markdown]
# ## Check

# %%
assert max_diff < 1e-9, max_diff
assert np.linalg.norm(adam[-1] - 1) < 0.05 and np.linalg.norm(sgd[-1] - 1) < 0.05
assert figure.is_file() and decay_ok
assert np.all(m_flushed == 0) and np.array_equal(w_flushed, w_kept)
print("check passed: npvae.optim.Adam equals Algorithm 1 by hand, Adam and SGD+momentum both reach (1, 1), "
      "and flushing subnormals leaves the parameters bitwise unchanged")

# %% [markdown]
# ## Practise
#
# Write one Adam step as in Algorithm 1 yourself in `06_adam.py` (in
# `tutorials/exercises/`), then grade it:
#
#     npvae exercises check adam
#
# The grader compares your values with npvae's and, when one is wrong, says how
# (no bias correction, t off by one, the decaying sums in place of the
# averages); `npvae exercises list` shows every exercise.
