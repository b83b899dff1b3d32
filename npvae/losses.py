"""The terms of the VAE loss: reconstruction likelihoods and the Gaussian KL.

Reductions are explicit and uniform. Every function here returns one value
per example, summed over pixels (D) or latent dimensions (Z): shape (B,)
from inputs of shape (B, D) or (B, Z). Any leading axes work the same way
(K samples of B examples: (K, B, D) -> (K, B)). The model then takes the
mean over the batch, so losses are in **nats per example**.

Each ``*_backward(dout, ...)`` takes ``dout``, the gradient of the final loss
with respect to each example's value (shape (B,), or a scalar such as 1/B
for a batch mean), and returns the gradient with respect to the inputs.

Derivations: ``tutorials/derivations.md``, sections "Bernoulli likelihood",
"Gaussian likelihood", "Gaussian KL" and "Importance-weighted bound".
"""

import math

from .activations import sigmoid
from .backend import xp_of

LOG_2PI = math.log(2 * math.pi)


def _per_example(dout, like):
    """``dout`` shaped to broadcast against an array of shape (..., D)."""
    dout = xp_of(like).asarray(dout, dtype=like.dtype)
    return dout[..., None]


# --- Bernoulli likelihood (binary or [0, 1] pixels; the decoder gives logits)

def bernoulli_nll(logits, x):
    """-log p(x | logits) for Bernoulli pixels, summed over pixels.

        nll = sum_j -x_j log p_j - (1 - x_j) log(1 - p_j),   p = sigmoid(l)
            = sum_j softplus(l_j) - x_j l_j
            = sum_j max(l_j, 0) - x_j l_j + log1p(exp(-|l_j|))

    using -log sigmoid(l) = softplus(-l), -log(1 - sigmoid(l)) = softplus(l)
    and softplus(l) = max(l, 0) + log1p(exp(-|l|)). The exponent is never
    positive, so nothing overflows or takes log(0): logits of +/-1e4 give
    exact, finite values. Keeping log1p(exp(-|l|)) apart from max(l, 0) - x l
    matters: for a confident right answer (l = 11, x = 1) the first two terms
    cancel exactly and the small third one keeps all its digits, where
    softplus(l) - x l would subtract two nearly equal numbers.
    Shapes: logits, x (B, D) -> (B,).
    """
    xp = xp_of(logits)
    return (xp.maximum(logits, 0) - x * logits + xp.log1p(xp.exp(-xp.abs(logits)))).sum(axis=-1)


def bernoulli_nll_backward(dout, logits, x):
    """d nll / d logits = dout * (sigmoid(l) - x). Shapes: (B,), (B, D) -> (B, D).

    Derivation: ``derivations.md#bernoulli-likelihood``.
    """
    return (sigmoid(logits) - x) * _per_example(dout, logits)


# --- Gaussian likelihood with a fixed standard deviation sigma

def gaussian_nll(mean, x, sigma=1.0):
    """-log N(x; mean, sigma^2 I), summed over pixels.

        nll = sum_j (x_j - mean_j)^2 / (2 sigma^2) + D/2 log(2 pi sigma^2)

    The second term is a constant: dropping it and taking sigma^2 = 1/2
    leaves the summed squared error sum_j (x_j - mean_j)^2, so "MSE summed
    over pixels" is this likelihood minus D/2 log(pi). A *mean* over pixels
    instead divides the reconstruction term by D and so multiplies the KL's
    weight by D. Shapes: mean, x (B, D) -> (B,).
    """
    diff = x - mean
    D = x.shape[-1]
    return (diff * diff).sum(axis=-1) / (2 * sigma**2) + 0.5 * D * (LOG_2PI + 2 * math.log(sigma))


def gaussian_nll_backward(dout, mean, x, sigma=1.0):
    """d nll / d mean = dout * (mean - x) / sigma^2. Shapes: (B,), (B, D) -> (B, D).

    Derivation: ``derivations.md#gaussian-likelihood``.
    """
    return (mean - x) * (_per_example(dout, mean) / sigma**2)


# --- KL(q(z|x) || p(z)) with q = N(mu, diag exp(logvar)) and p = N(0, I)

def gaussian_kl_per_dim(mu, logvar):
    """The KL of each latent dimension: 1/2 (exp(logvar) + mu^2 - 1 - logvar).

    Shapes: mu, logvar (B, Z) -> (B, Z). Summing over Z gives ``gaussian_kl``;
    averaging over B shows which dimensions carry information (active units).
    """
    # exp(logvar) - 1 as expm1(logvar): exact near logvar = 0, where a
    # posterior that has collapsed onto the prior sits.
    xp = xp_of(mu)
    return 0.5 * (xp.expm1(logvar) - logvar + mu * mu)


def gaussian_kl(mu, logvar):
    """KL(N(mu, diag exp(logvar)) || N(0, I)) in closed form, summed over Z.

        kl = 1/2 sum_k (exp(logvar_k) + mu_k^2 - 1 - logvar_k)

    Shapes: mu, logvar (B, Z) -> (B,).
    """
    return gaussian_kl_per_dim(mu, logvar).sum(axis=-1)


def gaussian_kl_backward(dout, mu, logvar):
    """Gradients of the KL: (dmu, dlogvar), each (B, Z).

        d kl / d mu     = mu
        d kl / d logvar = 1/2 (exp(logvar) - 1)

    Derivation: ``derivations.md#gaussian-kl``.
    """
    xp = xp_of(mu)
    dout = _per_example(dout, mu)
    return dout * mu, dout * (0.5 * xp.expm1(logvar))


# --- log densities, for the importance-weighted bound (no gradients needed)

def log_normal(z, mu, logvar):
    """log N(z; mu, diag exp(logvar)), summed over the last axis.

        log q = -1/2 sum_k (log 2 pi + logvar_k + (z_k - mu_k)^2 exp(-logvar_k))

    Broadcasts: z (K, B, Z) against mu, logvar (B, Z) -> (K, B).
    """
    xp = xp_of(z)
    diff = z - mu
    return -0.5 * (LOG_2PI + logvar + diff * diff * xp.exp(-logvar)).sum(axis=-1)


def log_standard_normal(z):
    """log N(z; 0, I), summed over the last axis: (..., Z) -> (...)."""
    return -0.5 * (LOG_2PI + z * z).sum(axis=-1)


LIKELIHOODS = ("bernoulli", "gaussian")
