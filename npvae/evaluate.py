"""Evaluation: the ELBO, the importance-weighted bound on log p(x), latent usage.

Every function takes a model and data ``x`` (N, D) on the host or on the
model's device, works batch by batch in the model's array module ``xp``, and
moves only per-batch sums to the host (``to_numpy``), where they are
accumulated in float64. Results are host values: floats, dicts of floats or
NumPy arrays.

Conventions, as in training: nats per example, summed over pixels and latent
dimensions, **averaged over the N examples**.

Noise ``eps`` comes from a ``numpy.random.Generator`` ``rng`` (a Generator of
the model's backend works too), drawn in the model's dtype, batch by batch
in order of the examples. Two calls with equally seeded generators and the
same batching therefore use the same noise, which is how the tests show that
the k = 1 importance-weighted bound is the (sampled-KL) ELBO exactly.

Evaluation runs the encoder and decoder forward, which overwrites the
activations the layers keep for ``backward``: evaluate between optimizer
steps, never between a model's ``forward`` and its ``backward``.
"""

import math
from collections import namedtuple

import numpy as np

from . import parallel
from .backend import to_numpy, xp_of
from .checks import positive_int
from .cvae import is_conditional, set_condition
from .errors import ConfigError
from .layers import Dense
from .losses import (
    bernoulli_nll_linear,
    gaussian_kl,
    gaussian_kl_per_dim,
    gaussian_nll_linear,
    log_normal,
    log_normal_at_eps,
    log_standard_normal,
)
from .reparam import reparameterize
from .vae import decoder_width
from .vqtrain import usage_terms

DEFAULT_SEED = 0
"""Seed of the generator used when ``rng`` is None, so that evaluating the
same model twice gives the same numbers."""

CHUNK_BYTES = 64 * 2**20
"""Memory budget of one chunk of importance samples: chunk * B * width floats,
with width the widest decoder layer (at least D)."""


MAX_IW_WORK = 10**13
"""The most decoder values one importance-weighted evaluation computes: k N samples times the
decoder's widest array (``vae.decoder_width``). Burda et al.'s k = 5000 on the 10,000 test
digits is 4 10^10 for their MLP (minutes) and 6 10^12 for the conv preset (hours); 10^13
is about a day of a CPU. More is refused: it would not finish."""


def check_iw_work(model, k, n):
    """A ConfigError when the bound with ``k`` samples of ``n`` examples exceeds ``MAX_IW_WORK``."""
    width = decoder_width(model.config)
    if k * n * width > MAX_IW_WORK:
        raise ConfigError(f"k={k:,} importance samples of {n:,} examples are {k * n:,} decoder "
                          f"passes of {width:,} values, more than the {MAX_IW_WORK:.0e} one "
                          "evaluation may take (about a day): lower k or the number of examples")


# ------------------------------------------------------------------ helpers


def _batches(model, x, batch_size, y=None):
    """Yield the batches of ``x`` as (B, D) arrays of the model's module and dtype.

    A conditional model is conditioned on each batch's labels ``y`` (N,) first.
    """
    batch_size = positive_int("batch_size", batch_size)
    n = getattr(x, "shape", (0,))[0]
    if n < 1:
        raise ConfigError(f"x must hold at least one example; got shape {getattr(x, 'shape', None)}")
    if y is not None and len(y) != n:
        raise ConfigError(f"x holds {n} examples but y {len(y)} labels")
    for start in range(0, n, batch_size):
        xb = model.check_input(model.xp.asarray(x[start:start + batch_size]))
        set_condition(model, None if y is None else y[start:start + batch_size])
        yield xb


def _draw_eps(model, rng, shape):
    """Standard normal noise of ``shape`` in the model's dtype, on the model's device."""
    return model.xp.asarray(rng.standard_normal(shape, dtype=model.dtype))


def _decoder_out(model, z):
    """The decoder's output (logits or means) for z of shape (..., Z): (..., D)."""
    lead = z.shape[:-1]
    # The layers work on (rows, features) batches: fold the sample axis into the rows.
    out = model.decoder.forward(z.reshape(-1, model.latent))
    return out.reshape(*lead, model.x_dim)


def _host_sum(a):
    """The sum of device array ``a`` (B,) as a host float (summed in float64)."""
    return float(to_numpy(a.sum(dtype=np.float64)))


def _host_sum_rows(a):
    """Column sums of device array ``a`` (B, Z) as a host float64 array (Z,)."""
    return to_numpy(a.sum(axis=0, dtype=np.float64))


