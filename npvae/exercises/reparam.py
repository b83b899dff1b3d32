"""Tutorial 05: the reparameterization trick, its statistics and its backward."""

import numpy as np

from ..gradcheck import noise_floor
from ..reparam import reparameterize, reparameterize_backward
from .judging import OK, WRONG, B, Exercise, _plain, fd

VARIANCE_FOR_STD = ("scales eps by the variance exp(logvar) where the standard deviation "
                    "exp(logvar / 2) belongs")


def sample_statistics(z, mu, logvar):
    """What is wrong with the sample ``z`` (N, Z) of N(mu, exp(logvar)), or None.

    The forward maths, which no gradient check sees: the sample mean against
    mu and the sample variance against exp(logvar), within six standard errors.
    """
    n, var = z.shape[0], np.exp(logvar)
    mean_z, var_z = z.mean(axis=0), z.var(axis=0)
    if not np.all(np.abs(mean_z - mu) <= 6 * np.sqrt(var_z / n)):
        return f"the sample mean of z is {np.round(mean_z, 3)}, not mu = {mu}"

    def near(v):
        return np.all(np.abs(var_z - v) <= 6 * v * np.sqrt(2 / n))

    if near(var):
        return None
    if near(var**2):
        return ("the sample variance of z is exp(2 logvar), the square of the variance: eps was scaled "
                "by the variance exp(logvar) where the standard deviation exp(logvar / 2) belongs")
    if near(logvar**2):
        return "the sample variance of z is logvar^2: eps was scaled by logvar, not by exp(logvar / 2)"
    return (f"the sample variance of z is {np.round(var_z, 3)}, not exp(logvar) = {np.round(var, 3)}: "
            "the standard deviation is exp(logvar / 2)")


def check_reparameterize(attempt):
    rng = np.random.default_rng(5)
    Z = 4
    mu, logvar, eps = rng.standard_normal((B, Z)), rng.standard_normal((B, Z)), rng.standard_normal((B, Z))
    z, _ = reparameterize(mu, logvar, eps)
    with np.errstate(invalid="ignore"):
        sqrt_bug = mu + np.sqrt(logvar) * eps
    got = attempt.call("reparameterize", ["z"], mu.copy(), logvar.copy(), eps.copy())
    if got:
        attempt.check("z", got[0], z, candidates={
            VARIANCE_FOR_STD: mu + np.exp(logvar) * eps,
            "takes sqrt(logvar) as the standard deviation (NaN wherever logvar < 0): logvar is the "
            "log of the variance, so the standard deviation is exp(logvar / 2)": sqrt_bug})
        # The sampler's statistics, with logvar away from 0 (where variance and std agree).
        mu_s, logvar_s = np.array([0.5, -1.0, 2.0, 0.0]), np.array([-1.0, 0.7, 1.5, -2.0])
        n = 200_000
        eps_s = rng.standard_normal((n, Z))
        tensor = "z (mean and variance)"
        got = attempt.call("reparameterize", [tensor], np.tile(mu_s, (n, 1)), np.tile(logvar_s, (n, 1)), eps_s)
        if got:
            a, problem = _plain(got[0])
            if a is None or problem:
                attempt.add([tensor], WRONG, problem if a is None else f"is {problem}, not float64")
            elif a.shape != (n, Z):
                attempt.add([tensor], WRONG, f"has shape {a.shape}, expected {(n, Z)}")
            else:
                problem = sample_statistics(a, mu_s, logvar_s)
                attempt.add([tensor], WRONG if problem else OK,
                            problem or f"mean mu and variance exp(logvar) over {n} samples")

    dz = rng.standard_normal((B, Z))
    dmu, dlogvar = reparameterize_backward(dz, logvar, eps)
    numeric = fd(lambda: np.sum(dz * reparameterize(mu, logvar, eps)[0]), mu, logvar)
    floor = noise_floor(np.sum(np.abs(dz * z)))
    std = np.exp(logvar / 2)
    wrong = {"dmu": {"is scaled by exp(logvar / 2): z depends on mu with slope 1, so dmu = dz": dz * std},
             "dlogvar": {"is the gradient of the variance-scaled sample mu + exp(logvar) eps: the "
                         "standard deviation exp(logvar / 2) gives dz eps exp(logvar / 2) / 2": dz * eps * std**2,
                         "lacks eps: z = mu + exp(logvar / 2) eps": dz * 0.5 * std}}
    got = attempt.call("reparameterize_backward", ["dmu", "dlogvar"], dz.copy(), logvar.copy(), eps.copy())
    for tensor, value, ref, num in zip(["dmu", "dlogvar"], got or (), [dmu, dlogvar], numeric):
        attempt.check(tensor, value, ref, numeric=num, floor=floor, candidates=wrong[tensor])


EXERCISES = [
    Exercise("reparameterize", "05_reparameterize.py", ("reparameterize", "reparameterize_backward"),
             "reparameterization", check_reparameterize, {
                 "reparameterize": "return mu + np.exp(logvar / 2) * eps  # z alone",
                 "reparameterize_backward": "return dz, dz * eps * 0.5 * np.exp(logvar / 2)"},
             "z = mu + exp(logvar / 2) eps, and its backward"),
]
