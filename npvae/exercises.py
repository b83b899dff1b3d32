"""Exercises: write a piece of the VAE by hand, and be told whether, and how, it is wrong.

The learner's files are ``tutorials/exercises/NN_name.py``, one per hand-derived
piece, in the order of the tutorials; each function body starts as
``raise NotImplementedError``. The grader loads a file (reading it only: no
bytecode is written), calls its functions on small float64 inputs, and
compares every tensor they return with npvae's own implementation, and every
gradient with central differences (``npvae.gradcheck``). It prints a line per
tensor: ``ok`` with the relative error, ``not implemented yet``, or what is
wrong. A wrong tensor is compared with the usual wrong answers (sign, a
factor of 2 or 1/2, a transpose, a missing 1/B, a sum over the wrong axis,
the variance for the standard deviation, a missing path, Adam without bias
correction, importance weights over the wrong axis or uniform, label
columns kept) and the mistake is named; failing that, the line says by how
much it is wrong and at which entry.

    npvae exercises list
    npvae exercises check [NAME ...] [--dir DIR | --file PATH]
    npvae exercises check NAME --show-solution      # npvae's own code, only when asked

(``python -m npvae.exercises ...`` is the same.) Exit code: 0 when everything
checked is right, 1 when anything is wrong or not implemented, 2 on a usage
error.

Adding an exercise is one entry in ``EXERCISES`` and one stub file. A layer
with npvae's interface (``params`` / ``grads`` dicts, ``forward(x)``,
``backward(dout) -> dx``), such as a convolution, needs only
``layer_exercise(...)``: the learner writes ``NAME_forward(x, <params>)`` and
``NAME_backward(dout, x, <params>) -> (dx, d<param>, ...)`` (data the layer
holds, such as a conditional layer's one-hot labels, can be given too).
"""

import argparse
import ast
import inspect
import math
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .activations import ACTIVATIONS, sigmoid, softplus
from .evaluate import logmeanexp
from .gradcheck import DEFAULT_TOL, noise_floor, numerical_gradient, rel_error
from .conv import Conv2D, ConvTranspose2D
from .cvae import CVAE, LabelledMLP
from .iwae import KSampleObjective, importance_weights
from .layers import Dense, Sequential
from .losses import (bernoulli_nll, bernoulli_nll_backward, gaussian_kl, gaussian_kl_backward,
                     gaussian_kl_per_dim, gaussian_nll, gaussian_nll_backward, log_normal,
                     log_standard_normal)
from .optim import adam_reference_step
from .reparam import reparameterize, reparameterize_backward
from .vae import VAE

OK, TODO, WRONG, PARTLY = "ok", "not implemented yet", "WRONG", "partly done"
VALUE_TOL = 1e-8  # a value against npvae's, both in float64
SAME = 1e-6       # "equals this wrong answer" when within this relative error
B = 4             # the batch size of every exercise (not 2, so 1/B is no factor of 1/2)
EXIT_OK, EXIT_WRONG, EXIT_USAGE = 0, 1, 2


# ------------------------------------------------------------------ judging one tensor


def _close(a, b):
    return a.shape == b.shape and rel_error(a, b, floor=1e-12) <= SAME


def diagnose(got, ref, candidates=None, batch=B):
    """What is wrong with ``got`` (an array), given the right answer ``ref``.

    ``candidates`` maps a message to a usual wrong answer computed from the
    reference; the first that ``got`` equals names the mistake. Then the
    general ones: a shape, a constant factor (-1, 2, 1/2, B, 1/B), a
    transpose, an added constant; else the relative error and the worst entry.
    """
    finite = bool(np.isfinite(got).all())
    for message, wrong in (candidates or {}).items():
        if finite and _close(got, np.asarray(wrong, dtype=np.float64)):
            return message
    if got.shape != ref.shape:
        if got.ndim == 2 and got.shape == ref.shape[::-1]:
            if _close(got.T, ref):
                return f"is the transpose of the right answer: shape {got.shape}, expected {ref.shape}"
            return f"has shape {got.shape}, expected {ref.shape}: transposed, and its values are wrong too"
        return f"has shape {got.shape}, expected {ref.shape}"
    if not finite:
        where = np.argwhere(~np.isfinite(got))
        return f"contains NaN or inf (first at {_index(where[0]) if got.ndim else 'the value'})"
    if _close(got, ref):
        return (f"is right only to a relative error of {rel_error(got, ref, floor=1e-12):.1e}: keep "
                "float64 throughout (the checks run in float64; float32 keeps about 7 digits)")
    if ref.any() and not got.any():
        return "is all zeros"
    if ref.any():
        c = float(np.vdot(got, ref) / np.vdot(ref, ref))
        if _close(got, c * ref):
            for k, message in [(-1, "has its sign flipped: it is -1 times the right answer"),
                               (2, "is twice the right answer: a factor of 2 too many"),
                               (0.5, "is half the right answer: a factor of 1/2 too many (or a 2 missing)"),
                               (batch, f"is B = {batch} times the right answer: the 1/B of the batch "
                                       "mean is missing"),
                               (1 / batch, f"is 1/B = 1/{batch} of the right answer: divided by the "
                                           "batch size once too often")]:
                if abs(c - k) <= SAME * abs(k):
                    return message
            return f"is {c:.4g} times the right answer: a constant factor is wrong"
    if got.ndim == 2 and got.shape[0] == got.shape[1] and _close(got, ref.T):
        return "is the transpose of the right answer"
    shift = float(np.mean(got - ref))
    if got.size > 1 and _close(got, ref + shift):
        return f"is off by a constant {shift:+.6g} in every entry"
    worst = np.unravel_index(np.argmax(np.abs(got - ref)), ref.shape)
    return (f"is wrong: relative error {rel_error(got, ref, floor=1e-12):.2e} against npvae; worst "
            f"entry {_index(worst) if ref.ndim else 'the value'}: {got[worst]:.6g} where "
            f"{ref[worst]:.6g} is right")


def _index(idx):
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def judge(got, ref, numeric=None, floor=1e-8, candidates=None, batch=B):
    """``(status, detail)`` for the learner's tensor ``got``.

    Right when within ``DEFAULT_TOL`` of the finite differences ``numeric``
    (a gradient), or within ``VALUE_TOL`` of npvae's ``ref`` (a value).
    """
    ref = np.asarray(ref, dtype=np.float64)
    if got is None:
        return WRONG, "is None: return the array"
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return WRONG, f"is not an array of numbers but a {type(got).__name__}"
    if got.shape == ref.shape and np.isfinite(got).all():
        if numeric is not None:
            err = rel_error(got, numeric, floor)
            if err <= DEFAULT_TOL:
                return OK, f"rel error {err:.1e} against finite differences"
        else:
            err = rel_error(got, ref, floor)
            if err <= VALUE_TOL:
                return OK, f"rel error {err:.1e} against npvae"
    return WRONG, diagnose(got, ref, candidates, batch)


