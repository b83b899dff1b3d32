"""Tutorials 10 and 14: log-mean-exp and the importance-weighted bound; the IWAE backward."""

import math

import numpy as np

from ..evaluate import logmeanexp
from ..gradcheck import noise_floor
from ..iwae import KSampleObjective, importance_weights
from ..losses import LOG_2PI, log_normal, log_standard_normal
from ..vae import VAE
from .isolation import Built
from .judging import OK, B, Exercise, _close, _plain, judge
from .vae import ENCODER_BLAMED, SWAPPED, check_parameters, fd_holding, handed, swapped_grads

K = 5  # samples per example in the iwae exercise


def _one_line(a):
    """An array as printed by numpy, on one line."""
    return " ".join(str(np.asarray(a)).split())


def check_large_log_weights(attempt, fname, reference, *args):
    """The line ``fname (+/-1000)``: the learner's ``fname(log_w, *args)`` on log weights of +/-1000.

    exp(1000) overflows and exp(-1000) underflows in float64, so only a form
    that subtracts the maximum first gets ``reference(log_w, *args)``.
    """
    tensor, big = f"{fname} (+/-1000)", np.array([[-1000.0, 1000.0], [-1001.0, 999.0]])
    got = attempt.call(fname, [tensor], big.copy(), *args)
    if got:
        ref = reference(big, *args)
        status, detail = judge(got[0], ref)
        a, problem = _plain(got[0])
        if status != OK and a is not None and not problem:
            detail = ("not stable for log weights of +/-1000 (exp under- or overflows): subtract the "
                      f"maximum over the samples first (got {_one_line(a)}, expected {_one_line(ref)})")
        attempt.add([tensor], status, detail)


def check_iw_bound(attempt):
    rng = np.random.default_rng(8)
    k, Z = 5, 3
    a = 3 * rng.standard_normal((k, B))
    ref = logmeanexp(a, axis=0)
    wrong = {f"is log-sum-exp: subtract log k = log {k} for the mean": ref + math.log(k),
             "is the mean of the logs, not the log of the mean (Jensen: it lies below)": a.mean(axis=0),
             "is taken over axis 1 instead of the given axis (0 here, the samples)": logmeanexp(a, axis=1)}
    got = attempt.call("logmeanexp", ["logmeanexp"], a.copy(), 0)
    if got and attempt.check("logmeanexp", got[0], ref, candidates=wrong):
        # The axis argument, honoured: a (2, 3, 4) array along its last axis.
        c = 3 * rng.standard_normal((2, 3, 4))
        ref_c = logmeanexp(c, axis=2)
        got = attempt.call("logmeanexp", ["logmeanexp (axis 2)"], c.copy(), 2)
        if got:
            attempt.check("logmeanexp (axis 2)", got[0], ref_c, candidates={
                "ignores its axis argument (always axis 0): take the max, the exp's sum and the mean "
                "along the axis it is given": logmeanexp(c, axis=0)})
        check_large_log_weights(attempt, "logmeanexp", logmeanexp, 0)

    mu, logvar = rng.standard_normal((B, Z)), rng.standard_normal((B, Z))
    z = mu + np.exp(logvar / 2) * rng.standard_normal((k, B, Z))
    log_px_z = -50 + rng.standard_normal((k, B))
    log_pz, log_q = log_standard_normal(z), log_normal(z, mu, logvar)
    log_w = log_px_z + log_pz - log_q
    log_q_std = -0.5 * (LOG_2PI + logvar + (z - mu)**2 / np.exp(logvar / 2)).sum(axis=-1)
    wrong = {"adds log q(z | x) where it subtracts it": log_px_z + log_pz + log_q,
             "lacks log p(z), the prior": log_px_z - log_q,
             "lacks log p(x | z), the likelihood": log_pz - log_q,
             "divides (z - mu)^2 in log q by the standard deviation exp(logvar / 2) where the variance "
             "exp(logvar) belongs": log_px_z + log_pz - log_q_std}
    got = attempt.call("log_weights", ["log_weights"], log_px_z.copy(), z.copy(), mu.copy(), logvar.copy())
    if got:
        attempt.check("log_weights", got[0], log_w, candidates=wrong)

    bound = logmeanexp(log_w, axis=0).mean()
    wrong = {"is the mean log weight (the k = 1 bound, the ELBO), not log of the mean weight":
                 log_w.mean(),
             "takes the log-mean-exp over the examples and the mean over the samples (axes swapped)":
                 logmeanexp(log_w, axis=1).mean(),
             f"is summed over the B = {B} examples instead of averaged": B * bound,
             f"is log k = log {k} too large: log-sum-exp where log-mean-exp belongs (an additive "
             f"- log k, not a factor)": bound + math.log(k)}
    got = attempt.call("iw_bound", ["iw_bound"], log_w.copy())
    if got:
        attempt.check("iw_bound", got[0], bound, candidates=wrong)


