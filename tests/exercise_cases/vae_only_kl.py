"""vae_backward has only the KL path: dmu and dlogvar wrong, and the encoder's grads with them."""

import numpy as np

from npvae.losses import gaussian_kl_backward


def vae_backward(model):
    B = model.x.shape[0]
    model.decoder.backward(model.nll_backward(np.full(B, 1.0 / B), model.out, model.x))
    dmu, dlogvar = gaussian_kl_backward(np.full(B, model.beta_now / B), model.mu, model.logvar)
    model.encoder.backward(np.concatenate([dmu, dlogvar], axis=1), need_dx=False)
    return dmu, dlogvar
