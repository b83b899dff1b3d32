"""dense_backward uses a name it never defined: one report, with this file's line."""

import numpy as np


def dense_forward(x, W, b):
    return x @ W + b


def dense_backward(dout, x, W):
    dx = dout @ W.T
    return dx, x.T @ dout, d_out.sum(axis=0)