@dataclass
class Line:
    """One tensor's result: its name, ``ok`` / ``not implemented yet`` / ``WRONG``, and why."""

    tensor: str
    status: str
    detail: str = ""

    def __str__(self):
        return f"  {self.tensor:<28} {self.status:<20} {self.detail}".rstrip()


class Grade:
    """The lines of one exercise: calls the learner's functions and judges what they return."""

    def __init__(self, module):
        self.module = module
        self.lines = []

    def add(self, names, status, detail=""):
        self.lines += [Line(n, status, detail) for n in names]

    def call(self, fname, names, *args, **kwargs):
        """``fname(*args, **kwargs)`` as a tuple of ``len(names)`` results, or None.

        None (with a line for each of ``names``) when the function is missing,
        not implemented, raises, or returns the wrong number of arrays.
        """
        fn = getattr(self.module, fname, None)
        if not callable(fn):
            self.add(names, WRONG, f"the file has no function {fname}")
            return None
        try:
            result = fn(*args, **kwargs)
        except NotImplementedError:
            self.add(names, TODO)
            return None
        except Exception as err:  # the learner's bug, reported as a line
            self.add(names, WRONG, f"{fname} raised {type(err).__name__}: {' '.join(str(err).split())}")
            return None
        if len(names) == 1:
            return (result,)
        if not isinstance(result, (tuple, list)) or len(result) != len(names):
            got = (f"{len(result)} values" if isinstance(result, (tuple, list))
                   else "None" if result is None else f"a {type(result).__name__}")
            self.add(names, WRONG, f"{fname} must return ({', '.join(names)}); it returned {got}")
            return None
        return tuple(result)

    def call_by_name(self, fname, names, available):
        """Call ``fname`` with the arguments it names, taken from ``available``."""
        fn = getattr(self.module, fname, None)
        try:
            wanted = inspect.signature(fn).parameters if callable(fn) else {}
        except (TypeError, ValueError):
            wanted = {}
        return self.call(fname, names, **{k: v.copy() for k, v in available.items() if k in wanted})

    def check(self, name, got, ref, **kwargs):
        self.lines.append(Line(name, *judge(got, ref, **kwargs)))
        return self.lines[-1].status == OK


def fd(loss, *arrays):
    """Central differences of ``loss()`` with respect to each of ``arrays`` (perturbed in place)."""
    return [numerical_gradient(loss, a) for a in arrays]


def _inputs(rng, shape, away_from_zero=0.0):
    """Standard normal float64 values, at least ``away_from_zero`` from 0 (off ReLU's kink)."""
    a = rng.standard_normal(shape)
    return np.sign(a) * (np.abs(a) + away_from_zero)


# ------------------------------------------------------------------ exercises


@dataclass
class Exercise:
    """One exercise: its learner file, the functions to write, how to grade them, the solution."""

    name: str
    file: str                 # in tutorials/exercises/
    functions: tuple          # what the learner writes
    anchor: str               # its section of tutorials/derivations.md
    grade: object             # grade(Grade) fills the lines
    solution: tuple = field(default=(), repr=False)   # npvae objects whose source is the answer
    summary: str = ""


def layer_exercise(name, file, make_layer, x_shape, anchor, summary, candidates=None, solution=(),
                   given=()):
    """The exercise for a layer with npvae's interface: forward, and every gradient of backward.

    ``make_layer(rng)`` builds a float64 npvae layer; the learner writes
    ``NAME_forward(x, <inputs>) -> out`` and ``NAME_backward(dout, x, <inputs>)
    -> (dx, d<param>, ...)``, each function taking the inputs it needs by name:
    the parameters, named by their keys (a one-layer ``Sequential``'s "0.W"
    as W), and the layer's attributes named in ``given`` (data the layer
    holds, such as a ``LabelledMLP``'s onehot). ``candidates(x, inputs, dout)``
    may return ``{tensor: {message: usual wrong answer}}``.
    """
    functions = (f"{name}_forward", f"{name}_backward")
    return Exercise(name, file, functions, anchor, layer_grader(name, make_layer, x_shape, candidates, given),
                    solution, summary)


def layer_grader(name, make_layer, x_shape, candidates=None, given=()):
    """``layer_exercise``'s grading of ``NAME_forward`` and ``NAME_backward``, as a function of a Grade."""
    def grade(g):
        rng = np.random.default_rng(0)
        layer = make_layer(rng)
        x = _inputs(rng, x_shape)
        params = {k.rpartition(".")[2]: p.copy() for k, p in layer.params.items()}
        inputs = {**{a: getattr(layer, a).copy() for a in given}, **params}
        out = layer.forward(x)
        dout = rng.standard_normal(out.shape)
        dx = layer.backward(dout)
        ref = {"dx": dx, **{f"d{k}": grad.copy() for k, grad in zip(params, layer.grads.values())}}
        numeric = dict(zip(ref, fd(lambda: np.sum(dout * layer.forward(x)), x, *layer.params.values())))
        floor = noise_floor(np.sum(np.abs(dout * out)))
        wrong = candidates(x, inputs, dout) if candidates else {}

        got = g.call_by_name(f"{name}_forward", ["out"], {"x": x, **inputs})
        if got:
            g.check("out", got[0], out, candidates=wrong.get("out"))
        got = g.call_by_name(f"{name}_backward", list(ref), {"dout": dout, "x": x, **inputs})
        for tensor, value in zip(ref, got or ()):
            g.check(tensor, value, ref[tensor], numeric=numeric[tensor], floor=floor,
                    candidates=wrong.get(tensor))

    return grade


def _dense_candidates(x, params, dout):
    return {"out": {"the bias b is missing: out = x W + b": x @ params["W"]},
            "db": {"is summed over axis 1 (the outputs) instead of axis 0 (the batch): db sums dout "
                   "over the B examples": dout.sum(axis=1),
                   "is not summed over the batch: db has one entry per output, dout summed over the "
                   "B examples": dout}}


def _flipped_kernel_dx(make):
    """Usual wrong dx of a convolution layer: its backward with the kernel flipped."""
    def candidates(x, params, dout):
        layer = make(np.random.default_rng(0))
        layer.params["W"][...] = params["W"][:, :, ::-1, ::-1]
        layer.forward(x)
        return {"dx": {"uses the kernel flipped (a true convolution's backward): this layer "
                       "correlates, so dx scatters dout through W as it is": layer.backward(dout)}}
    return candidates


def _conv2d(rng):
    return Conv2D(2, 3, 3, stride=2, padding=1, rng=rng, init="pytorch", dtype=np.float64)


def _conv_transpose2d(rng):
    return ConvTranspose2D(3, 2, 3, stride=2, padding=1, output_padding=1, rng=rng,
                           init="pytorch", dtype=np.float64)