def logmeanexp(a, axis=0):
    """log mean_j exp(a_j) along ``axis``, without overflow or underflow.

        logmeanexp(a) = m + log mean_j exp(a_j - m),   m = max_j a_j

    Every exp(a_j - m) is at most 1 and the largest is exactly 1, so log
    weights of +/-1e6 give finite, exact answers. Works for any ``xp``.
    """
    xp = xp_of(a)
    m = a.max(axis=axis, keepdims=True)
    s = xp.exp(a - m).sum(axis=axis)
    return m.reshape(s.shape) + xp.log(s) - math.log(a.shape[axis])


class RunningLogSumExp:
    """log sum_j exp(a_j) over values that arrive in chunks (k, B), per column.

    Keeps the running maximum ``m`` (B,) and ``s = sum_j exp(a_j - m)``; when
    a chunk raises the maximum, the old sum is rescaled by exp(m_old - m_new)
    (at most 1, so nothing overflows). ``value()`` is m + log s, (B,).
    """

    def __init__(self):
        self.m = None
        self.s = None
        self.count = 0

    def add(self, a):
        """Fold in a chunk of values ``a`` of shape (k, B)."""
        xp = xp_of(a)
        chunk_max = a.max(axis=0)
        if self.m is None:
            self.m = chunk_max
            self.s = xp.exp(a - chunk_max).sum(axis=0)
        else:
            m_new = xp.maximum(self.m, chunk_max)
            self.s = self.s * xp.exp(self.m - m_new) + xp.exp(a - m_new).sum(axis=0)
            self.m = m_new
        self.count += a.shape[0]

    def value(self):
        """log sum_j exp(a_j), (B,)."""
        return self.m + xp_of(self.s).log(self.s)

    def log_mean(self):
        """log (1/k) sum_j exp(a_j), (B,), with k the number of values added."""
        return self.value() - math.log(self.count)


# ------------------------------------------------------------------ the ELBO


def evaluate_elbo(model, x, batch_size=1000, rng=None, beta=None, *, kl="analytic", y=None):
    """The loss terms over a data set: ``dict(loss=, recon=, kl=)``, host floats.

        recon = mean_i -log p(x_i | z_i),   z_i = mu_i + exp(logvar_i / 2) * eps_i
        kl    = mean_i KL(q(z | x_i) || N(0, I))
        loss  = recon + beta * kl         (the negative ELBO when beta = 1)

    One sample z per example, noise from ``rng`` (default
    ``np.random.default_rng(DEFAULT_SEED)``), in batches of ``batch_size``.
    ``beta`` defaults to the model's (so ``loss`` is the training objective);
    pass ``beta=1`` for the negative ELBO.

    ``kl="analytic"`` (default) uses the closed form, as training does.
    ``kl="sampled"`` uses the single-sample estimate log q(z|x) - log p(z) at
    the same z: equal to the closed form only in expectation, but it makes
    ``-loss`` (beta = 1) exactly the k = 1 importance-weighted bound for the
    same noise (see ``iw_bound``).

    A model with several stochastic layers (``npvae.hvae``) has no closed-form
    KL: its ``kl`` is always the sampled one, log q(h | x) - log p(h).

    Shapes: x (N, D); ``y`` (N,): labels, for a conditional model only.
    """
    if kl not in ("analytic", "sampled"):
        raise ConfigError(f"kl={kl!r} must be 'analytic' or 'sampled'")
    rng = np.random.default_rng(DEFAULT_SEED) if rng is None else rng
    beta = model.beta if beta is None else float(beta)
    n, recon_sum, kl_sum = 0, 0.0, 0.0
    for xb in _batches(model, x, batch_size, y):
        if hasattr(model, "log_weights"):   # several stochastic layers (npvae.hvae): KL sampled
            lw = model.log_weights(xb, _draw_eps(model, rng, (1, xb.shape[0], model.noise_dim)))
            recon, kl_b = -lw.log_px_h[0], lw.log_qh[0] - lw.log_ph[0]
        else:
            mu, logvar = model.encode(xb)
            z, _ = reparameterize(mu, logvar, _draw_eps(model, rng, mu.shape))
            recon = model.nll(_decoder_out(model, z), xb)
            if kl == "analytic":
                kl_b = gaussian_kl(mu, logvar)
            else:
                kl_b = log_normal(z, mu, logvar) - log_standard_normal(z)
        recon_sum += _host_sum(recon)
        kl_sum += _host_sum(kl_b)
        n += xb.shape[0]
    recon, kl_mean = recon_sum / n, kl_sum / n
    return dict(loss=recon + beta * kl_mean, recon=recon, kl=kl_mean)