def _weight_mistakes(log_w):
    """Usual wrong normalised importance weights for ``log_w`` (k, B): ``{what they are: weights}``."""
    k = log_w.shape[0]
    return {"the softmax over the B examples (axis 1), not over the k samples (axis 0): each "
            "example's k weights sum to 1": importance_weights(log_w, axis=1),
            "the unnormalised weights exp(log w): divide them by their sum over the k samples":
                np.exp(log_w),
            "exp(log w - max) without dividing by its sum over the k samples":
                np.exp(log_w - log_w.max(axis=0)),
            f"the uniform weights 1/k = 1/{k}: that gives the k-sample ELBO's gradient, not IWAE's, "
            "whose weights are the softmax of the log weights over the samples":
                np.full(log_w.shape, 1 / k)}


def iwae_case():
    """The exercise's IWAE objective after ``forward(x, eps=eps)``, without npvae's importance
    weights (the learner's importance_weights make them), grads zero: (objective, x, eps)."""
    rng = np.random.default_rng(14)
    model = VAE(x_dim=6, hidden=(5,), latent=3, activation="tanh", dtype="float64", seed=14)
    for p in model.params.values():
        p += rng.normal(0.0, 0.3, p.shape)
    x, eps = rng.random((B, 6)), rng.standard_normal((K, B, 3))
    objective = KSampleObjective(model, K, "iwae")
    objective.forward(x, eps=eps)
    del objective.weights
    model.dtheta[...] = 0
    return objective, x, eps


def iwae_objective():
    return iwae_case()[0]


def objective_grads(objective):
    """``read_back`` of the child: the model's parameter gradients after the learner's call."""
    return dict(objective.model.grads)


def _iwae_reference(objective, x, eps):
    """npvae's IWAE gradients (dout (k, B, D), dmu, dlogvar) for batch ``x`` and noise ``eps``,
    and the usual wrong ones, ``{message: (dout, dmu, dlogvar)}``.

    The wrong ones come from npvae's own backward with a piece changed: the
    weights, the prior's term (z held at 0 in it), the decoder's dz (held at
    0, leaving log q's direct term alone), or the objective ("elbo").
    """
    model = objective.model
    objective.forward(x, eps=eps)
    lw, wt = objective.lw, objective.weights

    def handed_with(backward=objective.backward, weights=wt, z=lw.z, decoder_dz=True):
        objective.weights, objective.lw = weights, lw._replace(z=z)
        dout, dmu, dlogvar = handed(model, backward, decoder_dz)
        objective.weights, objective.lw = wt, lw
        return dout.reshape(lw.out.shape), dmu, dlogvar

    no_z = np.zeros_like(lw.z)
    ref, no_prior, direct = handed_with(), handed_with(z=no_z), handed_with(z=no_z, decoder_dz=False)
    elbo = KSampleObjective(model, objective.k, "elbo")
    elbo.forward(x, eps=eps)
    return ref, {
        **{f"uses {what}": handed_with(weights=w) for what, w in _weight_mistakes(lw.log_w).items()},
        'is the gradient of the k-sample ELBO with the KL in closed form (objective "elbo": '
        "vae_backward's, averaged over the k samples), not IWAE's": handed_with(elbo.backward),
        f"is B = {B} times the right answer: each sample's weight is wt / B, the 1/B of the batch "
        "mean is missing": [B * t for t in ref],
        "lacks the prior's term: -log p(z) = |z|^2 / 2 + const adds c z to the decoder's dz": no_prior,
        "lacks log q's direct term: with eps held, log q = -1/2 sum(eps^2 + logvar + log 2 pi), "
        "-1/2 per sample, weighted by c": [*ref[:2], ref[2] - direct[2]],
        "adds log q's direct term where it subtracts it: -log w holds +log q, whose direct "
        "derivative is -1/2 per sample": [*ref[:2], ref[2] - 2 * direct[2]],
        "has only the decoder's path: the prior's c z and log q's direct -1/2 are missing":
            [*no_prior[:2], no_prior[2] - direct[2]],
        "has shape (k B, D), as the decoder's backward takes it: return dout as (k, B, D)":
            [ref[0].reshape(-1, ref[0].shape[-1]), *ref[1:]]}