def activation_exercise(name, takes, extra):
    """``NAME_backward(dout, <takes>) -> dx`` for npvae's activation ``name``.

    ``takes`` is what npvae's layer keeps for its backward (``"x"`` or its
    output ``"out"``); ``extra(x, out, dout)`` gives usual wrong answers.
    """
    cls = ACTIVATIONS[name]

    def grade(g):
        rng = np.random.default_rng(1)
        x = _inputs(rng, (B, 5), away_from_zero=0.1)
        layer = cls()
        out = layer.forward(x)
        dout = rng.standard_normal(x.shape)
        dx = layer.backward(dout)
        (numeric,) = fd(lambda: np.sum(dout * cls().forward(x)), x)
        wrong = {"is the local derivative alone: multiply it by dout (the chain rule)": dx / dout,
                 **extra(x, out, dout)}
        got = g.call_by_name(f"{name}_backward", ["dx"], {"dout": dout, takes: x if takes == "x" else out})
        if got:
            g.check("dx", got[0], dx, numeric=numeric, floor=noise_floor(np.sum(np.abs(dout * out))),
                    candidates=wrong)

    return Exercise(name, f"02_{name}.py", (f"{name}_backward",), _anchor(name), grade, (cls,),
                    f"the backward of {name}")


def _anchor(name):
    return {"leaky_relu": "leaky-relu"}.get(name, name)


def grade_bernoulli_nll(g):
    rng = np.random.default_rng(2)
    D = 6
    logits, x = 3 * rng.standard_normal((B, D)), rng.random((B, D))
    nll = bernoulli_nll(logits, x)
    per_pixel = bernoulli_nll(logits[..., None], x[..., None])
    wrong = {"is summed over axis 0 (the batch) instead of over the pixels (the last axis): one "
             "value per example": per_pixel.sum(axis=0),
             "is not summed over the pixels: one value per example, summed over its D pixels": per_pixel,
             f"is averaged over the pixels instead of summed: D = {D} times too small": nll / D}
    got = g.call("bernoulli_nll", ["nll"], logits.copy(), x.copy())
    if got and g.check("nll", got[0], nll, candidates=wrong):
        # Stability: logits of +/-1e4, and a confident right answer (its value is all in log1p).
        for tensor, l_, x_, hint in [
                ("nll (logits +/-1e4)", [[1e4, -1e4, 1e4, -1e4]], [[1.0, 0.0, 0.0, 1.0]], ""),
                ("nll (l = 40, x = 1)", [[40.0]], [[1.0]],
                 "loses every digit of a confident right answer: softplus(l) - x l cancels; keep "
                 "log1p(exp(-|l|)) apart from max(l, 0) - x l")]:
            l_, x_ = np.array(l_), np.array(x_)
            got = g.call("bernoulli_nll", [tensor], l_.copy(), x_.copy())
            if got:
                ref = bernoulli_nll(l_, x_)
                status, detail = judge(got[0], ref, floor=1e-300)  # relative to the tiny value itself
                if status != OK and (not hint or not np.isfinite(np.asarray(got[0], dtype=float)).all()):
                    hint = ("not stable: exp overflows or log(0) appears; use "
                            "max(l, 0) - x l + log1p(exp(-|l|)), whose exponent is never positive")
                g.add([tensor], status, detail if status == OK else f"{hint} (got {got[0]}, expected {ref})")

    dout = rng.standard_normal(B)
    dlogits = bernoulli_nll_backward(dout, logits, x)
    (numeric,) = fd(lambda: np.sum(dout * bernoulli_nll(logits, x)), logits)
    wrong = {"ignores dout: multiply each example's row by its dout": sigmoid(logits) - x,
             "uses the logits where sigmoid(logits) belongs: the gradient is sigmoid(l) - x":
                 (logits - x) * dout[:, None]}
    got = g.call("bernoulli_nll_backward", ["dlogits"], dout.copy(), logits.copy(), x.copy())
    if got:
        g.check("dlogits", got[0], dlogits, numeric=numeric, floor=noise_floor(np.sum(np.abs(dout * nll))),
                candidates=wrong)


def grade_gaussian_nll(g):
    rng = np.random.default_rng(3)
    D, sigma = 6, 0.7
    mean, x, dout = rng.standard_normal((B, D)), rng.random((B, D)), rng.standard_normal(B)
    dmean = gaussian_nll_backward(dout, mean, x, sigma)
    (numeric,) = fd(lambda: np.sum(dout * gaussian_nll(mean, x, sigma)), mean)
    wrong = {"is divided by sigma where sigma^2 belongs": (mean - x) * dout[:, None] / sigma,
             "lacks the 1/sigma^2": (mean - x) * dout[:, None],
             "ignores dout: multiply each example's row by its dout": (mean - x) / sigma**2}
    got = g.call("gaussian_nll_backward", ["dmean"], dout.copy(), mean.copy(), x.copy(), sigma)
    if got:
        floor = noise_floor(np.sum(np.abs(dout * gaussian_nll(mean, x, sigma))))
        g.check("dmean", got[0], dmean, numeric=numeric, floor=floor, candidates=wrong)


def grade_gaussian_kl(g):
    rng = np.random.default_rng(4)
    Z = 3
    mu, logvar, dout = rng.standard_normal((B, Z)), rng.standard_normal((B, Z)), rng.standard_normal(B)
    kl = gaussian_kl(mu, logvar)
    per_dim = gaussian_kl_per_dim(mu, logvar)
    var = np.exp(logvar)
    wrong = {"is summed over axis 0 (the batch) instead of over the latents (the last axis): one "
             "value per example": per_dim.sum(axis=0),
             "is not summed over the latents: one value per example, summed over its Z dimensions": per_dim,
             "adds logvar where it subtracts it: 1/2 (exp(logvar) + mu^2 - 1 - logvar)":
                 kl + logvar.sum(axis=-1),
             "uses the standard deviation exp(logvar / 2) where the variance exp(logvar) belongs":
                 kl + 0.5 * (np.exp(logvar / 2) - var).sum(axis=-1)}
    got = g.call("gaussian_kl", ["kl"], mu.copy(), logvar.copy())
    if got:
        g.check("kl", got[0], kl, candidates=wrong)

    dmu, dlogvar = gaussian_kl_backward(dout, mu, logvar)
    numeric = fd(lambda: np.sum(dout * gaussian_kl(mu, logvar)), mu, logvar)
    floor = noise_floor(np.sum(np.abs(dout * kl)))
    wrong = {"dmu": {"ignores dout: multiply each example's row by its dout": mu},
             "dlogvar": {"lacks the -1 (from the -logvar term): d kl / d logvar = (exp(logvar) - 1) / 2":
                             0.5 * var * dout[:, None],
                         "ignores dout: multiply each example's row by its dout": 0.5 * (var - 1)}}
    got = g.call("gaussian_kl_backward", ["dmu", "dlogvar"], dout.copy(), mu.copy(), logvar.copy())
    for tensor, value, ref, num in zip(["dmu", "dlogvar"], got or (), [dmu, dlogvar], numeric):
        g.check(tensor, value, ref, numeric=num, floor=floor, candidates=wrong[tensor])


