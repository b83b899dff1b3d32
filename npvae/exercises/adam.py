"""Tutorial 06: one step of Adam, as in Kingma and Ba's Algorithm 1."""

import numpy as np

from ..optim import adam_reference_step
from .judging import Exercise, _plain


def check_adam(attempt):
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
            "divides by v_hat where sqrt(v_hat) belongs": -lr * (m_new / c1) / (v_new / c2 + eps),
            "puts eps inside the square root: the update divides by sqrt(v_hat) + eps, not sqrt(v_hat + eps)":
                -lr * (m_new / c1) / np.sqrt(v_new / c2 + eps)},
        "m": {"is the decaying sum beta1 m + g: the factor (1 - beta1) on g is missing": b1 * m + grad,
              "swaps beta1 and 1 - beta1": (1 - b1) * m + b1 * grad,
              "is the bias-corrected m_hat: return m itself (the correction only enters the update)":
                  m_new / c1},
        "v": {"uses g where g^2 belongs": b2 * v + (1 - b2) * grad,
              "is the decaying sum beta2 v + g^2: the factor (1 - beta2) on g^2 is missing": b2 * v + grad**2,
              "swaps beta2 and 1 - beta2": (1 - b2) * v + b2 * grad**2,
              "is the bias-corrected v_hat: return v itself (the correction only enters the update)":
                  v_new / c2}}
    got = attempt.call("adam_step", list(wrong), theta.copy(), grad.copy(), m.copy(), v.copy(), t,
                       lr=lr, beta1=b1, beta2=b2, eps=eps)
    if got:
        a, problem = _plain(got[0])
        if a is not None and a.shape == theta.shape:  # judge the update, so that a sign or factor shows
            got = ((a - theta).astype(np.asarray(got[0]).dtype), *got[1:])
        for tensor, value, ref in zip(wrong, got, [update, m_new, v_new]):
            attempt.check(tensor, value, ref, candidates=wrong[tensor])


EXERCISES = [
    Exercise("adam", "06_adam.py", ("adam_step",), "adam", check_adam, {"adam_step": """
        m = beta1 * m + (1 - beta1) * g           # new arrays: the caller's m and v stay as they were
        v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        return theta - lr * m_hat / (np.sqrt(v_hat) + eps), m, v"""},
             "one Adam step as in Algorithm 1, with bias correction"),
]
