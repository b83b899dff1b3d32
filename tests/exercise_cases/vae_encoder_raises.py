"""vae_backward raises in the encoder's backward (a wrong shape): one report, no 'fill model.grads'."""

import numpy as np

from npvae.losses import gaussian_kl_backward
from npvae.reparam import reparameterize_backward


def vae_backward(model):
    B = model.x.shape[0]
    dz = model.decoder.backward(model.nll_backward(np.full(B, 1.0 / B), model.out, model.x))
    dmu_recon, dlogvar_recon = reparameterize_backward(dz, model.logvar, model.eps)
    dmu_kl, dlogvar_kl = gaussian_kl_backward(np.full(B, model.beta_now / B), model.mu, model.logvar)
    dmu, dlogvar = dmu_recon + dmu_kl, dlogvar_recon + dlogvar_kl
    model.encoder.backward(np.concatenate([dmu, dlogvar], axis=0), need_dx=False)
    return dmu, dlogvar