def sample_statistics(z, mu, logvar):
    """What is wrong with the sample ``z`` (N, Z) of N(mu, exp(logvar)), or None.

    The forward maths, which no gradient check sees: the sample mean against
    mu and the sample variance against exp(logvar), within six standard errors.
    """
    n, var = z.shape[0], np.exp(logvar)
    mean_z, var_z = z.mean(axis=0), z.var(axis=0)
    if not np.all(np.abs(mean_z - mu) <= 6 * np.sqrt(var_z / n)):
        return f"the sample mean of z is {np.round(mean_z, 3)}, not mu = {mu}"

    def near(v):
        return np.all(np.abs(var_z - v) <= 6 * v * np.sqrt(2 / n))

    if near(var):
        return None
    if near(var**2):
        return ("the sample variance of z is exp(2 logvar), the square of the variance: eps was scaled "
                "by the variance exp(logvar) where the standard deviation exp(logvar / 2) belongs")
    if near(logvar**2):
        return "the sample variance of z is logvar^2: eps was scaled by logvar, not by exp(logvar / 2)"
    return (f"the sample variance of z is {np.round(var_z, 3)}, not exp(logvar) = {np.round(var, 3)}: "
            "the standard deviation is exp(logvar / 2)")


def grade_reparameterize(g):
    rng = np.random.default_rng(5)
    Z = 4
    mu, logvar, eps = rng.standard_normal((B, Z)), rng.standard_normal((B, Z)), rng.standard_normal((B, Z))
    z, _ = reparameterize(mu, logvar, eps)
    var_bug = mu + np.exp(logvar) * eps
    got = g.call("reparameterize", ["z"], mu.copy(), logvar.copy(), eps.copy())
    if got:
        g.check("z", got[0], z, candidates={
            "scales eps by the variance exp(logvar) where the standard deviation exp(logvar / 2) "
            "belongs": var_bug})
        # The sampler's statistics, with logvar away from 0 (where variance and std agree).
        mu_s, logvar_s = np.array([0.5, -1.0, 2.0, 0.0]), np.array([-1.0, 0.7, 1.5, -2.0])
        n = 200_000
        eps_s = rng.standard_normal((n, Z))
        got = g.call("reparameterize", ["z (mean and variance)"], np.tile(mu_s, (n, 1)),
                     np.tile(logvar_s, (n, 1)), eps_s)
        if got:
            try:
                problem = sample_statistics(np.asarray(got[0], dtype=np.float64).reshape(n, Z), mu_s, logvar_s)
            except ValueError as err:
                problem = f"returned an array that is not (N, Z): {err}"
            g.add(["z (mean and variance)"], WRONG if problem else OK,
                  problem or f"mean mu and variance exp(logvar) over {n} samples")

    dz = rng.standard_normal((B, Z))
    dmu, dlogvar = reparameterize_backward(dz, logvar, eps)
    numeric = fd(lambda: np.sum(dz * reparameterize(mu, logvar, eps)[0]), mu, logvar)
    floor = noise_floor(np.sum(np.abs(dz * z)))
    std = np.exp(logvar / 2)
    wrong = {"dmu": {"is scaled by exp(logvar / 2): z depends on mu with slope 1, so dmu = dz": dz * std},
             "dlogvar": {"is the gradient of the variance-scaled sample mu + exp(logvar) eps: the "
                         "standard deviation exp(logvar / 2) gives dz eps exp(logvar / 2) / 2": dz * eps * std**2,
                         "lacks eps: z = mu + exp(logvar / 2) eps": dz * 0.5 * std}}
    got = g.call("reparameterize_backward", ["dmu", "dlogvar"], dz.copy(), logvar.copy(), eps.copy())
    for tensor, value, ref, num in zip(["dmu", "dlogvar"], got or (), [dmu, dlogvar], numeric):
        g.check(tensor, value, ref, numeric=num, floor=floor, candidates=wrong[tensor])


def _handed(model, backward, decoder_dz=True):
    """What npvae's ``backward()`` hands the decoder's and the encoder's backward: (dout, dmu, dlogvar).

    dout as the decoder receives it; dmu and dlogvar the two halves of the
    encoder's dh (which goes no further). ``decoder_dz=False`` replaces the
    decoder's dz with zeros, leaving only the paths that bypass the decoder.
    """
    seen, decoder_backward = {}, model.decoder.backward

    def decoder(dout, need_dx=True):
        seen["dout"] = dout.copy()
        dz = decoder_backward(dout, need_dx)
        return dz if decoder_dz else np.zeros_like(dz)

    model.decoder.backward = decoder
    model.encoder.backward = lambda dh, need_dx=True: seen.update(dh=dh.copy())
    try:
        backward()
    finally:
        del model.decoder.backward, model.encoder.backward
    return (seen["dout"], *np.split(seen["dh"], 2, axis=1))


def _fd_holding(obj, method, held, loss):
    """Central differences of ``loss()`` w.r.t. the arrays ``held``, while ``obj.method`` returns them.

    ``held`` is one array or a tuple of arrays, returned as they are (and
    perturbed in place), whatever ``obj.method`` is called with.
    """
    setattr(obj, method, lambda *args, **kwargs: held)
    try:
        return fd(loss, *(held if isinstance(held, tuple) else (held,)))
    finally:
        delattr(obj, method)


def _grade_parameters(g, model, got_grads, ref_grads, loss, floor, blame):
    """A line for each of ``model.grads``, against central differences of ``loss()``.

    ``blame`` maps a network ("encoder", "decoder") to the reason its wrong
    gradients are given, when the learner's tensor it backpropagates is wrong.
    """
    for k, p in model.params.items():
        (num,) = fd(loss, p)
        status, detail = judge(got_grads[k], ref_grads[k], numeric=num, floor=floor)
        if status != OK and not got_grads[k].any():
            detail = "is all zeros: fill model.grads (the decoder's and the encoder's backward do)"
        elif status != OK and blame.get(k.partition(".")[0]):
            detail = blame[k.partition(".")[0]]
        g.add([k], status, detail)


ENCODER_BLAMED = "is wrong because dmu and dlogvar are (the encoder backpropagates them)"


