"""Tutorials 01 and 02: the dense layer and the activations' backwards.

Also ``layer_exercise``, the exercise of any layer with npvae's interface
(``params`` / ``grads`` dicts, ``forward(x)``, ``backward(dout) -> dx``): the
convolutions (tutorial 12) and the conditional layer (tutorial 15) use it.
"""

import numpy as np

from ..activations import ACTIVATIONS, sigmoid, softplus
from ..gradcheck import noise_floor
from ..layers import Dense
from .judging import B, Exercise, fd, inputs


def layer_exercise(name, file, make_layer, x_shape, anchor, summary, solution, candidates=None,
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
    return Exercise(name, file, (f"{name}_forward", f"{name}_backward"), anchor,
                    layer_checks(name, make_layer, x_shape, candidates, given), solution, summary)


def layer_checks(name, make_layer, x_shape, candidates=None, given=()):
    """``layer_exercise``'s checks of ``NAME_forward`` and ``NAME_backward``, as a function of an Attempt."""
    def checks(attempt):
        rng = np.random.default_rng(0)
        layer = make_layer(rng)
        x = inputs(rng, x_shape)
        params = {k.rpartition(".")[2]: p.copy() for k, p in layer.params.items()}
        available = {**{a: getattr(layer, a).copy() for a in given}, **params}
        out = layer.forward(x)
        dout = rng.standard_normal(out.shape)
        dx = layer.backward(dout)
        ref = {"dx": dx, **{f"d{k}": grad.copy() for k, grad in zip(params, layer.grads.values())}}
        numeric = dict(zip(ref, fd(lambda: np.sum(dout * layer.forward(x)), x, *layer.params.values())))
        floor = noise_floor(np.sum(np.abs(dout * out)))
        wrong = candidates(x, available, dout) if candidates else {}

        got = attempt.call_by_name(f"{name}_forward", ["out"], {"x": x, **available})
        if got:
            attempt.check("out", got[0], out, candidates=wrong.get("out"))
        got = attempt.call_by_name(f"{name}_backward", list(ref), {"dout": dout, "x": x, **available})
        for tensor, value in zip(ref, got or ()):
            attempt.check(tensor, value, ref[tensor], numeric=numeric[tensor], floor=floor,
                          candidates=wrong.get(tensor))

    return checks


def _dense_candidates(x, params, dout):
    return {"out": {"the bias b is missing: out = x W + b": x @ params["W"]},
            "db": {"is summed over axis 1 (the outputs) instead of axis 0 (the batch): db sums dout "
                   "over the B examples": dout.sum(axis=1),
                   "is not summed over the batch: db has one entry per output, dout summed over the "
                   "B examples": dout}}


def activation_exercise(name, takes, extra, solution):
    """``NAME_backward(dout, <takes>) -> dx`` for npvae's activation ``name``.

    ``takes`` is what npvae's layer keeps for its backward (``"x"`` or its
    output ``"out"``); ``extra(x, out, dout)`` gives usual wrong answers.
    """
    cls = ACTIVATIONS[name]

    def checks(attempt):
        rng = np.random.default_rng(1)
        x = inputs(rng, (B, 5), away_from_zero=0.1)
        layer = cls()
        out = layer.forward(x)
        dout = rng.standard_normal(x.shape)
        dx = layer.backward(dout)
        (numeric,) = fd(lambda: np.sum(dout * cls().forward(x)), x)
        wrong = {"is the local derivative alone: multiply it by dout (the chain rule)": dx / dout,
                 **extra(x, out, dout)}
        got = attempt.call_by_name(f"{name}_backward", ["dx"], {"dout": dout, takes: x if takes == "x" else out})
        if got:
            attempt.check("dx", got[0], dx, numeric=numeric, floor=noise_floor(np.sum(np.abs(dout * out))),
                          candidates=wrong)

    return Exercise(name, f"02_{name}.py", (f"{name}_backward",), {"leaky_relu": "leaky-relu"}.get(name, name),
                    checks, {f"{name}_backward": solution}, f"the backward of {name}")


EXERCISES = [
    layer_exercise("dense", "01_dense.py", lambda rng: Dense(4, 3, rng=rng, init="pytorch", dtype=np.float64),
                   (B, 4), "dense-layer", "the dense layer: forward and backward",
                   {"dense_forward": "return x @ W + b",
                    "dense_backward": "return dout @ W.T, x.T @ dout, dout.sum(axis=0)"},
                   _dense_candidates),
    activation_exercise("relu", "out", lambda x, out, dout: {
        "passes dout everywhere: the mask [out > 0] is missing, or always true (out = max(x, 0) is never "
        "negative, so out >= 0 masks nothing)": dout}, "return dout * (out > 0)"),
    activation_exercise("leaky_relu", "x", lambda x, out, dout: {
        "is ReLU's backward: where x <= 0 the gradient is alpha dout, not 0": dout * (x > 0),
        "swaps the two cases: dout where x > 0, alpha dout where x <= 0": np.where(x > 0, 0.01 * dout, dout)},
        "return np.where(x > 0, dout, alpha * dout)"),
    activation_exercise("tanh", "out", lambda x, out, dout: {
        "uses 1 - tanh where 1 - tanh^2 belongs": dout * (1 - out),
        "applies tanh twice: out is already tanh(x), and the derivative is 1 - out^2":
            dout * (1 - np.tanh(out)**2)}, "return dout * (1 - out**2)"),
    activation_exercise("sigmoid", "out", lambda x, out, dout: {
        "uses s where s (1 - s) belongs": dout * out,
        "applies sigmoid twice: out is already sigmoid(x), and the derivative is out (1 - out)":
            dout * sigmoid(out) * (1 - sigmoid(out))}, "return dout * out * (1 - out)"),
    activation_exercise("softplus", "x", lambda x, out, dout: {
        "uses softplus(x) itself where its derivative sigmoid(x) belongs": dout * softplus(x),
        "uses sigmoid(-x) where sigmoid(x) belongs": dout * sigmoid(-x)},
        "return dout * np.exp(-np.logaddexp(0, -x))  # sigmoid(x), without overflow"),
]
