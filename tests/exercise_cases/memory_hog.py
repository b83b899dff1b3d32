"""relu_backward asks for a 4 GiB array it never uses: over the grader's memory limit (Linux)."""

import numpy as np


def relu_backward(dout, out):
    scratch = np.empty(2**29)  # 4 GiB of float64, never touched
    return dout * (out > 0) + 0 * scratch[:1]
