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

Derivation: ``tutorials/derivations.md#finite-difference-checks``.
"""

from dataclasses import dataclass

import numpy as np

from .backend import to_numpy

DEFAULT_H = 1e-5
DEFAULT_TOL = 1e-6


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
    grad = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)  # a view: writing to it perturbs x
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_gradient needs a contiguous array to perturb")
    for j in range(flat.size):
        saved = flat[j].copy()
        step = h * max(1.0, abs(float(saved)))
        flat[j] = saved + step
        up, plus = float(flat[j]), float(f())
        flat[j] = saved - step
        down, minus = float(flat[j]), float(f())
        flat[j] = saved
        grad.reshape(-1)[j] = (plus - minus) / (up - down)  # the step actually taken
    return grad


@dataclass
class CheckResult:
    """One gradient compared: its name, relative error and the bound it met or not."""

    name: str
    rel_error: float
    tol: float = DEFAULT_TOL

    @property
    def ok(self):
        return self.rel_error <= self.tol

    def __str__(self):
        return f"{self.name:<24} {self.rel_error:10.2e}  {'ok' if self.ok else 'FAIL'}"


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
                objective=None):
    """Check every parameter gradient of a VAE end to end, with fixed noise.

    ``model`` is float64; ``eps`` (B, Z) fixes the reparameterization noise so
    the loss is a deterministic function of the parameters. ``y``: the labels
    of a conditional model. ``objective``: a loss with the model's
    ``forward``/``backward`` (``npvae.iwae.KSampleObjective``, eps (k, B, Z))
    in place of the model's own. Returns one ``CheckResult`` per parameter
    (``encoder.0.W``, ...).
    """
    loss_fn = model if objective is None else objective
    labels = {} if y is None else {"y": y}  # models without labels need not take y
    terms = loss_fn.forward(x, eps=eps, beta=beta, **labels)
    loss_fn.backward()
    analytic = {k: g.copy() for k, g in model.grads.items()}
    floor = noise_floor(abs(terms.recon) + abs(terms.kl))

    def loss():
        return loss_fn.forward(x, eps=eps, beta=beta, **labels).loss

    return [CheckResult(k, rel_error(analytic[k], numerical_gradient(loss, p, h), floor), tol)
            for k, p in model.params.items()]


def format_results(results):
    """A table of results, one line each, worst last line says overall."""
    lines = [f"{'gradient':<24} {'rel error':>10}  result"]
    lines += [str(r) for r in results]
    worst = max(r.rel_error for r in results)
    ok = all(r.ok for r in results)
    counted = f"{len(results)} gradient{'' if len(results) == 1 else 's'}"  # "1 gradient", "3 gradients"
    lines.append(f"{counted}, worst relative error {worst:.2e}: {'all ok' if ok else 'FAILED'}")
    return "\n".join(lines)


def shrink_architecture(config, x_dim):
    """A copy of a model config (``VAE.config``) scaled to ``x_dim`` pixels, for a fast check.

    Hidden sizes scale by x_dim / the original x_dim (at least 8 units);
    latents are capped at 4; depth, activation, likelihood, sigma, init and
    beta are kept. ``x_dim`` at or above the original keeps every size.

    A convolutional model (``architecture="conv"``) keeps its pixels, which
    its strides need (28 -> 14 -> 7), and shrinks its channels instead, by
    the same factor (at least 2 each); its latents are capped at 4 too.
    """
    config = dict(config)
    full = config["x_dim"]
    x_dim = min(x_dim, full)
    if x_dim < full:
        scale = x_dim / full
        conv = config.get("architecture") == "conv"
        for key in ("hidden", "decoder_hidden"):
            if config.get(key) is not None:
                config[key] = [max(2 if conv else 8, round(n * scale)) for n in config[key]]
        config["latent"] = min(config["latent"], 4)
        if conv:
            return config
    config["x_dim"] = x_dim
    return config


def check_architecture(config, *, batch=3, seed=0, h=DEFAULT_H, tol=DEFAULT_TOL, objective="elbo",
                       k=1):
    """Check every parameter gradient of a float64 VAE built from ``config`` (a ``VAE.config``).

    Returns ``(model, results)``. The biases get small random values first:
    zero biases (He and Glorot init) put a unit whose inputs are all zero
    (ReLUs all off) exactly at its kink, where a central difference is
    meaningless, so the check is made at a generic point. ``x`` is uniform in
    [0, 1) and ``eps`` standard normal, all from ``seed``; a conditional
    model's labels are uniform. ``objective`` and ``k``: the loss checked
    (``npvae.iwae.KSampleObjective``; "elbo" with k = 1 is the model's own).
    """
    from .cvae import build_model, is_conditional
    from .iwae import KSampleObjective

    model = build_model(**{**config, "dtype": "float64"}, seed=seed)
    rng = np.random.default_rng(seed)
    for name, p in model.params.items():
        if name.endswith(".b"):
            p += rng.normal(0.0, 0.1, p.shape)
    x = rng.random((batch, model.x_dim))
    own = (objective, k) == ("elbo", 1)
    eps = rng.standard_normal((batch, model.latent) if own else (k, batch, model.latent))
    y = rng.integers(0, model.n_classes, batch) if is_conditional(model) else None
    loss = None if own else KSampleObjective(model, k, objective)
    return model, check_model(model, x, eps, h=h, tol=tol, y=y, objective=loss)
