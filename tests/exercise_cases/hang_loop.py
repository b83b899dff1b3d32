"""relu_backward: an endless loop (the counter is never incremented): the time limit stops it."""

import numpy as np


def relu_backward(dout, out):
    dx = np.zeros_like(dout)
    i = 0
    while i < len(dout):
        dx[i] = dout[i] * (out[i] > 0)
    return dx