def evaluate_vq(model, x, batch_size=1000):
    """A VQ-VAE's terms over a data set (``npvae.vqvae``): a dict of host numbers,

        recon      = mean_i -log p(x_i | z_q,i)       codebook = mean_i |sg[z_e,i] - z_q,i|^2
        commitment = mean_i lambda |z_e,i - sg[z_q,i]|^2
        loss       = recon + commitment (+ codebook, unless the codebook learns by EMA)
        perplexity = exp(entropy) of the codes chosen over the set; dead_codes = codes never chosen

    in nats per example, as ``VQVAE.forward`` computes them (nothing is drawn:
    the codes are the nearest). The quantizer's usage counts since the last
    dead-code restart are left as they were. Shapes: x (N, D).
    """
    q = model.quantizer
    before = q.reset_usage()
    sums = dict.fromkeys(("loss", "recon", "codebook", "commitment"), 0.0)
    n = 0
    try:
        for xb in _batches(model, x, batch_size):
            terms = model.forward(xb, check=False)
            for name in sums:
                sums[name] += float(to_numpy(getattr(terms, name))) * xb.shape[0]
            n += xb.shape[0]
        counts = q.reset_usage()
    finally:
        q.counts[...] = model.xp.asarray(before)
    return {**{name: total / n for name, total in sums.items()}, **usage_terms(counts)}


def vq_report(model, x, batch_size=1000):
    """What ``npvae evaluate`` prints of a VQ-VAE: ``evaluate_vq``'s terms and code usage on x
    (N, D), two lines."""
    t = evaluate_vq(model, x, batch_size)
    ema = model.config["update"] == "ema"
    return (f"test loss: {t['loss']:.4f} nats/example (recon {t['recon']:.4f}, codebook "
            f"{t['codebook']:.4f}{' (not in the loss: EMA updates)' if ema else ''}, "
            f"commitment {t['commitment']:.4f})\n"
            f"code usage: perplexity {t['perplexity']:.2f} of {model.config['n_codes']} codes; "
            f"{t['dead_codes']} dead codes (chosen by no position of the {len(x)} examples)")


# ------------------------------------------------------------------ the importance-weighted bound


LogWeights = namedtuple("LogWeights", ["log_w", "log_px_z", "log_pz", "log_qz", "z", "out"])
LogWeights.__doc__ = ("The log importance weights (k, B), their three terms (k, B), the samples z "
                      "(k, B, Z) and the decoder's output (k, B, D).")


def log_weights(model, xb, mu, logvar, eps):
    """log w_j = log p(x | z_j) + log p(z_j) - log q(z_j | x) for eps (k, B, Z): a ``LogWeights``.

    z_j = mu + exp(logvar / 2) * eps_j; xb (B, D), mu, logvar (B, Z) broadcast
    over the k samples, which go through the decoder as one (k B, Z) batch.
    The one place this formula lives, term by term: IWAE training
    (``npvae.iwae``) uses it, and it is the reference for the bound's faster
    form ``_log_weights_fast``.
    """
    z, _ = reparameterize(mu, logvar, eps)
    out = _decoder_out(model, z)
    log_px_z = -model.nll(out, xb)
    log_pz, log_qz = log_standard_normal(z), log_normal(z, mu, logvar)
    return LogWeights(log_px_z + log_pz - log_qz, log_px_z, log_pz, log_qz, z, out)


def _log_weights(model, xb, mu, logvar, eps):
    """The log weights alone, (k, B): see ``log_weights``."""
    return log_weights(model, xb, mu, logvar, eps).log_w


