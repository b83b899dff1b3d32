"""Tutorials 03 and 04: the Bernoulli and Gaussian likelihoods, and the Gaussian KL."""

import numpy as np

from ..activations import sigmoid
from ..gradcheck import noise_floor
from ..losses import (bernoulli_nll, bernoulli_nll_backward, gaussian_kl, gaussian_kl_backward,
                      gaussian_kl_per_dim, gaussian_nll, gaussian_nll_backward)
from .judging import OK, WRONG, B, Exercise, _plain, fd, judge


def check_bernoulli_nll(attempt):
    rng = np.random.default_rng(2)
    D = 6
    logits, x = 3 * rng.standard_normal((B, D)), rng.random((B, D))
    nll = bernoulli_nll(logits, x)
    per_pixel = bernoulli_nll(logits[..., None], x[..., None])
    wrong = {"is summed over axis 0 (the batch) instead of over the pixels (the last axis): one "
             "value per example": per_pixel.sum(axis=0),
             "is not summed over the pixels: one value per example, summed over its D pixels": per_pixel,
             f"is averaged over the pixels instead of summed: D = {D} times too small": nll / D}
    got = attempt.call("bernoulli_nll", ["nll"], logits.copy(), x.copy())
    if got and attempt.check("nll", got[0], nll, candidates=wrong):
        # Stability: logits of +/-1e4, and a confident right answer (its value is all in log1p).
        for tensor, l_, x_, hint in [
                ("nll (logits +/-1e4)", [[1e4, -1e4, 1e4, -1e4]], [[1.0, 0.0, 0.0, 1.0]], ""),
                ("nll (l = 40, x = 1)", [[40.0]], [[1.0]],
                 "loses every digit of a confident right answer: softplus(l) - x l cancels; keep "
                 "log1p(exp(-|l|)) apart from max(l, 0) - x l")]:
            l_, x_ = np.array(l_), np.array(x_)
            got = attempt.call("bernoulli_nll", [tensor], l_.copy(), x_.copy())
            if got:
                ref = bernoulli_nll(l_, x_)
                status, detail = judge(got[0], ref, floor=1e-300)  # relative to the tiny value itself
                a, problem = _plain(got[0])
                if status != OK and a is not None and not problem:
                    if not hint or not np.isfinite(a).all():
                        hint = ("not stable: exp overflows or log(0) appears; use "
                                "max(l, 0) - x l + log1p(exp(-|l|)), whose exponent is never positive")
                    detail = f"{hint} (got {a}, expected {ref})"
                attempt.add([tensor], status, detail)

    dout = rng.standard_normal(B)
    dlogits = bernoulli_nll_backward(dout, logits, x)
    (numeric,) = fd(lambda: np.sum(dout * bernoulli_nll(logits, x)), logits)
    wrong = {"ignores dout: multiply each example's row by its dout": sigmoid(logits) - x,
             "uses the logits where sigmoid(logits) belongs: the gradient is sigmoid(l) - x":
                 (logits - x) * dout[:, None]}
    got = attempt.call("bernoulli_nll_backward", ["dlogits"], dout.copy(), logits.copy(), x.copy())
    if got:
        attempt.check("dlogits", got[0], dlogits, numeric=numeric, floor=noise_floor(np.sum(np.abs(dout * nll))),
                      candidates=wrong)


def check_gaussian_nll(attempt):
    rng = np.random.default_rng(3)
    D, sigma = 6, 0.7
    mean, x, dout = rng.standard_normal((B, D)), rng.random((B, D)), rng.standard_normal(B)
    dmean = gaussian_nll_backward(dout, mean, x, sigma)
    (numeric,) = fd(lambda: np.sum(dout * gaussian_nll(mean, x, sigma)), mean)
    wrong = {"is divided by sigma where sigma^2 belongs": (mean - x) * dout[:, None] / sigma,
             "lacks the 1/sigma^2": (mean - x) * dout[:, None],
             "ignores dout: multiply each example's row by its dout": (mean - x) / sigma**2}
    got = attempt.call("gaussian_nll_backward", ["dmean"], dout.copy(), mean.copy(), x.copy(), sigma)
    if got:
        floor = noise_floor(np.sum(np.abs(dout * gaussian_nll(mean, x, sigma))))
        attempt.check("dmean", got[0], dmean, numeric=numeric, floor=floor, candidates=wrong)


