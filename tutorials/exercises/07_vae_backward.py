"""Tutorial 07 exercise: the whole VAE backward, with its two paths into mu and logvar.

Derivation: tutorials/derivations.md#the-whole-elbo. Write the body, then

    npvae exercises check vae_backward

compares dmu, dlogvar and every parameter gradient with central differences
of the loss, and says which path is missing if one is. Stuck:
`--show-solution` prints a solution.
"""

import numpy as np

from npvae.losses import gaussian_kl_backward  # noqa: F401  (the pieces of earlier exercises)
from npvae.reparam import reparameterize_backward  # noqa: F401


def vae_backward(model):
    """Fill ``model.grads`` with d loss / d parameter, after ``model.forward(x, eps=eps)``.

    loss = mean_i nll_i + beta * mean_i kl_i, in nats per example (npvae.VAE).
    What forward kept, on ``model``: x (B, D), mu and logvar (B, Z), eps and
    z (B, Z), out (B, D) (the decoder's output), beta_now (beta).
    The backwards to combine: ``model.nll_backward(dout, out, x)``,
    ``model.decoder.backward(dout_out) -> dz``, ``reparameterize_backward``,
    ``gaussian_kl_backward``, and ``model.encoder.backward(dh, need_dx=False)``,
    where dh (B, 2Z) is [dmu | dlogvar] side by side (np.concatenate, axis 1).
    Layers' backwards fill their own grads, which are model.grads.

    Returns (dmu, dlogvar): the gradient of the loss with respect to the
    encoder's outputs. Shapes: dmu, dlogvar (B, Z).
    Derivation: derivations.md#the-whole-elbo.

    Hints: the mean over the batch makes each example's dout 1/B. mu and
    logvar reach the loss along two paths, through z into the reconstruction
    and directly into the KL (weighted by beta): add the two.
    """
    raise NotImplementedError("vae_backward: write it here")
