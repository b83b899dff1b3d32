"""Tutorial 07: the whole VAE backward, its two paths into mu and logvar, and every parameter.

The learner's ``vae_backward(model)`` runs in the child on a model the child
builds itself (``Built(vae_model)``); its ``model.grads`` come back. The
grader builds its own copy, the same, for the reference: whatever the
learner's code does to its model (``model.beta = 0``) cannot change it.
"""

import numpy as np

from ..gradcheck import noise_floor
from ..vae import VAE
from .isolation import Built
from .judging import OK, TODO, WRONG, B, Exercise, fd, judge

ENCODER_BLAMED = "is wrong because dmu and dlogvar are (the encoder backpropagates them)"
SWAPPED = ("is the encoder's gradient for [dlogvar | dmu]: the encoder's output is [mu | logvar], so "
           "hand its backward np.concatenate([dmu, dlogvar], axis=1), in that order")


def vae_case():
    """The exercise's float64 VAE after ``forward(x, eps=eps)``, its grads zero: (model, x, eps).

    The same in the grader and in the child (its own seeds)."""
    rng = np.random.default_rng(6)
    model = VAE(x_dim=6, hidden=(5,), latent=3, activation="tanh", beta=0.7, dtype="float64", seed=6)
    for p in model.params.values():
        p += rng.normal(0.0, 0.1, p.shape)
    x, eps = rng.random((B, 6)), rng.standard_normal((B, 3))
    model.forward(x, eps=eps)
    model.dtheta[...] = 0
    return model, x, eps


def vae_model():
    return vae_case()[0]


def model_grads(model):
    """``read_back`` of the child: the model's parameter gradients after the learner's call."""
    return {k: v for k, v in model.grads.items()}


def handed(model, backward, decoder_dz=True):
    """What npvae's ``backward()`` hands the decoder's and the encoder's backward: (dout, dmu, dlogvar).

    dout as the decoder receives it; dmu and dlogvar the two halves of the
    encoder's dh (which goes no further). ``decoder_dz=False`` replaces the
    decoder's dz with zeros, leaving only the paths that bypass the decoder.
    """
    seen, decoder_backward = {}, model.decoder.backward

    def decoder(dout, need_dx=True):
        seen["dout"] = dout.copy()
        dz = decoder_backward(dout, need_dx)
        return dz if decoder_dz else np.zeros_like(dz)

    model.decoder.backward = decoder
    model.encoder.backward = lambda dh, need_dx=True: seen.update(dh=dh.copy())
    try:
        backward()
    finally:
        del model.decoder.backward, model.encoder.backward
    return (seen["dout"], *np.split(seen["dh"], 2, axis=1))


def swapped_grads(model, backward):
    """The parameter gradients of npvae's ``backward()`` with the encoder handed [dlogvar | dmu]."""
    encoder_backward = model.encoder.backward
    model.encoder.backward = lambda dh, need_dx=True: encoder_backward(
        np.concatenate(np.split(dh, 2, axis=1)[::-1], axis=1), need_dx)
    try:
        backward()
    finally:
        del model.encoder.backward
    return {k: v.copy() for k, v in model.grads.items()}


def fd_holding(obj, method, held, loss):
    """Central differences of ``loss()`` w.r.t. the arrays ``held``, while ``obj.method`` returns them.

    ``held`` is one array or a tuple of arrays, returned as they are (and
    perturbed in place), whatever ``obj.method`` is called with.
    """
    setattr(obj, method, lambda *args, **kwargs: held)
    try:
        return fd(loss, *(held if isinstance(held, tuple) else (held,)))
    finally:
        delattr(obj, method)


