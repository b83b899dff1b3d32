"""Tutorial 16: the backward through the second stochastic layer, into h1.

Two pure functions: ``q_sample_backward`` (one q layer: the path through
h = mu + exp(logvar / 2) eps and log q's direct term), and ``h1_backward``
(the gradient into h1 from log p(h1 | h2), path A, and back through h2 and
q(h2 | h1), path B). The case is an ``npvae.hvae.HVAE`` whose q(h2 | h1) and
p(h1 | h2) are one affine layer each, so their backward is a matrix the
learner is handed; the references are npvae's own ``HVAE.backward`` (what
reaches q(h1 | x)'s and q(h2 | h1)'s networks) and central differences of
the loss.
"""

import numpy as np

from ..gradcheck import noise_floor
from ..hvae import HVAE, q_sample_backward
from ..losses import log_normal_at_eps, log_normal_backward
from ..reparam import reparameterize
from .judging import OK, B, Exercise, _close, fd, inputs
from .vae import fd_holding

Z1, Z2 = 4, 3  # the sizes of h1 and h2


def check_q_sample(attempt):
    rng = np.random.default_rng(16)
    mu, logvar, eps, dh = (inputs(rng, (B, Z2)) for _ in range(4))
    ckl = rng.random(B) + 0.5
    ref = q_sample_backward(dh, logvar, eps, ckl[:, None])

    def loss():  # dh . h + sum ckl log q(h | .): what q_sample_backward differentiates
        return float((dh * reparameterize(mu, logvar, eps)[0]).sum() + (ckl * log_normal_at_eps(eps, logvar)).sum())

    numeric = fd(loss, mu, logvar)
    direct = np.broadcast_to(-0.5 * ckl[:, None], ref[1].shape)
    path = ref[1] - direct
    wrong = {"adds log q's direct term where it subtracts it: the loss holds +log q = -1/2 sum(eps^2 + "
             "logvar + log 2 pi), whose derivative in logvar is -1/2, weighted by ckl": path - direct,
             "lacks log q's direct term: with eps held, log q still depends on logvar (-1/2 per unit, "
             "weighted by ckl)": path,
             "has log q's direct -1/2 without its weight ckl": path - 0.5,
             "uses the variance exp(logvar) where the standard deviation exp(logvar / 2) belongs: "
             "dh/dlogvar = eps exp(logvar / 2) / 2": q_sample_backward(dh, 2 * logvar, eps, ckl[:, None])[1]}
    got = attempt.call("q_sample_backward", ["dmu", "dlogvar"], dh.copy(), logvar.copy(), eps.copy(),
                       ckl.copy())
    if got:
        attempt.check("dmu", got[0], ref[0], numeric=numeric[0])
        attempt.check("dlogvar", got[1], ref[1], numeric=numeric[1], candidates=wrong)


def hvae_case():
    """The exercise's two-layer float64 HVAE after ``forward(x, eps=eps)``: (model, x, eps).

    q(h2 | h1) and p(h1 | h2) are one Dense layer each (no hidden layer), so
    [mu2 | logvar2] = h1 W_q2 + b and [pmu | plogvar] = h2 W_p1 + b."""
    rng = np.random.default_rng(161)
    model = HVAE(x_dim=6, hidden=((5,), ()), latent=(Z1, Z2), decoder_hidden=((5,), ()),
                 activation="tanh", dtype="float64", seed=16)
    for p in model.params.values():
        p += rng.normal(0.0, 0.3, p.shape)
    x, eps = rng.random((B, 6)), rng.standard_normal((B, Z1 + Z2))
    model.forward(x, eps=eps)
    return model, x, eps


def handed(model):
    """npvae's backward, and what it hands q(h1 | x)'s, q(h2 | h1)'s and p(x | h1)'s networks:
    (dh1, dh2, dh1_x), each (B, Z): d loss / d h1 complete, d loss / d h2 before it goes down
    through q(h2 | h1) (the halves dmu1 and dmu2 of their backwards' inputs, k = 1), and the
    gradient into h1 from p(x | h1) alone."""
    seen = {}

    def spy(name):
        net, original = model.nets[name], model.nets[name].backward

        def backward(dout, need_dx=True):
            dx = original(dout, need_dx)
            seen[name] = (dout.copy(), dx)
            return dx
        net.backward = backward

    for name in ("q_h1", "q_h2", "p_x"):
        spy(name)
    try:
        model.backward()
    finally:
        for name in ("q_h1", "q_h2", "p_x"):
            del model.nets[name].backward
    return seen["q_h1"][0][:, :Z1], seen["q_h2"][0][:, :Z2], seen["p_x"][1]