def grade_vae(g):
    rng = np.random.default_rng(6)
    model = VAE(x_dim=6, hidden=(5,), latent=3, activation="tanh", beta=0.7, dtype="float64", seed=6)
    for p in model.params.values():
        p += rng.normal(0.0, 0.1, p.shape)
    x, eps = rng.random((B, 6)), rng.standard_normal((B, 3))

    model.forward(x, eps=eps)
    model.dtheta[...] = 0
    got = g.call("vae_backward", ["dmu", "dlogvar"], model)
    got_grads = {k: v.copy() for k, v in model.grads.items()}

    # The reference, and its two paths into mu and logvar: the reconstruction's
    # through z (beta = 0) and the KL's directly (the rest).
    def encoder_gradient(beta):
        return _handed(model, lambda: (model.forward(x, eps=eps, beta=beta), model.backward()))[1:]

    beta = model.beta
    both, recon = encoder_gradient(beta), encoder_gradient(0.0)
    kl = [t - r for t, r in zip(both, recon)]
    terms = model.forward(x, eps=eps)
    model.backward()
    ref_grads = {k: v.copy() for k, v in model.grads.items()}
    floor = noise_floor(abs(terms.recon) + abs(terms.kl))

    def loss():
        return model.forward(x, eps=eps).loss

    numeric = _fd_holding(model, "encode", tuple(t.copy() for t in model.encode(x)), loss)
    paths_ok = True
    for i, tensor in enumerate(["dmu", "dlogvar"]):
        wrong = {"has only the KL path: the reconstruction's path through z = mu + exp(logvar / 2) eps "
                 "is missing": kl[i],
                 "has only the reconstruction path (through z): the KL's own gradient is missing": recon[i],
                 "has the KL path without beta (the KL's weight)": recon[i] + kl[i] / beta,
                 f"lacks the 1/B of the batch mean on the KL path (B = {B})": recon[i] + B * kl[i],
                 f"lacks the 1/B of the batch mean on the reconstruction path (B = {B})": B * recon[i] + kl[i],
                 "subtracts the KL path where it adds it": recon[i] - kl[i]}
        if got:
            paths_ok &= g.check(tensor, got[i], both[i], numeric=numeric[i], floor=floor, candidates=wrong)
    if got is None and g.lines[-1].status == TODO:
        return
    _grade_parameters(g, model, got_grads, ref_grads, loss, floor,
                      {"encoder": None if paths_ok and got else ENCODER_BLAMED})


def grade_adam(g):
    rng = np.random.default_rng(7)
    lr, b1, b2, eps, t = 0.01, 0.9, 0.999, 1e-8, 3
    theta, grad = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    m, v = 0.1 * rng.standard_normal((3, 4)), 0.01 * rng.standard_normal((3, 4))**2

    theta_new, m_new, v_new = adam_reference_step(theta, grad, m, v, t, lr, b1, b2, eps)
    update = theta_new - theta

    def step(m_hat, v_hat):
        return -lr * m_hat / (np.sqrt(v_hat) + eps)

    c1, c2 = 1 - b1**t, 1 - b2**t
    wrong = {
        "theta (the update)": {
            "is Adam without bias correction: divide m by 1 - beta1^t and v by 1 - beta2^t":
                step(m_new, v_new),
            "corrects m but not v: divide v by 1 - beta2^t": step(m_new / c1, v_new),
            "corrects v but not m: divide m by 1 - beta1^t": step(m_new, v_new / c2),
            "uses t - 1 in the bias correction: t counts steps from 1, this one included":
                step(m_new / (1 - b1**(t - 1)), v_new / (1 - b2**(t - 1))),
            "uses t + 1 in the bias correction: t is the number of this step":
                step(m_new / (1 - b1**(t + 1)), v_new / (1 - b2**(t + 1))),
            "divides by v_hat where sqrt(v_hat) belongs": -lr * (m_new / c1) / (v_new / c2 + eps)},
        "m": {"is the decaying sum beta1 m + g: the factor (1 - beta1) on g is missing": b1 * m + grad,
              "swaps beta1 and 1 - beta1": (1 - b1) * m + b1 * grad,
              "is the bias-corrected m_hat: return m itself (the correction only enters the update)":
                  m_new / c1},
        "v": {"uses g where g^2 belongs": b2 * v + (1 - b2) * grad,
              "is the decaying sum beta2 v + g^2: the factor (1 - beta2) on g^2 is missing": b2 * v + grad**2,
              "swaps beta2 and 1 - beta2": (1 - b2) * v + b2 * grad**2,
              "is the bias-corrected v_hat: return v itself (the correction only enters the update)":
                  v_new / c2}}
    got = g.call("adam_step", list(wrong), theta.copy(), grad.copy(), m.copy(), v.copy(), t,
                 lr=lr, beta1=b1, beta2=b2, eps=eps)
    if got:
        if np.shape(got[0]) == theta.shape:  # judge the update, so that a sign or factor shows
            got = (np.asarray(got[0], dtype=np.float64) - theta, *got[1:])
        for tensor, value, ref in zip(wrong, got, [update, m_new, v_new]):
            g.check(tensor, value, ref, candidates=wrong[tensor])


def _one_line(a):
    """An array as printed by numpy, on one line."""
    return " ".join(str(np.asarray(a)).split())


def check_large_log_weights(g, fname, reference, *args):
    """The line ``fname (+/-1000)``: the learner's ``fname(log_w, *args)`` on log weights of +/-1000.

    exp(1000) overflows and exp(-1000) underflows in float64, so only a form
    that subtracts the maximum first gets ``reference(log_w, *args)``.
    """
    tensor, big = f"{fname} (+/-1000)", np.array([[-1000.0, 1000.0], [-1001.0, 999.0]])
    got = g.call(fname, [tensor], big.copy(), *args)
    if got:
        ref = reference(big, *args)
        status, detail = judge(got[0], ref)
        g.add([tensor], status, detail if status == OK else
              "not stable for log weights of +/-1000 (exp under- or overflows): subtract the "
              f"maximum over the samples first (got {_one_line(got[0])}, expected {_one_line(ref)})")


def grade_iw_bound(g):
    rng = np.random.default_rng(8)
    k, Z = 5, 3
    a = 3 * rng.standard_normal((k, B))
    ref = logmeanexp(a, axis=0)
    wrong = {f"is log-sum-exp: subtract log k = log {k} for the mean": ref + math.log(k),
             "is the mean of the logs, not the log of the mean (Jensen: it lies below)": a.mean(axis=0),
             "is taken over axis 1 instead of the given axis (0 here, the samples)": logmeanexp(a, axis=1)}
    got = g.call("logmeanexp", ["logmeanexp"], a.copy(), 0)
    if got and g.check("logmeanexp", got[0], ref, candidates=wrong):
        check_large_log_weights(g, "logmeanexp", logmeanexp, 0)

    mu, logvar = rng.standard_normal((B, Z)), rng.standard_normal((B, Z))
    z = mu + np.exp(logvar / 2) * rng.standard_normal((k, B, Z))
    log_px_z = -50 + rng.standard_normal((k, B))
    log_pz, log_q = log_standard_normal(z), log_normal(z, mu, logvar)
    log_w = log_px_z + log_pz - log_q
    wrong = {"adds log q(z | x) where it subtracts it": log_px_z + log_pz + log_q,
             "lacks log p(z), the prior": log_px_z - log_q,
             "lacks log p(x | z), the likelihood": log_pz - log_q}
    got = g.call("log_weights", ["log_weights"], log_px_z.copy(), z.copy(), mu.copy(), logvar.copy())
    if got:
        g.check("log_weights", got[0], log_w, candidates=wrong)

    bound = logmeanexp(log_w, axis=0).mean()
    wrong = {"is the mean log weight (the k = 1 bound, the ELBO), not log of the mean weight":
                 log_w.mean(),
             "takes the log-mean-exp over the examples and the mean over the samples (axes swapped)":
                 logmeanexp(log_w, axis=1).mean(),
             f"is summed over the B = {B} examples instead of averaged": B * bound}
    got = g.call("iw_bound", ["iw_bound"], log_w.copy())
    if got:
        g.check("iw_bound", got[0], bound, candidates=wrong)


