"""The reparameterization trick (Kingma and Welling, 2014, section 2.4).

Sampling z ~ N(mu, diag exp(logvar)) directly has no gradient with respect
to mu and logvar. Writing the sample as a deterministic function of them and
of parameter-free noise,

    z = mu + exp(logvar / 2) * eps,    eps ~ N(0, I),

moves the randomness into ``eps`` and lets gradients flow to mu and logvar.
Note the **half**: exp(logvar / 2) is the standard deviation; scaling by
exp(logvar) (the variance) is a classic bug that every gradient check passes.

Derivation: ``tutorials/derivations.md``, section "Reparameterization".
"""

from .backend import xp_of


def reparameterize(mu, logvar, eps=None, rng=None):
    """Draw z = mu + exp(logvar / 2) * eps; return ``(z, eps)``.

    Shapes: mu, logvar (B, Z); eps (B, Z) or None. Pass ``eps`` to fix the
    noise (gradient checks do), or a ``Generator`` ``rng`` to draw it in the
    dtype of ``mu``. One of the two is required: there is no hidden global RNG.
    """
    if eps is None:
        if rng is None:
            raise ValueError("reparameterize needs eps or a random Generator rng")
        eps = rng.standard_normal(mu.shape, dtype=mu.dtype)
    return mu + xp_of(logvar).exp(0.5 * logvar) * eps, eps


def reparameterize_backward(dz, logvar, eps):
    """Gradients through z = mu + exp(logvar / 2) * eps: ``(dmu, dlogvar)``.

        dmu     = dz
        dlogvar = dz * eps * exp(logvar / 2) / 2

    Shapes: dz, logvar, eps (B, Z). Derivation: ``derivations.md#reparameterization``.
    """
    return dz, dz * eps * (0.5 * xp_of(logvar).exp(0.5 * logvar))