def check_iwae(attempt):
    rng = np.random.default_rng(140)
    log_w = 3 * rng.standard_normal((K, B))
    wrong = {f"are {what}": w for what, w in _weight_mistakes(log_w).items()}
    got = attempt.call("importance_weights", ["importance_weights"], log_w.copy())
    if got and attempt.check("importance_weights", got[0], importance_weights(log_w), candidates=wrong):
        check_large_log_weights(attempt, "importance_weights", importance_weights)

    names = ["dout", "dmu", "dlogvar"]
    got = attempt.call("iwae_backward", names, Built(iwae_objective), read_back=objective_grads)
    if got is None:
        return
    got_grads = attempt.extra
    objective, x, eps = iwae_case()
    model = objective.model
    ref, mistakes = _iwae_reference(objective, x, eps)
    terms = objective.forward(x, eps=eps)
    swapped = swapped_grads(model, objective.backward)
    objective.backward()
    ref_grads = {k: v.copy() for k, v in model.grads.items()}
    floor = noise_floor(abs(terms.recon) + abs(terms.kl))

    def loss():
        return objective.forward(x, eps=eps).loss

    numeric = [*fd_holding(model.decoder, "forward", objective.lw.out.reshape(K * B, -1).copy(), loss),
               *fd_holding(model, "encode", (objective.mu.copy(), objective.logvar.copy()), loss)]
    ok = {}
    for i, tensor in enumerate(names):
        wrong = {m: v[i] for m, v in mistakes.items() if not _close(v[i], ref[i])}
        ok[tensor] = attempt.check(tensor, got[i], ref[i], numeric=numeric[i].reshape(ref[i].shape),
                                   floor=floor, candidates=wrong)
    check_parameters(attempt, model, got_grads, ref_grads, loss, floor,
                     {"decoder": None if ok["dout"] else "is wrong because dout is (the decoder "
                                                         "backpropagates it)",
                      "encoder": None if ok["dmu"] and ok["dlogvar"] else ENCODER_BLAMED},
                     {k: {SWAPPED: g} for k, g in swapped.items() if k.startswith("encoder")})


IWAE_BACKWARD = """
    model, lw, x = objective.model, objective.lw, objective.x
    k, B, D = lw.out.shape
    c = importance_weights(lw.log_w) / B                     # each sample's weight in the loss
    dout = model.nll_backward(c, lw.out, x)                  # (k, B, D)
    dz = model.decoder.backward(dout.reshape(k * B, D)).reshape(lw.z.shape)
    dz = dz + c[..., None] * lw.z                            # -log p(z) = |z|^2 / 2: the prior's term
    dmu, dlogvar = reparameterize_backward(dz, objective.logvar, objective.eps)
    dmu = dmu.sum(axis=0)                                    # the k samples share mu and logvar
    dlogvar = dlogvar.sum(axis=0) - 0.5 * c.sum(axis=0)[:, None]   # log q's direct -1/2 per sample
    model.encoder.backward(np.concatenate([dmu, dlogvar], axis=1), need_dx=False)
    return dout, dmu, dlogvar"""

EXERCISES = [
    Exercise("iw_bound", "10_iw_bound.py", ("logmeanexp", "log_weights", "iw_bound"),
             "importance-weighted-bound", check_iw_bound, {
                 "logmeanexp": """
                     m = a.max(axis=axis, keepdims=True)              # the largest exponent becomes 0
                     return np.squeeze(m, axis) + np.log(np.mean(np.exp(a - m), axis=axis))""",
                 "log_weights": """
                     log_pz = -0.5 * (math.log(2 * math.pi) + z**2).sum(axis=-1)
                     log_q = -0.5 * (math.log(2 * math.pi) + logvar + (z - mu)**2 / np.exp(logvar)).sum(axis=-1)
                     return log_px_z + log_pz - log_q""",
                 "iw_bound": "return logmeanexp(log_w, axis=0).mean()"},
             "log-mean-exp and the importance-weighted bound"),
    Exercise("iwae", "14_iwae.py", ("importance_weights", "iwae_backward"), "importance-weighted-training",
             check_iwae, {
                 "importance_weights": """
                     e = np.exp(log_w - log_w.max(axis=0))            # the largest exponent is 0
                     return e / e.sum(axis=0)""",
                 "iwae_backward": IWAE_BACKWARD},
             "the IWAE backward: importance weights (a softmax over the samples) and every path"),
]