LOG_SIGMA = ("reads logvar as log sigma (the log standard deviation), squaring exp(logvar): logvar "
             "is log sigma^2, so the variance is exp(logvar)")


def check_gaussian_kl(attempt):
    rng = np.random.default_rng(4)
    Z = 3
    mu, logvar, dout = rng.standard_normal((B, Z)), rng.standard_normal((B, Z)), rng.standard_normal(B)
    kl = gaussian_kl(mu, logvar)
    per_dim = gaussian_kl_per_dim(mu, logvar)
    var = np.exp(logvar)
    wrong = {"is summed over axis 0 (the batch) instead of over the latents (the last axis): one "
             "value per example": per_dim.sum(axis=0),
             "is not summed over the latents: one value per example, summed over its Z dimensions": per_dim,
             "adds logvar where it subtracts it: 1/2 (exp(logvar) + mu^2 - 1 - logvar)":
                 kl + logvar.sum(axis=-1),
             "uses the standard deviation exp(logvar / 2) where the variance exp(logvar) belongs":
                 kl + 0.5 * (np.exp(logvar / 2) - var).sum(axis=-1),
             LOG_SIGMA: 0.5 * (np.exp(2 * logvar) + mu**2 - 1 - 2 * logvar).sum(axis=-1)}
    got = attempt.call("gaussian_kl", ["kl"], mu.copy(), logvar.copy())
    if got:
        attempt.check("kl", got[0], kl, candidates=wrong)

    dmu, dlogvar = gaussian_kl_backward(dout, mu, logvar)
    numeric = fd(lambda: np.sum(dout * gaussian_kl(mu, logvar)), mu, logvar)
    floor = noise_floor(np.sum(np.abs(dout * kl)))
    wrong = {"dmu": {"ignores dout: multiply each example's row by its dout": mu},
             "dlogvar": {"lacks the -1 (from the -logvar term): d kl / d logvar = (exp(logvar) - 1) / 2":
                             0.5 * var * dout[:, None],
                         "ignores dout: multiply each example's row by its dout": 0.5 * (var - 1),
                         LOG_SIGMA: (np.exp(2 * logvar) - 1) * dout[:, None]}}
    got = attempt.call("gaussian_kl_backward", ["dmu", "dlogvar"], dout.copy(), mu.copy(), logvar.copy())
    for tensor, value, ref, num in zip(["dmu", "dlogvar"], got or (), [dmu, dlogvar], numeric):
        attempt.check(tensor, value, ref, numeric=num, floor=floor, candidates=wrong[tensor])


EXERCISES = [
    Exercise("bernoulli_nll", "03_bernoulli_nll.py", ("bernoulli_nll", "bernoulli_nll_backward"),
             "bernoulli-likelihood", check_bernoulli_nll, {
                 "bernoulli_nll": """
                     # softplus(l) - x l, with softplus(l) = max(l, 0) + log1p(exp(-|l|))
                     return (np.maximum(logits, 0) - x * logits + np.log1p(np.exp(-np.abs(logits)))).sum(axis=-1)""",
                 "bernoulli_nll_backward": """
                     p = np.exp(-np.logaddexp(0, -logits))  # sigmoid(logits), without overflow
                     return dout[:, None] * (p - x)"""},
             "the stable Bernoulli NLL from logits, forward and backward"),
    Exercise("gaussian_nll", "03_gaussian_nll.py", ("gaussian_nll_backward",), "gaussian-likelihood",
             check_gaussian_nll, {"gaussian_nll_backward": "return dout[:, None] * (mean - x) / sigma**2"},
             "the Gaussian NLL's backward"),
    Exercise("gaussian_kl", "04_gaussian_kl.py", ("gaussian_kl", "gaussian_kl_backward"), "gaussian-kl",
             check_gaussian_kl, {
                 "gaussian_kl": "return 0.5 * (np.expm1(logvar) + mu**2 - logvar).sum(axis=-1)",
                 "gaussian_kl_backward": "return dout[:, None] * mu, dout[:, None] * 0.5 * np.expm1(logvar)"},
             "the Gaussian KL and its backward"),
]
