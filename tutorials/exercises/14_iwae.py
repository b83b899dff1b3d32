"""Tutorial 14 exercise: the IWAE backward, from the importance weights to every gradient.

Derivation: tutorials/derivations.md#importance-weighted-training. Write the
bodies, then

    npvae exercises check iwae

compares the weights with npvae's (also at log weights of +/-1000), and dout,
dmu, dlogvar and every parameter gradient with central differences of the
loss, and names the usual mistakes (the wrong axis, unnormalised or uniform
weights, a missing term). Stuck: `--show-solution` prints a solution.
"""

import numpy as np

from npvae.reparam import reparameterize_backward  # noqa: F401  (the piece of an earlier exercise)


def importance_weights(log_w):
    """The normalised importance weights: a softmax of ``log_w`` over the k samples (axis 0).

        wt_ib = w_ib / sum_j w_jb = exp(log w_ib) / sum_j exp(log w_jb)

    Shapes: log_w (k, B) -> wt (k, B), each column (one example's k samples)
    summing to 1. Derivation: derivations.md#importance-weighted-training.

    Hint: log weights of MNIST digits are around -100 nats, and exp(1000) is
    inf in float64. Subtract each column's largest log weight first: the
    softmax does not change, and the largest exponent is 0.
    """
    raise NotImplementedError("importance_weights: write it here")


def iwae_backward(objective):
    """Fill ``model.grads`` with d loss / d parameter for loss = -1/B sum_b log 1/k sum_i w_ib.

    Called after ``objective.forward(x, eps=eps)``, where ``objective`` is an
    ``npvae.iwae.KSampleObjective`` with objective "iwae" and k samples per
    example. What forward kept, on ``objective``: model, x (B, D), eps
    (k, B, Z), mu and logvar (B, Z), and lw, the log weights and their pieces:
    lw.log_w (k, B), lw.z (k, B, Z) = mu + exp(logvar / 2) eps, and lw.out
    (k, B, D), the decoder's output for each sample. Per sample,

        -log w_ib = nll(x_b | z_ib) - log p(z_ib) + log q(z_ib | x_b)

    and the loss's weight of sample i of example b is c_ib = wt_ib / B, with
    wt your importance_weights of lw.log_w. The backwards to combine:
    ``model.nll_backward(c, lw.out, x)`` (the likelihood's, with a weight per
    sample), ``model.decoder.backward(dout (k B, D)) -> dz (k B, Z)`` (the k
    samples go through the decoder as one batch, sample-major: reshape),
    ``reparameterize_backward(dz (k, B, Z), logvar, eps)`` (per sample; sum
    over the k samples that share mu and logvar), and
    ``model.encoder.backward(dh, need_dx=False)`` with dh = [dmu | dlogvar]
    (B, 2Z). Layers' backwards fill their own grads, which are model.grads.

    Returns (dout, dmu, dlogvar): the gradient of the loss with respect to the
    decoder's output with z held (what the decoder's backward receives) and
    to the encoder's outputs. Shapes: dout (k, B, D), dmu and dlogvar (B, Z).
    Derivation: derivations.md#importance-weighted-training.

    Hints: d/d log w_ib of log sum_j w_jb is wt_ib, so each sample's gradient
    of -log w is weighted by c (the k-sample ELBO weighs each by 1/(k B)).
    Besides the decoder's path, z meets the prior: d(-log p(z))/dz = z. And
    with eps held, log q(z | x) = -1/2 sum(eps^2 + logvar + log 2 pi): mu is
    gone, and logvar gets a direct -1/2 per sample, weighted by c.
    """
    raise NotImplementedError("iwae_backward: write it here")