def learner_inputs(model, eps):
    """What ``h1_backward`` is given, from the model's last forward: a dict by argument name."""
    cache = model._own.cache
    pmu, plogvar = cache["p"][0]
    given = dict(h1=cache["hs"][0], h2=cache["hs"][1], eps2=eps[:, Z1:], logvar2=cache["logvars"][1],
                 pmu=pmu, plogvar=plogvar, W_q2=model.params["q_h2.0.W"], W_p1=model.params["p_h1.0.W"])
    return {k: v.copy() for k, v in given.items()}


def through_q2(a, dh2, c, logvar2=None):
    """Path B for ``dh2``: back through h2 = mu2 + exp(logvar2 / 2) eps2 and log q(h2 | h1)'s direct
    term (``q_sample_backward``), then through q(h2 | h1)'s layer, W_q2. ``logvar2``: the one read."""
    dmu2, dlogvar2 = q_sample_backward(dh2, a["logvar2"] if logvar2 is None else logvar2, a["eps2"], c[:, None])
    return np.concatenate([dmu2, dlogvar2], axis=1) @ a["W_q2"].T


def paths(a, c, plogvar_read=None, logvar2_read=None):
    """npvae's pieces composed by hand: (path A, path B, dh2).

    ``plogvar_read`` and ``logvar2_read`` replace the log-variance the
    formulas read (plogvar / 2 or 2 logvar2: a learner's standard deviation
    for the variance, or the other way round), leaving everything else right.
    """
    plogvar = a["plogvar"] if plogvar_read is None else plogvar_read
    path_a, dpmu, dplogvar = log_normal_backward(-c, a["h1"], a["pmu"], plogvar)   # -c log p(h1 | h2)
    dh2 = c[:, None] * a["h2"] + np.concatenate([dpmu, dplogvar], axis=1) @ a["W_p1"].T
    return path_a, through_q2(a, dh2, c, logvar2_read), dh2


def h1_mistakes(a, dh1_x, c):
    """The usual wrong (dh1, dh2), by message."""
    path_a, path_b, dh2 = paths(a, c)
    direct = through_q2(a, np.zeros_like(dh2), c)             # log q(h2 | h1)'s direct term alone
    std_p = paths(a, c, plogvar_read=a["plogvar"] / 2)
    std_q = paths(a, c, logvar2_read=2 * a["logvar2"])
    through_p = dh2 - c[:, None] * a["h2"]
    return {
        "lacks path B, the gradient back through h2 and q(h2 | h1)'s layer: h2 = mu2(h1) + "
        "exp(logvar2(h1) / 2) eps2 depends on h1, so [dmu2 | dlogvar2] W_q2^T adds to dh1":
            (dh1_x + path_a, dh2),
        "lacks path A, log p(h1 | h2)'s own gradient in h1: -log p(h1 | h2) adds (h1 - pmu) exp(-plogvar) / B":
            (dh1_x + path_b, dh2),
        "has only the likelihood's gradient dh1_x: both paths from the second layer (A: log p(h1 | h2); "
        "B: back through h2 and q(h2 | h1)) are missing": (dh1_x, dh2),
        f"lacks the 1/B of the batch mean on the second layer's terms (B = {B}): dh1_x has it already":
            (dh1_x + B * (path_a + path_b), B * dh2),
        "adds log q(h2 | h1)'s direct term where it subtracts it: with eps2 held, log q = -1/2 sum(eps2^2 "
        "+ logvar2 + log 2 pi), so dlogvar2 gets -1/(2B), not +1/(2B)": (dh1_x + path_a + path_b - 2 * direct, dh2),
        "lacks log q(h2 | h1)'s direct term, -1/(2B) in dlogvar2: with eps2 held it still depends on "
        "logvar2, and logvar2 on h1": (dh1_x + path_a + path_b - direct, dh2),
        "subtracts path A where it adds it: -log p(h1 | h2) is in the loss, its gradient in h1 is "
        "+(h1 - pmu) exp(-plogvar) / B": (dh1_x - path_a + path_b, dh2),
        "divides by the standard deviation exp(plogvar / 2) in log p(h1 | h2)'s gradient where the variance "
        "exp(plogvar) belongs": (dh1_x + std_p[0] + std_p[1], std_p[2]),
        "uses the variance exp(logvar2) in dlogvar2 where the standard deviation exp(logvar2 / 2) belongs: "
        "dh2/dlogvar2 = eps2 exp(logvar2 / 2) / 2": (dh1_x + path_a + std_q[1], dh2),
        "lacks the prior's term in dh2: -log p(h2) = |h2|^2 / 2 + const adds h2 / B":
            (dh1_x + path_a + through_q2(a, through_p, c), through_p),
        "lacks log p(h1 | h2)'s path into h2, back through p(h1 | h2)'s layer: [dpmu | dplogvar] W_p1^T":
            (dh1_x + path_a + through_q2(a, c[:, None] * a["h2"], c), c[:, None] * a["h2"]),
    }