def check_parameters(attempt, model, got_grads, ref_grads, loss, floor, blame, candidates):
    """A line for each of ``model.grads``, against central differences of ``loss()``.

    ``blame`` maps a network ("encoder", "decoder") to the reason its wrong
    gradients are given, when the learner's tensor it backpropagates is wrong;
    ``candidates`` maps each key to usual wrong gradients (as ``judge``'s).
    """
    for k, p in model.params.items():
        (num,) = fd(loss, p)
        if k not in got_grads:
            attempt.add([k], WRONG, "is missing from model.grads: fill the dict npvae's layers hold")
            continue
        named = candidates.get(k, {})
        status, detail = judge(got_grads[k], ref_grads[k], numeric=num, floor=floor, candidates=named)
        got = got_grads[k]
        if status != OK and detail not in named:
            if isinstance(got, np.ndarray) and got.dtype.kind in "fiu" and not got.any():
                detail = "is all zeros: fill model.grads (the decoder's and the encoder's backward do)"
            elif blame.get(k.partition(".")[0]):
                detail = blame[k.partition(".")[0]]
        attempt.add([k], status, detail)


def check_vae_backward(attempt):
    got = attempt.call("vae_backward", ["dmu", "dlogvar"], Built(vae_model), read_back=model_grads)
    if got is None:
        return  # not implemented, raised, exited or hung: its line says so; its grads are not judged
    got_grads = attempt.extra
    model, x, eps = vae_case()

    # The reference, and its two paths into mu and logvar: the reconstruction's
    # through z (beta = 0) and the KL's directly (the rest).
    def encoder_gradient(beta):
        return handed(model, lambda: (model.forward(x, eps=eps, beta=beta), model.backward()))[1:]

    beta = model.beta
    both, recon = encoder_gradient(beta), encoder_gradient(0.0)
    kl = [t - r for t, r in zip(both, recon)]
    terms = model.forward(x, eps=eps)
    swapped = swapped_grads(model, model.backward)
    model.backward()
    ref_grads = {k: v.copy() for k, v in model.grads.items()}
    floor = noise_floor(abs(terms.recon) + abs(terms.kl))

    def loss():
        return model.forward(x, eps=eps).loss

    numeric = fd_holding(model, "encode", tuple(t.copy() for t in model.encode(x)), loss)
    paths_ok = True
    for i, tensor in enumerate(["dmu", "dlogvar"]):
        wrong = {"has only the KL path: the reconstruction's path through z = mu + exp(logvar / 2) eps "
                 "is missing": kl[i],
                 "has only the reconstruction path (through z): the KL's own gradient is missing": recon[i],
                 "has the KL path without beta (the KL's weight)": recon[i] + kl[i] / beta,
                 f"lacks the 1/B of the batch mean on the KL path (B = {B})": recon[i] + B * kl[i],
                 f"lacks the 1/B of the batch mean on the reconstruction path (B = {B})": B * recon[i] + kl[i],
                 "subtracts the KL path where it adds it": recon[i] - kl[i]}
        paths_ok &= attempt.check(tensor, got[i], both[i], numeric=numeric[i], floor=floor, candidates=wrong)
    check_parameters(attempt, model, got_grads, ref_grads, loss, floor,
                     {"encoder": None if paths_ok else ENCODER_BLAMED},
                     {k: {SWAPPED: g} for k, g in swapped.items() if k.startswith("encoder")})


VAE_BACKWARD = """
    B = model.x.shape[0]
    dout = model.nll_backward(np.full(B, 1.0 / B), model.out, model.x)   # each example's weight 1/B
    dz = model.decoder.backward(dout)
    dmu_recon, dlogvar_recon = reparameterize_backward(dz, model.logvar, model.eps)
    dmu_kl, dlogvar_kl = gaussian_kl_backward(np.full(B, model.beta_now / B), model.mu, model.logvar)
    dmu, dlogvar = dmu_recon + dmu_kl, dlogvar_recon + dlogvar_kl       # the two paths add
    model.encoder.backward(np.concatenate([dmu, dlogvar], axis=1), need_dx=False)
    return dmu, dlogvar"""

EXERCISES = [
    Exercise("vae_backward", "07_vae_backward.py", ("vae_backward",), "the-whole-elbo", check_vae_backward,
             {"vae_backward": VAE_BACKWARD}, "the whole VAE backward: the two paths into mu and logvar"),
]
