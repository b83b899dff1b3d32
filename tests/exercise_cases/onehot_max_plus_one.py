"""onehot is as wide as the largest label + 1, not n_classes (right only when the batch holds every class)."""

import numpy as np


def onehot(y, n_classes):
    return np.eye(y.max() + 1)[y]


def labelled_forward(x, onehot, W, b):
    u = np.concatenate([x, np.tile(onehot, (len(x) // len(onehot), 1))], axis=1)
    return u @ W + b


def labelled_backward(dout, x, onehot, W):
    u = np.concatenate([x, np.tile(onehot, (len(x) // len(onehot), 1))], axis=1)
    du = dout @ W.T
    return du[:, :x.shape[1]], u.T @ dout, dout.sum(axis=0)
