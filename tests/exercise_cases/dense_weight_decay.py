"""dense_backward adds a weight decay 1e-3 W to dW that the loss does not have: a relative error
of about 1e-4, far above the 1e-6 a right gradient meets, far below a sign or a factor."""

import numpy as np


def dense_forward(x, W, b):
    return x @ W + b


def dense_backward(dout, x, W):
    return dout @ W.T, x.T @ dout + 1e-3 * W, dout.sum(axis=0)
