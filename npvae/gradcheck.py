"""Gradient checking: compare hand-written backwards with central differences.

A gradient check proves that ``backward`` is the derivative of ``forward``,
nothing more: a wrong forward with a matching backward passes. The forward
maths is checked separately (see ``tests/test_forward_maths.py``).

Every check runs in float64. A scalar function L is built from the output
with a random weighting ``dout`` (L = sum(dout * out)), so that every entry
of every gradient is exercised, and

    numeric_j  = (L(x + h e_j) - L(x - h e_j)) / (2 h)        error O(h^2)
    rel_error  = max_j |a_j - n_j| / max(floor, max_j |a_j| + max_j |n_j|)

The relative error is taken against the scale of the whole gradient, so an
entry that is tiny by cancellation does not dominate. The ``floor`` is the
finite differences' own noise: each evaluation of L is rounded to about
2e-16 |L|, so with h = 1e-5 the numeric gradient carries about 2e-11 |L| of
noise whatever the truth, where |L| is the size of the terms L sums (its
rounding follows them even when they cancel). The checks set floor =
noise_floor(S) = 1e-4 max(1, S), with S = sum |dout * out| for
check_function and check_layer and S = |recon| + |kl| for check_model. That
turns the bound for a gradient that is itself tiny (a dead ReLU path, a
posterior equal to the prior) into an absolute one, tol * 1e-4 S, five times
the noise. A correct backward gives about 1e-9 or less; a wrong sign
gives 1, a factor of two 1/3, a transpose a number of order 1.

Kinks. A ReLU is not differentiable at 0: where a perturbation of +-h moves
one of its inputs across 0, the central difference averages two slopes and
is not the derivative, and a correct backward would FAIL. ``check_model``
watches every ReLU's input: an entry whose +h or -h evaluation puts any of
them on the other side of 0 than the unperturbed point is skipped (compared
neither way), and the results say how many were.

Derivation: ``tutorials/derivations.md#finite-difference-checks``.
"""

import time
from dataclasses import dataclass

import numpy as np

from .activations import LeakyReLU, ReLU
from .backend import to_numpy, xp_of
from .errors import ConfigError
from .vae import parameter_shapes

MODEL_ARGUMENTS = ("x_dim", "hidden", "latent", "decoder_hidden", "activation", "likelihood",
                   "sigma", "beta", "init", "architecture")
"""The keys of a model config that ``vae.check_arguments`` checks."""

DEFAULT_H = 1e-5
DEFAULT_TOL = 1e-6

MAX_CHECKED_PARAMETERS = 10**6
"""The most parameters ``check_architecture`` takes: each costs 2 evaluations of the loss
(the full-size default preset has 652,824; its gradcheck --x-dim 784 is slow already)."""

PROGRESS_AFTER = 5.0
"""Seconds a check runs before its progress is shown (a quick check prints nothing)."""


def check_step_size(h):
    """``h`` as a float, or a ConfigError when x + h == x: a step that moves nothing."""
    h = float(h)
    if not (np.isfinite(h) and 0 < h < 1 and 1.0 + h > 1.0):
        raise ConfigError(f"h={h:g} is too small to change x in float64 (1 + h == 1; the "
                          f"smallest step is about {np.finfo(np.float64).eps / 2:.1e}, and 1e-5 "
                          "balances rounding against truncation)")
    return h


def rel_error(analytic, numeric, floor=1e-8):
    """max |a - n| / max(floor, max |a| + max |n|): 0 when equal, 1 for a sign flip."""
    a = np.asarray(to_numpy(analytic), dtype=np.float64)
    n = np.asarray(to_numpy(numeric), dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"gradient shapes differ: {a.shape} vs {n.shape}")
    scale = max(floor, np.abs(a).max(initial=0.0) + np.abs(n).max(initial=0.0))
    return float(np.abs(a - n).max(initial=0.0) / scale)


def noise_floor(loss_scale):
    """The ``floor`` of ``rel_error`` for a loss of magnitude ``loss_scale``."""
    return 1e-4 * max(1.0, float(loss_scale))


