"""relu_backward is right, but the file starts a non-daemon thread that never ends."""

import threading
import time

import numpy as np


def _forever():
    while True:
        time.sleep(0.1)


threading.Thread(target=_forever).start()


def relu_backward(dout, out):
    return np.where(out > 0, dout, 0.0)
