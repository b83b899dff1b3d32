"""Tutorial 15: the conditional VAE's one-hot labels and its first layer, [x | onehot(y)] W + b."""

import numpy as np

from ..cvae import CVAE, LabelledMLP
from ..layers import Sequential
from .judging import B, Exercise
from .layers import layer_checks

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


def check_onehot(attempt):
    ref = _onehot(LABELS, N_CLASSES)
    wrong = {"puts the classes on axis 0, (C, B): one-hot has a row per example, with its 1 in "
             "column y": ref.T,
             f"has max(y) + 1 = {LABELS.max() + 1} columns, not n_classes = {N_CLASSES}: a batch need "
             "not hold every class": _onehot(LABELS, LABELS.max() + 1)}
    got = attempt.call("onehot", ["onehot"], LABELS.copy(), N_CLASSES)
    if got:
        attempt.check("onehot", got[0], ref, candidates=wrong, integers=True)


_check_labelled = layer_checks("labelled", _labelled_layer, (SAMPLES * B, 4), _labelled_candidates,
                               given=("onehot",))


def check_conditional(attempt):
    check_onehot(attempt)
    _check_labelled(attempt)


LABELLED = "np.concatenate([x, np.tile(onehot, (len(x) // len(onehot), 1))], axis=1)"

EXERCISES = [
    Exercise("conditional", "15_conditional.py", ("onehot", "labelled_forward", "labelled_backward"),
             "conditional-vae", check_conditional, {
                 "onehot": "return np.eye(n_classes)[y]      # row b is the y[b]-th row of the identity",
                 "labelled_forward": f"""
                     u = {LABELLED}   # sample-major rows: the B labels tiled
                     return u @ W + b""",
                 "labelled_backward": f"""
                     u = {LABELLED}
                     du = dout @ W.T
                     return du[:, :x.shape[1]], u.T @ dout, dout.sum(axis=0)   # dx: the columns of x alone"""},
             "the conditional VAE's one-hot labels, [x | onehot(y)] and its backward"),
]