K = 5  # samples per example in the iwae exercise


def _weight_mistakes(log_w):
    """Usual wrong normalised importance weights for ``log_w`` (k, B): ``{what they are: weights}``."""
    k = log_w.shape[0]
    return {"the softmax over the B examples (axis 1), not over the k samples (axis 0): each "
            "example's k weights sum to 1": importance_weights(log_w, axis=1),
            "the unnormalised weights exp(log w): divide them by their sum over the k samples":
                np.exp(log_w),
            "exp(log w - max) without dividing by its sum over the k samples":
                np.exp(log_w - log_w.max(axis=0)),
            f"the uniform weights 1/k = 1/{k}: that gives the k-sample ELBO's gradient, not IWAE's, "
            "whose weights are the softmax of the log weights over the samples":
                np.full(log_w.shape, 1 / k)}


def _iwae_reference(objective, x, eps):
    """npvae's IWAE gradients (dout (k, B, D), dmu, dlogvar) for batch ``x`` and noise ``eps``,
    and the usual wrong ones, ``{message: (dout, dmu, dlogvar)}``.

    The wrong ones come from npvae's own backward with a piece changed: the
    weights, the prior's term (z held at 0 in it), the decoder's dz (held at
    0, leaving log q's direct term alone), or the objective ("elbo").
    """
    model = objective.model
    objective.forward(x, eps=eps)
    lw, wt = objective.lw, objective.weights

    def handed(backward=objective.backward, weights=wt, z=lw.z, decoder_dz=True):
        objective.weights, objective.lw = weights, lw._replace(z=z)
        dout, dmu, dlogvar = _handed(model, backward, decoder_dz)
        objective.weights, objective.lw = wt, lw
        return dout.reshape(lw.out.shape), dmu, dlogvar

    no_z = np.zeros_like(lw.z)
    ref, no_prior, direct = handed(), handed(z=no_z), handed(z=no_z, decoder_dz=False)
    elbo = KSampleObjective(model, objective.k, "elbo")
    elbo.forward(x, eps=eps)
    return ref, {
        **{f"uses {what}": handed(weights=w) for what, w in _weight_mistakes(lw.log_w).items()},
        'is the gradient of the k-sample ELBO with the KL in closed form (objective "elbo": '
        "vae_backward's, averaged over the k samples), not IWAE's": handed(elbo.backward),
        f"is B = {B} times the right answer: each sample's weight is wt / B, the 1/B of the batch "
        "mean is missing": [B * t for t in ref],
        "lacks the prior's term: -log p(z) = |z|^2 / 2 + const adds c z to the decoder's dz": no_prior,
        "lacks log q's direct term: with eps held, log q = -1/2 sum(eps^2 + logvar + log 2 pi), "
        "-1/2 per sample, weighted by c": [*ref[:2], ref[2] - direct[2]],
        "adds log q's direct term where it subtracts it: -log w holds +log q, whose direct "
        "derivative is -1/2 per sample": [*ref[:2], ref[2] - 2 * direct[2]],
        "has only the decoder's path: the prior's c z and log q's direct -1/2 are missing":
            [*no_prior[:2], no_prior[2] - direct[2]],
        "has shape (k B, D), as the decoder's backward takes it: return dout as (k, B, D)":
            [ref[0].reshape(-1, ref[0].shape[-1]), *ref[1:]]}


def grade_iwae(g):
    rng = np.random.default_rng(14)
    log_w = 3 * rng.standard_normal((K, B))
    wrong = {f"are {what}": w for what, w in _weight_mistakes(log_w).items()}
    got = g.call("importance_weights", ["importance_weights"], log_w.copy())
    if got and g.check("importance_weights", got[0], importance_weights(log_w), candidates=wrong):
        check_large_log_weights(g, "importance_weights", importance_weights)

    model = VAE(x_dim=6, hidden=(5,), latent=3, activation="tanh", dtype="float64", seed=14)
    for p in model.params.values():
        p += rng.normal(0.0, 0.3, p.shape)
    x, eps = rng.random((B, 6)), rng.standard_normal((K, B, 3))
    objective = KSampleObjective(model, K, "iwae")
    terms = objective.forward(x, eps=eps)
    del objective.weights  # the learner's importance_weights make them
    model.dtheta[...] = 0
    names = ["dout", "dmu", "dlogvar"]
    got = g.call("iwae_backward", names, objective)
    got_grads = {k: v.copy() for k, v in model.grads.items()}
    if got is None and g.lines[-1].status == TODO:
        return

    ref, mistakes = _iwae_reference(objective, x, eps)
    objective.forward(x, eps=eps)
    objective.backward()
    ref_grads = {k: v.copy() for k, v in model.grads.items()}
    floor = noise_floor(abs(terms.recon) + abs(terms.kl))

    def loss():
        return objective.forward(x, eps=eps).loss

    numeric = [*_fd_holding(model.decoder, "forward", objective.lw.out.reshape(K * B, -1).copy(), loss),
               *_fd_holding(model, "encode", (objective.mu.copy(), objective.logvar.copy()), loss)]
    ok = {}
    for i, tensor in enumerate(names):
        wrong = {m: v[i] for m, v in mistakes.items() if not _close(v[i], ref[i])}
        ok[tensor] = bool(got) and g.check(tensor, got[i], ref[i], numeric=numeric[i].reshape(ref[i].shape),
                                           floor=floor, candidates=wrong)
    _grade_parameters(g, model, got_grads, ref_grads, loss, floor,
                      {"decoder": None if ok["dout"] else "is wrong because dout is (the decoder "
                                                          "backpropagates it)",
                       "encoder": None if ok["dmu"] and ok["dlogvar"] else ENCODER_BLAMED})


LABELS, N_CLASSES = np.array([3, 0, 3, 1]), 5   # not every class in the batch: max(y) + 1 < C
SAMPLES = 3                                     # the labelled layer's rows: SAMPLES x B


def _onehot(y, n_classes):
    """npvae's one-hot labels of ``y`` (B,): what ``CVAE.condition`` gives its networks, (B, C)."""
    model = CVAE(x_dim=1, hidden=(1,), latent=1, n_classes=n_classes, dtype="float64", seed=0)
    model.condition(y)
    return model.encoder.onehot


def _labelled_layer(rng, inputs=None):
    """A one-layer float64 ``LabelledMLP``: 4 features and the one-hot labels to 6 outputs.

    Its W, b and onehot are those of ``inputs`` when given, else random and LABELS'.
    """
    layer = LabelledMLP([4, 6], n_classes=N_CLASSES, rng=rng, init="pytorch", dtype=np.float64)
    layer.onehot = inputs["onehot"] if inputs else _onehot(LABELS, N_CLASSES)
    if inputs:
        layer.params["0.W"][...], layer.params["0.b"][...] = inputs["W"], inputs["b"]
    return layer


