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

from . import parallel
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


def bernoulli_nll_linear(h, W, b, x, xW=None):
    """``bernoulli_nll(h @ W + b, x)`` for K decoder inputs per example, arranged for speed.

    The same sum as ``bernoulli_nll`` (its reference: the tests compare the
    two in float64) for logits l = h W + b from the decoder's last layer,

        nll = sum_j max(l_j, 0) + log1p(exp(-|l_j|)) - x_j l_j,

    with fewer passes over the K x B x D logits:

    - the data term is a product with the last layer: sum_j x_j l_j =
      h . (W x) + b . x, one (B, D) x (D, H) product ``xW`` and a dot per
      sample, not a multiply and a sum over K x B x D;
    - max(l, 0) = (l + |l|) / 2 reuses |l|, which exp(-|l|) needs anyway;
    - the two sums over pixels are one product with a vector of ones (BLAS),
      and the passes run in place on a scratch array.

    The softplus is the stable one of ``bernoulli_nll``, max(l, 0) +
    log1p(exp(-|l|)), with its two parts summed apart.

    Rounding: the terms are summed over pixels before they are combined, so
    a confidently right pixel's max(l, 0) - x l no longer cancels exactly
    inside one term (the sums it cancels in are about 200 nats on MNIST). In
    float32, on a 784-400-20 model trained 5 epochs, a sample's value is
    2e-5 nats rms from float64 (at most 2e-6 relative), where
    ``bernoulli_nll``'s is 4e-6 rms: both far below what the bound, a mean
    over examples of a log-mean-exp over samples, reports. In float64 the
    two forms agree to 1e-12 relative. Logits of +/-1e4 (a broken decoder)
    stay finite, but lose about 1e-7 of sum_j |l_j| to the cancellation,
    where ``bernoulli_nll`` stays exact.
    ``xW`` is x @ W.T (B, H) when the caller has it: it depends only on x,
    so compute it once per batch of examples, not once per chunk of samples.

    Shapes: h (B, K, H), W (H, D), b (D,), x (B, D), xW (B, H) -> (B, K).
    """
    xp = xp_of(h)
    B, K, H = h.shape
    rows, D = B * K, W.shape[1]
    work = xp.empty((2, rows, D), dtype=h.dtype)
    ones, sums = xp.ones(D, dtype=h.dtype), xp.empty((2, rows), dtype=h.dtype)
    h_rows = h.reshape(rows, H)

    def terms(i, j):  # rows i..j - 1 (blocks of rows across npvae's threads: npvae.parallel)
        logits, t = work[0, i:j], work[1, i:j]
        xp.matmul(h_rows[i:j], W, out=logits)
        logits += b
        xp.abs(logits, out=t)
        logits += t                                       # 2 max(l, 0)
        xp.log1p(xp.exp(xp.negative(t, out=t), out=t), out=t)
        xp.matmul(work[:, i:j], ones, out=sums[:, i:j])   # each summed over pixels
    parallel.elementwise(terms, rows, rows * D, xp)
    nll = 0.5 * sums[0] + sums[1]
    xW = xp.matmul(x, W.T) if xW is None else xW
    data = xp.matmul(h, xW[:, :, None])[..., 0] + xp.matmul(x, b)[:, None]
    return nll.reshape(B, K) - data


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


def gaussian_nll_linear(h, W, b, x, sigma=1.0):
    """``gaussian_nll(h @ W + b, x, sigma)`` for K decoder inputs per example: (B, K).

    The same formula as ``gaussian_nll`` (its reference in the tests), with
    the means from the decoder's last layer formed and squared in place and
    summed over pixels by a product with a vector of ones. (Expanding
    |x - mean|^2 into products would cancel badly when the fit is good.)
    Shapes: h (B, K, H), W (H, D), b (D,), x (B, D) -> (B, K).
    """
    xp = xp_of(h)
    B, K, H = h.shape
    D = W.shape[1]
    diff = xp.empty((B, K, D), dtype=xp.result_type(h, W))
    h_rows = h.reshape(B * K, H)

    def squared(i, j):  # examples i..j - 1 (blocks across npvae's threads: npvae.parallel)
        d = diff[i:j]
        xp.matmul(h_rows[i * K:j * K], W, out=d.reshape((j - i) * K, D))
        d += b
        d -= x[i:j, None, :]
        d *= d
    parallel.elementwise(squared, B, B * K * D, xp)
    squares = xp.matmul(diff.reshape(B * K, D), xp.ones(D, dtype=diff.dtype)).reshape(B, K)
    return squares / (2 * sigma**2) + 0.5 * D * (LOG_2PI + 2 * math.log(sigma))


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


def log_normal_backward(dout, z, mu, logvar):
    """Gradients of ``dout * log_normal(z, mu, logvar)``: ``(dz, dmu, dlogvar)``, each like z.

        d log N / d z      = -(z - mu) exp(-logvar)
        d log N / d mu     =  (z - mu) exp(-logvar)
        d log N / d logvar =  1/2 ((z - mu)^2 exp(-logvar) - 1)

    For a density whose mean and log-variance are themselves computed (the
    conditional prior p(h_1 | h_2) of ``npvae.hvae``). Shapes: dout (B,), z,
    mu, logvar (B, Z). Derivation: ``derivations.md#two-stochastic-layers``.
    """
    xp = xp_of(z)
    dout = _per_example(dout, z)
    scaled = (z - mu) * xp.exp(-logvar)
    return -dout * scaled, dout * scaled, dout * (0.5 * ((z - mu) * scaled - 1))


def log_normal_at_eps(eps, logvar):
    """``log_normal(z, mu, logvar)`` at z = mu + exp(logvar / 2) * eps, from eps.

        log q = -1/2 sum_k (log 2 pi + logvar_k + eps_k^2)

    since (z_k - mu_k)^2 exp(-logvar_k) = eps_k^2: no pass over z, and no
    rounding of z - mu. Broadcasts: eps (..., Z) against logvar -> (...).
    """
    return -0.5 * ((eps * eps).sum(axis=-1) + (LOG_2PI + logvar).sum(axis=-1))


def log_standard_normal(z):
    """log N(z; 0, I), summed over the last axis: (..., Z) -> (...)."""
    return -0.5 * (LOG_2PI + z * z).sum(axis=-1)


LIKELIHOODS = ("bernoulli", "gaussian")