def _log_weights_fast(model, xb, mu, logvar, eps, xW=None):
    """The log weights of ``_log_weights``, equal up to rounding, computed faster: (k, B).

    The samples are laid out example-major, (B, k), so that each example's
    decoder inputs are contiguous rows; the likelihood is the last layer's
    fused form (``bernoulli_nll_linear``: the data term as a product, or
    ``gaussian_nll_linear``), and log q(z | x) comes from eps
    (``log_normal_at_eps``). ``xW``: x @ W.T of the last layer, for the
    Bernoulli data term (computed here when None).
    """
    eps = model.xp.ascontiguousarray(model.xp.transpose(eps, (1, 0, 2)))        # (B, k, Z)
    z, _ = reparameterize(mu[:, None, :], logvar[:, None, :], eps)
    B, k, Z = z.shape
    h = z.reshape(B * k, Z)
    if is_conditional(model):      # [z | onehot(y)]: each example's label on its k rows
        h = model.xp.concatenate([h, model.xp.repeat(model.decoder.onehot, k, axis=0)], axis=1)
    for layer in model.decoder.layers[:-1]:
        h = layer.forward(h)
    h = h.reshape(B, k, -1)
    W, b = model.decoder.layers[-1].params["W"], model.decoder.layers[-1].params["b"]
    if model.config["likelihood"] == "bernoulli":
        nll = bernoulli_nll_linear(h, W, b, xb, xW)
    else:
        nll = gaussian_nll_linear(h, W, b, xb, model.config["sigma"])
    log_w = log_standard_normal(z) - log_normal_at_eps(eps, logvar[:, None, :]) - nll
    return model.xp.transpose(log_w)


FAST_CHUNK_ROWS = 2048
"""Samples x examples per chunk of the fast estimator, so that its (rows, D)
float32 scratch arrays stay near the CPU's caches (how it was chosen:
benchmarks/README.md, "The importance-weighted bound against PyTorch")."""