DH2_BLAMED = "is wrong because dh2 is (path B takes dh2 back through q(h2 | h1) into h1)"


def check_h1_backward(attempt):
    model, x, eps = hvae_case()
    a = learner_inputs(model, eps)
    ref_dh1, ref_dh2, dh1_x = handed(model)
    c = np.full(B, 1.0 / B)
    terms = model.forward(x, eps=eps)
    floor = noise_floor(abs(terms.recon) + abs(terms.kl))

    def loss():
        return model.forward(x, eps=eps).loss

    held = model.nets["q_h1"].forward(x).copy()    # [mu1 | logvar1]: h1 = mu1 + s1 eps1 moves with mu1
    num_dh1 = fd_holding(model.nets["q_h1"], "forward", held, loss)[0][:, :Z1]
    held = model.nets["q_h2"].forward(a["h1"]).copy()
    num_dh2 = fd_holding(model.nets["q_h2"], "forward", held, loss)[0][:, :Z2]

    mistakes = h1_mistakes(a, dh1_x, c)
    got = attempt.call("h1_backward", ["dh1", "dh2"], dh1_x.copy(), *(a[k].copy() for k in (
        "h1", "h2", "eps2", "logvar2", "pmu", "plogvar", "W_q2", "W_p1")))
    if got is None:
        return
    dh2_ok = attempt.check("dh2", got[1], ref_dh2, numeric=num_dh2, floor=floor,
                           candidates={m: v[1] for m, v in mistakes.items() if not _close(v[1], ref_dh2)})
    attempt.check("dh1", got[0], ref_dh1, numeric=num_dh1, floor=floor,
                  candidates={m: v[0] for m, v in mistakes.items() if not _close(v[0], ref_dh1)})
    line = attempt.lines[-1]
    if line.status != OK and not dh2_ok and line.detail not in mistakes:
        line.detail = DH2_BLAMED


def check_hvae(attempt):
    check_q_sample(attempt)
    check_h1_backward(attempt)


Q_SAMPLE_BACKWARD = """
    dmu = dh.copy()                                          # h = mu + exp(logvar / 2) eps
    dlogvar = dh * eps * 0.5 * np.exp(logvar / 2) - 0.5 * ckl[:, None]   # log q's direct term
    return dmu, dlogvar"""

H1_BACKWARD = """
    B = h1.shape[0]
    c = np.full((B, 1), 1.0 / B)                             # each example's weight in the batch mean
    r = (h1 - pmu) * np.exp(-plogvar)
    path_a = c * r                                           # -log p(h1 | h2), directly in h1
    dpmu, dplogvar = -c * r, -c * 0.5 * ((h1 - pmu) * r - 1)
    dh2 = c * h2 + np.concatenate([dpmu, dplogvar], axis=1) @ W_p1.T   # p(h2); p(h1 | h2) through pmu, plogvar
    dmu2, dlogvar2 = q_sample_backward(dh2, logvar2, eps2, c[:, 0])
    path_b = np.concatenate([dmu2, dlogvar2], axis=1) @ W_q2.T        # back through q(h2 | h1)'s layer
    return dh1_x + path_a + path_b, dh2"""

EXERCISES = [
    Exercise("hvae", "16_hvae.py", ("q_sample_backward", "h1_backward"), "two-stochastic-layers",
             check_hvae,
             {"q_sample_backward": Q_SAMPLE_BACKWARD, "h1_backward": H1_BACKWARD},
             "two stochastic layers: the gradient into h1 from log p(h1 | h2) and back through h2"),
]