def numerical_gradient(f, x, h=DEFAULT_H):
    """Central differences of scalar ``f()`` with respect to array ``x``.

    ``x`` is perturbed in place, one entry at a time, and restored; ``f``
    takes no arguments and must read ``x`` (so it also works for a layer's
    parameters, which the layer reads itself). Returns an array like ``x``.
    The step is relative for large entries, h * max(1, |x_j|): at x_j = 1e4
    an absolute step of 1e-5 would lose most of its digits to rounding
    (x_j + h has only about 2e-12 of absolute precision).
    """
    return central_differences(f, x, h)[0]


def central_differences(f, x, h=DEFAULT_H, sides=None, base=None, progress=None):
    """``numerical_gradient``, watching kinks: ``(grad, crossed)``, both shaped like ``x``.

    ``sides``: None, or a function returning the side of its kink of every
    ReLU input after the last ``f()`` (``relu_sides``), and ``base`` the
    sides at the unperturbed point; ``crossed[j]`` is True where the +h
    or the -h evaluation changed one. ``progress()`` is called after each entry.
    A step that does not change an entry (x + h == x) is a ConfigError.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    crossed = np.zeros(x.shape, dtype=bool)
    flat = x.reshape(-1)  # a view: writing to it perturbs x
    if not xp_of(x).shares_memory(flat, x):
        raise ValueError("numerical_gradient needs a contiguous array to perturb")
    for j in range(flat.size):
        saved = flat[j].copy()
        step = h * max(1.0, abs(float(saved)))
        flat[j] = saved + step
        up, plus = float(flat[j]), float(f())
        moved = sides is not None and _moved(sides(), base)
        flat[j] = saved - step
        down, minus = float(flat[j]), float(f())
        moved = moved or (sides is not None and _moved(sides(), base))
        flat[j] = saved
        if up == down:
            raise ConfigError(f"h={h:g} does not change x={float(saved):g} in {x.dtype} "
                              "(x + h == x): take a larger h")
        grad.reshape(-1)[j] = (plus - minus) / (up - down)  # the step actually taken
        crossed.reshape(-1)[j] = moved
        if progress is not None:
            progress()
    return grad, crossed


def relu_sides(model):
    """A function returning, after a forward pass of ``model``, which side of 0 the input of
    each of its ReLUs (and leaky ReLUs) is on: a list of boolean arrays. None without any."""
    layers = [layer for stack in _stacks(model) for layer in stack.layers
              if isinstance(layer, (ReLU, LeakyReLU))]
    if not layers:
        return None

    def sides():
        # relu(a) > 0 exactly when a > 0; a leaky ReLU keeps its input
        return [layer.out > 0 if isinstance(layer, ReLU) else layer.x > 0 for layer in layers]
    return sides


def _stacks(model):
    """The encoder and decoder stacks of ``model`` (any attribute holding ``layers``)."""
    return [stack for stack in vars(model).values() if hasattr(stack, "layers")]


def _moved(sides, base):
    return any(bool((a != b).any()) for a, b in zip(sides, base))


@dataclass
class CheckResult:
    """One gradient compared: its name, relative error and the bound it met or not."""

    name: str
    rel_error: float
    tol: float = DEFAULT_TOL
    skipped: int = 0       # entries within h of a ReLU kink, not compared
    size: int = 0          # entries in all

    @property
    def ok(self):
        return self.rel_error <= self.tol

    def __str__(self):
        line = f"{self.name:<24} {self.rel_error:10.2e}  {'ok' if self.ok else 'FAIL'}"
        return line + (f"  ({self.skipped} of {self.size} entries at a ReLU kink, skipped)"
                       if self.skipped else "")


def check_function(forward, backward, inputs, rng, h=DEFAULT_H, tol=DEFAULT_TOL):
    """Check ``backward`` against central differences of ``forward``.

    ``forward(**inputs)`` returns one array ``out``; ``backward(dout, **inputs)``
    returns the gradients of sum(dout * out) with respect to the inputs, as a
    dict with (some of) the same names. ``inputs`` are float64 arrays; ``rng``
    draws ``dout``. Returns one ``CheckResult`` per gradient returned.
    """
    out = forward(**inputs)
    dout = rng.standard_normal(np.shape(out))
    analytic = backward(dout, **inputs)
    floor = noise_floor(np.sum(np.abs(dout * out)))

    def loss():
        return np.sum(dout * forward(**inputs))

    return [CheckResult(name, rel_error(analytic[name], numerical_gradient(loss, inputs[name], h), floor), tol)
            for name in analytic]


def check_layer(layer, x, rng, h=DEFAULT_H, tol=DEFAULT_TOL):
    """Check a layer's input gradient and every parameter gradient.

    ``layer`` has ``forward(x)``, ``backward(dout) -> dx`` and ``params`` /
    ``grads`` dicts (float64). Returns ``CheckResult``s named ``x`` and each
    parameter's key.
    """
    out = layer.forward(x)
    dout = rng.standard_normal(np.shape(out))
    dx = layer.backward(dout)
    analytic = {"x": dx, **{k: g.copy() for k, g in layer.grads.items()}}
    floor = noise_floor(np.sum(np.abs(dout * out)))

    def loss():
        return np.sum(dout * layer.forward(x))

    numeric = {"x": numerical_gradient(loss, x, h)}
    numeric.update({k: numerical_gradient(loss, p, h) for k, p in layer.params.items()})
    return [CheckResult(k, rel_error(analytic[k], numeric[k], floor), tol) for k in analytic]


def check_model(model, x, eps, beta=None, h=DEFAULT_H, tol=DEFAULT_TOL, *, y=None,
                objective=None, progress=None):
    """Check every parameter gradient of a VAE end to end, with fixed noise.

    ``model`` is float64; ``eps`` (B, Z) fixes the reparameterization noise so
    the loss is a deterministic function of the parameters. ``y``: the labels
    of a conditional model. ``objective``: a loss with the model's
    ``forward``/``backward`` (``npvae.iwae.KSampleObjective``, eps (k, B, Z))
    in place of the model's own. Returns one ``CheckResult`` per parameter
    (``encoder.0.W``, ...). Entries whose +-h step moves a ReLU input across
    its kink are left out of the comparison and counted in ``skipped`` (see
    the module docstring). ``progress(done, total)``: called as the entries
    are done (``theta.size`` in all).
    """
    h = check_step_size(h)
    loss_fn = model if objective is None else objective
    labels = {} if y is None else {"y": y}  # models without labels need not take y
    terms = loss_fn.forward(x, eps=eps, beta=beta, **labels)
    sides = relu_sides(model)
    base = None if sides is None else [a.copy() for a in sides()]
    loss_fn.backward()
    analytic = {k: g.copy() for k, g in model.grads.items()}
    floor = noise_floor(abs(terms.recon) + abs(terms.kl))
    total, done = sum(p.size for p in model.params.values()), [0]

    def loss():
        return loss_fn.forward(x, eps=eps, beta=beta, **labels).loss

    def tick():
        done[0] += 1
        if progress is not None and (done[0] % 64 == 0 or done[0] == total):
            progress(done[0], total)

    results = []
    for k, p in model.params.items():
        numeric, crossed = central_differences(loss, p, h, sides, base, tick)
        kept = ~crossed
        error = rel_error(to_numpy(analytic[k])[kept], numeric[kept], floor)
        results.append(CheckResult(k, error, tol, int(crossed.sum()), int(p.size)))
    return results


def format_results(results):
    """A table of results, one line each, worst last line says overall."""
    lines = [f"{'gradient':<24} {'rel error':>10}  result"]
    lines += [str(r) for r in results]
    worst = max(r.rel_error for r in results)
    ok = all(r.ok for r in results)
    skipped = sum(r.skipped for r in results)
    if skipped:
        lines.append(f"{skipped} of {sum(r.size for r in results)} entries skipped: their +-h step "
                     "moved a ReLU input across 0, where a central difference is not the derivative")
    counted = f"{len(results)} gradient{'' if len(results) == 1 else 's'}"  # "1 gradient", "3 gradients"
    lines.append(f"{counted}, worst relative error {worst:.2e}: {'all ok' if ok else 'FAILED'}")
    return "\n".join(lines)


def quiet_until(progress, seconds=PROGRESS_AFTER, clock=time.perf_counter):
    """``progress(done, total)``, passed on only once ``seconds`` have gone since the first call:
    a quick check shows nothing, a slow one its progress (e.g. ``evaluate.ProgressBar``)."""
    start = None

    def call(done, total):
        nonlocal start
        now = clock()
        if start is None:
            start = now
        elif now - start >= seconds:
            progress(done, total)
    return call


def shrink_architecture(config, x_dim):
    """A copy of a model config (``VAE.config``) scaled to ``x_dim`` pixels, for a fast check.

    Hidden sizes scale by x_dim / the original x_dim (at least 8 units);
    latents (each stochastic layer's, for ``npvae.hvae``) are capped at 4; depth, activation, likelihood, sigma, init and
    beta are kept. ``x_dim`` at or above the original keeps every size.

    The config is checked first, by the model's own rules
    (``hvae.check_model_arguments``),
    so that hidden sizes of 0 are refused as training refuses them, not shrunk
    to a valid size.

    A convolutional model (``architecture="conv"``) keeps its pixels, which
    its strides need (28 -> 14 -> 7), and shrinks its channels instead, by
    the same factor (at least 2 each); its latents are capped at 4 too.
    """
    from .hvae import check_model_arguments
    from .vqvae import is_vq

    config = dict(config)
    if is_vq(config):
        return _shrink_vq(config, x_dim)
    check_model_arguments(**{k: config[k] for k in MODEL_ARGUMENTS if k in config})  # first
    full = config["x_dim"]
    x_dim = min(x_dim, full)
    if x_dim < full:
        scale = x_dim / full
        conv = config.get("architecture") == "conv"
        least = 2 if conv else 8

        def shrunk(n):   # a size, or (several stochastic layers) a list of sizes
            return [shrunk(m) for m in n] if isinstance(n, (list, tuple)) else max(least, round(n * scale))

        for key in ("hidden", "decoder_hidden"):
            if config.get(key) is not None:
                config[key] = shrunk(config[key])
        latent = config["latent"]
        config["latent"] = ([min(z, 4) for z in latent] if isinstance(latent, (list, tuple))
                            else min(latent, 4))
        if conv:
            return config
    config["x_dim"] = x_dim
    return config


def _shrink_vq(config, x_dim):
    """``shrink_architecture`` of a VQ-VAE (``VQVAE.config``): its pixels kept, its channels
    scaled as a conv model's (at least 2), F capped at 4 and N at 8."""
    from .vqvae import check_arguments

    for key in ("latent", "sigma", "architecture"):
        if key in config:
            raise ConfigError(f"{key}={config[key]!r} does not apply to a VQ-VAE (its sizes are "
                              "hidden, embedding_dim and n_codes)")
    config = check_arguments(**config)
    if x_dim < config["x_dim"]:
        scale = x_dim / config["x_dim"]
        for key in ("hidden", "decoder_hidden"):
            config[key] = [max(2, round(n * scale)) for n in config[key]]
        config.update(embedding_dim=min(config["embedding_dim"], 4),
                      n_codes=min(config["n_codes"], 8))
    return config


def shrunk_sizes(full, config):
    """What ``shrink_architecture`` changed from ``full`` to ``config``, for the check's report."""
    sizes = ("channels" if full.get("architecture") == "conv" or "n_codes" in full else
             f"x_dim {full['x_dim']} -> {config['x_dim']}, hidden")
    sizes += f" {list(full['hidden'])} -> {list(config['hidden'])}"
    keys = ("embedding_dim", "n_codes") if "n_codes" in full else ("latent",)
    return sizes + "".join(f", {key} {full[key]} -> {config[key]}" for key in keys)


def preset_architecture(name):
    """A preset's model as ``check_architecture`` takes it, full size (``shrink_architecture``
    shrinks it), with the objective and k it trains with: ``(config, objective, k)``.

    A VQ-VAE preset's sizes are renamed from ``TrainConfig``'s to the
    VQ-VAE's; a conditional preset gets its ``n_classes``.
    """
    from .config import N_CLASSES, TrainConfig
    from .presets import get_preset

    preset = get_preset(name)
    config = {"x_dim": 784, **preset["model"]}
    if config.get("architecture") == "vqvae":   # TrainConfig's names to the VQ-VAE's
        kwargs = TrainConfig.from_preset(name).validate().model_kwargs(784)
        config = {k: v for k, v in kwargs.items() if k not in ("backend", "seed")}
    training = preset["training"]
    if training.get("conditional"):
        config["n_classes"] = N_CLASSES
    return config, training.get("objective", "elbo"), training.get("k", 1)


def biases_off_zero(model, rng, scale=0.1):
    """Add N(0, scale^2) draws of ``rng`` to every bias of ``model`` (names ending ".b"), in place.

    Zero biases (He and Glorot init) put a unit whose inputs are all zero
    (ReLUs all off) exactly at its kink, where a central difference is
    meaningless: a check is made at a generic point instead. The draws are
    made on the host and moved to the parameters' backend.
    """
    for name, p in model.params.items():
        if name.endswith(".b"):
            p += xp_of(p).asarray(rng.normal(0.0, scale, p.shape))


def check_architecture(config, *, batch=3, seed=0, h=DEFAULT_H, tol=DEFAULT_TOL, objective="elbo",
                       k=1, progress=None, backend=None):
    """Check every parameter gradient of a float64 VAE built from ``config`` (a ``VAE.config``).

    Returns ``(model, results)``. The biases get small random values first:
    zero biases (He and Glorot init) put a unit whose inputs are all zero
    (ReLUs all off) exactly at its kink, where a central difference is
    meaningless, so the check is made at a generic point. ``x`` is uniform in
    [0, 1) and ``eps`` standard normal, all from ``seed``; a conditional
    model's labels are uniform. ``objective`` and ``k``: the loss checked
    (``npvae.iwae.KSampleObjective``; "elbo" with k = 1 is the model's own).
    ``progress(done, total)``: see ``check_model``. ``backend`` (e.g. "cupy"):
    where the model's arrays live, if not where ``config`` says.

    Refused before anything is allocated: a step ``h`` that moves nothing, a
    model of more than ``MAX_CHECKED_PARAMETERS`` parameters, an unknown objective, and
    k samples of ``batch`` examples beyond the k-sample step's memory limit
    (``npvae.iwae.check_step``).
    """
    from .cvae import model_from_config, is_conditional
    from .hvae import k_sample_objective
    from .iwae import check_step
    from . import vqvae

    h = check_step_size(h)
    vq = vqvae.is_vq(config)
    if vq and (objective, k) != ("elbo", 1):
        raise ConfigError(f"objective={objective!r}, k={k}: a VQ-VAE is checked on its own loss "
                          "(recon + codebook + commitment); it has no ELBO to take k samples of")
    shapes = vqvae.parameter_shapes(config) if vq else parameter_shapes(config)
    n = sum(int(np.prod(s)) for s in shapes.values())
    if n > MAX_CHECKED_PARAMETERS:
        raise ConfigError(f"a gradient check of {n:,} parameters takes {2 * n:,} evaluations of "
                          f"the loss, more than a check of {MAX_CHECKED_PARAMETERS:,} parameters can "
                          "finish: lower the hidden sizes or --x-dim")
    where = {} if backend is None else {"backend": backend}
    model = model_from_config(**{**config, "dtype": "float64", **where}, seed=seed)  # <= 8 MB
    xp = model.xp   # the draws below are made on the host and moved to the model's backend
    if vq:   # the codes held at the nearest; vqvae.check_gradients says what each is checked on
        rng = np.random.default_rng(seed)
        biases_off_zero(model, rng)
        x = xp.asarray(rng.random((batch, model.x_dim)))
        # Every code restarted at an encoder output: z_q of z_e's size rather than the initial
        # +-0.05, which leaves the decoder's first units all on one side of their kinks.
        q = model.quantizer
        q.restart_dead_codes(np.zeros(q.n_codes), model.encoder.forward(x), rng)
        return model, vqvae.check_gradients(model, x, h, tol)
    own = (objective, k) == ("elbo", 1)
    loss = None if own else k_sample_objective(model, k, objective)
    check_step(model, k, batch)
    rng = np.random.default_rng(seed)
    biases_off_zero(model, rng)
    x = xp.asarray(rng.random((batch, model.x_dim)))
    width = getattr(model, "noise_dim", model.latent)   # npvae.hvae: every layer's noise
    eps = xp.asarray(rng.standard_normal((batch, width) if own else (k, batch, width)))
    y = rng.integers(0, model.n_classes, batch) if is_conditional(model) else None
    return model, check_model(model, x, eps, h=h, tol=tol, y=y, objective=loss,
                              progress=progress)
