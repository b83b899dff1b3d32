"""importance_weights normalises over the B examples (axis 1), and iwae_backward, otherwise right,
uses them: the learner's own weights are what its backward is graded with."""

import numpy as np

from npvae.reparam import reparameterize_backward


def importance_weights(log_w):
    e = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def iwae_backward(objective):
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
    return dout, dmu, dlogvar