def _default_chunk(model, k, batch, plain=True):
    """Samples per chunk: chunk * batch * width floats under CHUNK_BYTES (plain),
    or chunk * batch near FAST_CHUNK_ROWS (fast).

    ``width`` is the decoder's widest array per example (``vae.decoder_width``):
    for an MLP its widest layer; for the conv architecture a transposed
    convolution's columns.
    """
    if not plain:
        return max(1, min(k, FAST_CHUNK_ROWS // batch))
    per_sample = batch * decoder_width(model.config) * model.dtype.itemsize
    return max(1, min(k, CHUNK_BYTES // per_sample))


def _plain_form(model, plain):
    """Whether the bound takes the plain form: when asked, or when the decoder does not
    end in a dense layer (the fast form takes x's product with that layer once per
    batch; the conv architecture's decoder ends in a transposed convolution)."""
    return plain or not isinstance(model.decoder.layers[-1], Dense)


def _weights_function(model, xb, mu, logvar, plain):
    """eps (k, B, Z) -> log weights (k, B) of batch ``xb``: the plain or the fast form."""
    if plain:
        return lambda eps: _log_weights(model, xb, mu, logvar, eps)
    xW = None
    if model.config["likelihood"] == "bernoulli":   # once per batch, not once per chunk
        xW = parallel.matmul(xb, model.decoder.layers[-1].params["W"].T, model.xp)
    return lambda eps: _log_weights_fast(model, xb, mu, logvar, eps, xW)


def _sampler(model, xb, plain):
    """``(log_weights, width, plain)`` for batch ``xb``: the function eps (k, B, width) ->
    log weights (k, B), the noise's width, and whether it is the plain form.

    A model with several stochastic layers (``npvae.hvae``) brings its own
    log weights, whose noise spans every layer (``noise_dim``).
    """
    if hasattr(model, "log_weights"):
        return (lambda eps: model.log_weights(xb, eps).log_w), model.noise_dim, False
    plain = _plain_form(model, plain)
    mu, logvar = model.encode(xb)
    return _weights_function(model, xb, mu, logvar, plain), mu.shape[1], plain


def iw_log_weights(model, x, k, rng, *, plain=False, y=None):
    """The k log importance weights of every example in ``x`` (B, D): host (k, B).

        log w_j = log p(x | z_j) + log p(z_j) - log q(z_j | x),   z_j ~ q(z | x)

    All k samples in one piece (meant for tests and small k); the noise is
    one draw of shape (k, B, Z) from ``rng``, the same noise ``iw_bound``
    uses for one batch of examples. ``plain=True``: the straightforward
    formula term by term (the reference); default: the fast form
    ``iw_bound`` uses, equal to it up to rounding. ``y`` (B,): labels, for a
    conditional model only.
    """
    k = positive_int("k", k)
    xb = model.check_input(model.xp.asarray(x))
    set_condition(model, y, xb.shape[0])
    log_weights, width, _ = _sampler(model, xb, plain)
    return to_numpy(log_weights(_draw_eps(model, rng, (k, xb.shape[0], width))))


def iw_bounds(model, x, k, rng, batch_size=100, chunk=None, *, plain=False, progress=None,
              y=None):
    """The importance-weighted bound L_k of every example in ``x``: host float64 (N,).

        L_k(x) = log (1/k) sum_j p(x | z_j) p(z_j) / q(z_j | x),   z_j ~ q(z | x)

    See ``iw_bound``, which is their mean; their standard deviation over
    sqrt(N) is the standard error of that mean. ``progress``: None, or a
    function called after every chunk as ``progress(done, total)``, counting
    samples times examples (total = k N). ``plain=True`` uses the
    straightforward formula (the reference the tests compare with); the
    default fast form gives the same values up to rounding. ``y`` (N,):
    labels, for a conditional model only (the bound is then on log p(x | y)).
    """
    k = positive_int("k", k)
    total, done, bounds = k * getattr(x, "shape", (0,))[0], 0, []
    check_iw_work(model, k, getattr(x, "shape", (0,))[0])
    for xb in _batches(model, x, batch_size, y):
        log_weights, width, plain_b = _sampler(model, xb, plain)
        size = (_default_chunk(model, k, xb.shape[0], plain_b) if chunk is None
                else positive_int("chunk", chunk))
        acc = RunningLogSumExp()
        for start in range(0, k, size):
            eps = _draw_eps(model, rng, (min(size, k - start), xb.shape[0], width))
            acc.add(log_weights(eps))
            done += eps.shape[0] * eps.shape[1]
            if progress is not None:
                progress(done, total)
        bounds.append(to_numpy(acc.log_mean()).astype(np.float64))
    return np.concatenate(bounds)


def iw_bound(model, x, k, rng, batch_size=100, chunk=None, *, plain=False, progress=None,
             y=None):
    """The importance-weighted estimate of log p(x), averaged over examples (a float).

        L_k(x) = log (1/k) sum_j p(x | z_j) p(z_j) / q(z_j | x),   z_j ~ q(z | x)

    (Burda, Grosse and Salakhutdinov, 2016). L_1 is the ELBO; E[L_k] rises
    with k towards log p(x), so large k (5000) gives a tight estimate. The
    value is negative: report NLL = -iw_bound(...) in nats per example.
    Derivation: ``tutorials/derivations.md#importance-weighted-bound``.

    Batched over examples (``batch_size``) and over samples: the k samples of
    a batch come in chunks of ``chunk`` (default: about 2048 / batch_size
    samples for the fast form; for the plain form as many as keep
    chunk * batch * width floats under 64 MB) folded into a running
    log-sum-exp, so memory does not grow with k. Noise: for each batch of
    examples in turn, chunks of shape (chunk, B, Z) drawn from ``rng``; the
    chunking does not change the noise, so any ``chunk`` gives the same value
    up to rounding. ``plain``, ``progress`` and ``y``: see ``iw_bounds``.

    Shapes: x (N, D).
    """
    return float(iw_bounds(model, x, k, rng, batch_size, chunk, plain=plain,
                           progress=progress, y=y).mean())


# ------------------------------------------------------------------ latent usage


def encode_means(model, x, batch_size=1000, y=None):
    """The encoder means mu(x) of every example: host (N, Z)."""
    return np.concatenate([to_numpy(model.encode(xb)[0])
                           for xb in _batches(model, x, batch_size, y)])


def kl_per_dim(model, x, batch_size=1000, y=None):
    """The KL of each latent dimension, averaged over examples: host (Z,).

        kl_u = mean_i 1/2 (exp(logvar_iu) + mu_iu^2 - 1 - logvar_iu)

    Summed over u it is the ``kl`` of ``evaluate_elbo``. Dimensions with kl_u
    near 0 match the prior for every x: they carry no information.
    """
    total, n = np.zeros(model.latent), 0
    for xb in _batches(model, x, batch_size, y):
        total += _host_sum_rows(gaussian_kl_per_dim(*model.encode(xb)))
        n += xb.shape[0]
    return total / n


def latent_activity(model, x, batch_size=1000, y=None):
    """A_u = Cov_x(E_q(z|x)[z_u]): the variance over the data of mu_u, host (Z,).

    Computed on the host in float64 from ``encode_means`` (N x Z is small).
    """
    return encode_means(model, x, batch_size, y).astype(np.float64).var(axis=0)


def active_units(model, x, threshold=0.01, batch_size=1000, y=None):
    """How many latent dimensions are active: A_u > ``threshold`` (Burda et al., 2016).

    A dimension whose mean does not move with x is ignored by the decoder,
    whatever its variance; see ``latent_activity``.
    """
    return int((latent_activity(model, x, batch_size, y) > threshold).sum())
