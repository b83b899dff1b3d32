"""relu_backward: a sleep far longer than the time limit."""

import time


def relu_backward(dout, out):
    time.sleep(3600)
    return dout * (out > 0)