def _labelled_candidates(x, inputs, dout):
    """Usual wrong answers of the labelled layer: the labels misplaced, kept in dx, or their rows of W."""
    layer = _labelled_layer(np.random.default_rng(0), inputs)
    onehot, (rows, n) = inputs["onehot"], x.shape
    C = onehot.shape[1]
    placed = {"repeats each label k times in a row (np.repeat, example-major) where the rows are "
              "sample-major, row i B + b for example b: tile the B labels k times (np.tile)":
                  np.concatenate([x, np.repeat(onehot, rows // len(onehot), axis=0)], axis=1),
              "puts the labels first, [onehot | x]: they are the last C columns, [x | onehot]":
                  np.concatenate([layer.labels_for(rows), x], axis=1)}
    wrong = {"out": {}, "dW": {}}
    for message, u in placed.items():  # the plain network (Sequential) on a wrong [x | onehot]
        wrong["out"][message] = Sequential.forward(layer, u)
        Sequential.backward(layer, dout)
        wrong["dW"][message] = layer.grads["0.W"].copy()
    layer.forward(x)
    du = Sequential.backward(layer, dout)
    dW = layer.grads["0.W"]
    wrong["dx"] = {f"returns the label columns too: dx is the first n = {n} columns of d[x | onehot]; "
                   "the labels are data and get no gradient": du,
                   f"drops the first C = {C} columns instead of the last C: the labels are the last "
                   "columns of [x | onehot]": du[:, C:],
                   "is the gradient of the label columns: dx is the first n columns": du[:, n:]}
    wrong["dW"].update({
        "gives the label rows of W no gradient: the labels are data, but their rows of W are weights, "
        "with gradient onehot^T dout (each class's dout summed)":
            np.concatenate([dW[:n], np.zeros_like(dW[n:])]),
        f"has only the n = {n} rows of x: W has n + C rows, and the C label rows get onehot^T dout":
            dW[:n]})
    return wrong


def grade_onehot(g):
    ref = _onehot(LABELS, N_CLASSES)
    wrong = {"puts the classes on axis 0, (C, B): one-hot has a row per example, with its 1 in "
             "column y": ref.T,
             f"has max(y) + 1 = {LABELS.max() + 1} columns, not n_classes = {N_CLASSES}: a batch need "
             "not hold every class": _onehot(LABELS, LABELS.max() + 1)}
    got = g.call("onehot", ["onehot"], LABELS.copy(), N_CLASSES)
    if got:
        g.check("onehot", got[0], ref, candidates=wrong)


_grade_labelled = layer_grader("labelled", _labelled_layer, (SAMPLES * B, 4), _labelled_candidates,
                               given=("onehot",))


def grade_conditional(g):
    grade_onehot(g)
    _grade_labelled(g)


EXERCISES = {ex.name: ex for ex in [
    layer_exercise("dense", "01_dense.py", lambda rng: Dense(4, 3, rng=rng, init="pytorch", dtype=np.float64),
                   (B, 4), "dense-layer", "the dense layer: forward and backward",
                   _dense_candidates, (Dense.forward, Dense.backward)),
    activation_exercise("relu", "out", lambda x, out, dout: {
        "passes dout everywhere: the mask [x > 0] is missing": dout}),
    activation_exercise("leaky_relu", "x", lambda x, out, dout: {
        "is ReLU's backward: where x <= 0 the gradient is alpha dout, not 0": dout * (x > 0),
        "swaps the two cases: dout where x > 0, alpha dout where x <= 0": np.where(x > 0, 0.01 * dout, dout)}),
    activation_exercise("tanh", "out", lambda x, out, dout: {
        "uses 1 - tanh where 1 - tanh^2 belongs": dout * (1 - out),
        "applies tanh twice: out is already tanh(x), and the derivative is 1 - out^2":
            dout * (1 - np.tanh(out)**2)}),
    activation_exercise("sigmoid", "out", lambda x, out, dout: {
        "uses s where s (1 - s) belongs": dout * out,
        "applies sigmoid twice: out is already sigmoid(x), and the derivative is out (1 - out)":
            dout * sigmoid(out) * (1 - sigmoid(out))}),
    activation_exercise("softplus", "x", lambda x, out, dout: {
        "uses softplus(x) itself where its derivative sigmoid(x) belongs": dout * softplus(x),
        "uses sigmoid(-x) where sigmoid(x) belongs": dout * sigmoid(-x)}),
    Exercise("bernoulli_nll", "03_bernoulli_nll.py", ("bernoulli_nll", "bernoulli_nll_backward"),
             "bernoulli-likelihood", grade_bernoulli_nll, (bernoulli_nll, bernoulli_nll_backward),
             "the stable Bernoulli NLL from logits, forward and backward"),
    Exercise("gaussian_nll", "03_gaussian_nll.py", ("gaussian_nll_backward",), "gaussian-likelihood",
             grade_gaussian_nll, (gaussian_nll, gaussian_nll_backward), "the Gaussian NLL's backward"),
    Exercise("gaussian_kl", "04_gaussian_kl.py", ("gaussian_kl", "gaussian_kl_backward"), "gaussian-kl",
             grade_gaussian_kl, (gaussian_kl_per_dim, gaussian_kl, gaussian_kl_backward),
             "the Gaussian KL and its backward"),
    Exercise("reparameterize", "05_reparameterize.py", ("reparameterize", "reparameterize_backward"),
             "reparameterization", grade_reparameterize, (reparameterize, reparameterize_backward),
             "z = mu + exp(logvar / 2) eps, and its backward"),
    Exercise("adam", "06_adam.py", ("adam_step",), "adam", grade_adam, (adam_reference_step,),
             "one Adam step as in Algorithm 1, with bias correction"),
    Exercise("vae_backward", "07_vae_backward.py", ("vae_backward",), "the-whole-elbo", grade_vae,
             (VAE.backward,), "the whole VAE backward: the two paths into mu and logvar"),
    Exercise("iw_bound", "10_iw_bound.py", ("logmeanexp", "log_weights", "iw_bound"),
             "importance-weighted-bound", grade_iw_bound,
             (logmeanexp, log_normal, log_standard_normal),
             "log-mean-exp and the importance-weighted bound"),
    layer_exercise("conv", "12_conv.py", _conv2d, (B, 2, 5, 6), "convolution",
                   "a 3x3 stride-2 convolution with padding 1: forward (im2col) and backward",
                   _flipped_kernel_dx(_conv2d), (Conv2D.forward, Conv2D.backward)),
    layer_exercise("conv_transpose", "12_conv_transpose.py", _conv_transpose2d, (B, 3, 3, 4),
                   "transposed-convolution",
                   "a 3x3 stride-2 transposed convolution: forward (col2im) and backward",
                   _flipped_kernel_dx(_conv_transpose2d),
                   (ConvTranspose2D.forward, ConvTranspose2D.backward)),
    Exercise("iwae", "14_iwae.py", ("importance_weights", "iwae_backward"), "importance-weighted-training",
             grade_iwae, (importance_weights, KSampleObjective.backward),
             "the IWAE backward: importance weights (a softmax over the samples) and every path"),
    Exercise("conditional", "15_conditional.py", ("onehot", "labelled_forward", "labelled_backward"),
             "conditional-vae", grade_conditional,
             (CVAE.condition, LabelledMLP, Dense.backward),
             "the conditional VAE's one-hot labels, [x | onehot(y)] and its backward"),
]}


# ------------------------------------------------------------------ loading and grading files


def load(path):
    """The learner's file as a module, executed without writing anything (no bytecode)."""
    path = Path(path)
    module = types.ModuleType(f"npvae_exercise_{path.stem}")
    module.__file__ = str(path)
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    return module


def grade(exercise, path):
    """Grade the file at ``path`` against ``exercise``: a list of ``Line``."""
    try:
        module = load(path)
    except NotImplementedError:
        return [Line(f, TODO) for f in exercise.functions]
    except Exception as err:  # a syntax error, a failing import: the learner's to fix
        return [Line(path.name, WRONG, f"could not be run: {type(err).__name__}: {' '.join(str(err).split())}")]
    g = Grade(module)
    with np.errstate(all="ignore"):  # the learner's overflows show as inf in the lines
        exercise.grade(g)
    return g.lines


def outcome(lines):
    """``WRONG`` if any line is; else ``ok`` or ``not implemented yet`` if every line is; else partly done."""
    statuses = {line.status for line in lines}
    if WRONG in statuses:
        return WRONG
    return statuses.pop() if len(statuses) == 1 else PARTLY


def default_dir():
    """tutorials/exercises of the current checkout (or, failing that, of npvae's)."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / "tutorials" / "exercises").is_dir():
            return root / "tutorials" / "exercises"
    return Path.cwd() / "tutorials" / "exercises"


def _shown(path):
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def exercise_of_file(path):
    """The exercise a file is for: by its name, else by the functions it defines."""
    for ex in EXERCISES.values():
        if path.name == ex.file or path.stem.endswith(ex.name):
            return ex
    try:
        defined = {n.name for n in ast.parse(path.read_text(encoding="utf-8")).body
                   if isinstance(n, ast.FunctionDef)}
    except SyntaxError:
        defined = set()
    found = [ex for ex in EXERCISES.values() if set(ex.functions) <= defined]
    return found[0] if len(found) == 1 else None


def solution_text(exercise):
    """npvae's own code for ``exercise``: the source of each object of its solution."""
    parts = []
    for obj in exercise.solution:
        file = Path(inspect.getsourcefile(obj)).name
        parts.append(f"# npvae/{file}: {obj.__qualname__}\n{inspect.getsource(obj)}")
    return "\n".join(parts)


# ------------------------------------------------------------------ the command line


def _usage(message):
    print(f"npvae exercises: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_list(args):
    print(f"{'exercise':<16} {'file':<24} {'write':<52} derivation")
    for ex in EXERCISES.values():
        print(f"{ex.name:<16} {ex.file:<24} {', '.join(ex.functions):<52} derivations.md#{ex.anchor}")
    print("\nnpvae exercises check NAME  grades tutorials/exercises/<file>; --show-solution prints "
          "npvae's own code")
    return EXIT_OK


def cmd_check(args):
    unknown = [n for n in args.names if n not in EXERCISES]
    if unknown:
        return _usage(f"unknown exercise {unknown[0]!r}; choose one of {', '.join(EXERCISES)}")
    if args.show_solution:
        if not args.names:
            return _usage("--show-solution needs the NAME of an exercise")
        print("\n".join(solution_text(EXERCISES[n]) for n in args.names))
        return EXIT_OK
    if args.file is not None:   # (--file "" names no file: refused, not the default folder)
        path = Path(args.file)
        if not path.is_file():
            return _usage(f"--file {args.file}: no such file")
        if len(args.names) > 1:
            return _usage("--file grades one exercise; give at most one NAME")
        ex = EXERCISES[args.names[0]] if args.names else exercise_of_file(path)
        if ex is None:
            return _usage(f"cannot tell which exercise {args.file} is; give its NAME")
        jobs = [(ex, path)]
    else:
        folder = Path(args.dir) if args.dir else default_dir()
        if not folder.is_dir():
            return _usage(f"no exercise folder {folder} (give --dir or --file)")
        jobs = [(EXERCISES[n], folder / EXERCISES[n].file) for n in (args.names or EXERCISES)]
        missing = [str(p) for _, p in jobs if not p.is_file()]
        if missing:
            return _usage(f"no exercise file {missing[0]}")
    counts = {OK: 0, WRONG: 0, TODO: 0, PARTLY: 0}
    for ex, path in jobs:
        lines = grade(ex, path)
        status = outcome(lines)
        counts[status] += 1
        print(f"{ex.name} ({_shown(path)}): {status}")
        print("\n".join(map(str, lines)))
    if len(jobs) > 1:
        print(f"{len(jobs)} exercises: {counts[OK]} ok, {counts[WRONG]} wrong, {counts[PARTLY]} partly "
              f"done, {counts[TODO]} not implemented yet")
    return EXIT_OK if counts[OK] == len(jobs) else EXIT_WRONG


def add_arguments(parser):
    """The ``list`` and ``check`` subcommands, on ``parser``."""
    sub = parser.add_subparsers(dest="exercises_command", metavar="{list,check}", required=True)
    p = sub.add_parser("list", help="the exercises, in the order of the tutorials")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser(
        "check", help="grade your exercise files",
        description="Grade the exercise files (default: every file in tutorials/exercises/): a "
        "line per tensor, 'ok' with its relative error, 'not implemented yet', or what is wrong. "
        "Your files are only read. Exit 0 if all are right, 1 if not, 2 on a usage error.")
    p.add_argument("names", nargs="*", metavar="NAME", help="exercises to grade (default: all)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--dir", help="folder of exercise files (default tutorials/exercises)")
    where.add_argument("--file", help="grade this one file (its exercise from its name, or NAME)")
    p.add_argument("--show-solution", action="store_true",
                   help="print npvae's own implementation of NAME instead of grading")
    p.set_defaults(func=cmd_check)


def add_parser(subparsers):
    """``npvae exercises``: the subcommand, added to npvae's command line."""
    p = subparsers.add_parser("exercises", help="write a backward yourself; have it graded",
                              description="Exercises: write each hand-derived piece yourself in "
                              "tutorials/exercises/, and have it graded by finite differences.")
    add_arguments(p)
    return p


def main(argv=None):
    """``python -m npvae.exercises``: list or check; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m npvae.exercises",
                                     description="Exercises graded by gradient checks.")
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
