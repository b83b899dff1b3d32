"""Training on k samples per example: the k-sample ELBO and the importance-weighted bound.

For each example x_b of a batch (B, D), draw k noise vectors eps_ib and
z_ib = mu_b + exp(logvar_b / 2) * eps_ib (Burda, Grosse and Salakhutdinov, 2016):

    objective "elbo" (the paper's VAE with k samples), analytic KL:
        loss = mean_b [ 1/k sum_i nll(x_b | z_ib) + beta KL(q(z | x_b) || N(0, I)) ]

    objective "iwae" (the paper's IWAE), every term sampled:
        log w_ib = log p(x_b | z_ib) + log p(z_ib) - log q(z_ib | x_b)
        loss     = -mean_b log 1/k sum_i w_ib                  (= -L_k, beta must be 1)

Nats per example, summed over pixels and latents, averaged over the batch, as
everywhere. The k samples of the batch go through the decoder as one (k B, Z)
batch (sample-major: row i B + b is sample i of example b), not in a loop.

k = 1. The "elbo" objective with k = 1 is ``VAE.forward`` (same numbers, same
gradient). The "iwae" objective with k = 1 is the ELBO with the KL *sampled*,
log q(z | x) - log p(z) at the same z: equal to the analytic ELBO in
expectation over eps, for the value and for the gradient, but not sample by
sample.

Backward. With the normalised importance weights (a softmax over the k samples)

    wt_ib = w_ib / sum_j w_jb,     c_ib = wt_ib / B     (iwae),   c_ib = 1 / (k B)   (elbo)

the gradient is the per-sample gradient of -log w_ib weighted by c_ib: through
the decoder (d nll / d out, times c), through z_ib = mu + sigma eps_ib to mu
and logvar, plus the prior's d(-log p(z)) / dz = z, plus the direct term of
log q: with eps fixed, log q(z_ib | x) = -1/2 sum(eps_ib^2 + logvar + log 2 pi),
so d(-log w_ib) / d logvar = -1/2 directly and mu appears only through z.
Derivation: ``tutorials/derivations.md``, section "Importance-weighted training".
"""

from .backend import xp_of
from .checks import positive_int
from .cvae import set_condition
from .errors import ConfigError
from .evaluate import log_weights, logmeanexp
from .losses import gaussian_kl, gaussian_kl_backward
from .reparam import reparameterize_backward
from .vae import LossTerms

OBJECTIVES = ("elbo", "iwae")

MAX_DECODER_ROWS = 2**18
"""The most rows, k B, of one step's decoder batch: 262,144 rows of 784 float32
pixels are 0.8 GB an array, and a step keeps a few. More is refused, not swapped."""


def check_decoder_rows(k, batch):
    """A ConfigError when k samples of ``batch`` examples exceed ``MAX_DECODER_ROWS``."""
    if k * batch > MAX_DECODER_ROWS:
        raise ConfigError(f"k={k} samples of {batch} examples make {k * batch:,} decoder rows a "
                          f"step, more than the {MAX_DECODER_ROWS:,} allowed: lower k or the "
                          "batch size")


def importance_weights(log_w, axis=0):
    """The normalised importance weights: softmax of ``log_w`` over the samples ``axis``.

        wt_i = exp(log w_i - m) / sum_j exp(log w_j - m),   m = max_j log w_j

    Shapes: log_w (k, B) -> (k, B), each column summing to 1. Stable for log
    weights of any size (the largest exponent is 0).
    """
    xp = xp_of(log_w)
    e = xp.exp(log_w - log_w.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class KSampleObjective:
    """The k-sample loss of ``model``: ``objective`` "elbo" or "iwae", ``k`` samples per example.

    Used like the model itself: ``terms = objective.forward(x, rng=rng)``
    (a ``LossTerms``: loss, recon, kl), then ``objective.backward()`` fills
    ``model.grads``. ``recon`` is the mean over the k samples of
    -log p(x | z); ``kl`` is the analytic KL ("elbo") or the mean of the
    sampled log q(z | x) - log p(z) ("iwae"). For "elbo", loss = recon +
    beta kl; for "iwae", loss = -L_k <= recon + kl (the bound is tighter than
    the average of the k ELBO terms, see ``importance_weights``).
    Derivation: ``derivations.md#importance-weighted-training``.
    """

    def __init__(self, model, k=1, objective="elbo"):
        if not isinstance(objective, str) or objective not in OBJECTIVES:
            raise ConfigError(f"objective={objective!r} is unknown; choose one of "
                              f"{', '.join(OBJECTIVES)}")
        self.model, self.k, self.objective = model, positive_int("k", k), objective

    def forward(self, x, y=None, *, eps=None, rng=None, beta=None, check=True):
        """The loss terms of batch ``x`` (B, D), labels ``y`` (B,) for a conditional model.

        Noise ``eps`` (k, B, Z), or drawn from the Generator ``rng`` in that
        shape. ``beta`` weighs the KL of "elbo"; "iwae" takes only beta = 1.
        Keeps what ``backward`` needs.
        """
        model, k = self.model, self.k
        x = model.check_input(x, values=check)
        eps, beta = self.noise(x, eps, rng, beta, model.latent)
        B = x.shape[0]
        set_condition(model, y, B)
        self.x, self.eps, self.beta_now = x, eps, beta
        self.mu, self.logvar = model.encode(x)
        self.lw = lw = log_weights(model, x, self.mu, self.logvar, eps)
        recon = -lw.log_px_z.mean()
        if self.objective == "elbo":
            kl = gaussian_kl(self.mu, self.logvar).mean()
            return LossTerms(recon + beta * kl, recon, kl)
        self.weights = importance_weights(lw.log_w)
        loss = -logmeanexp(lw.log_w, axis=0).mean()
        return LossTerms(loss, recon, (lw.log_qz - lw.log_pz).mean())

    def noise(self, x, eps, rng, beta, width):
        """``(eps, beta)`` for the checked batch ``x`` (B, D): eps (k, B, width) as given, or
        drawn from ``rng``; beta the model's when None. One-line ConfigErrors for a wrong
        shape, a missing generator, a beta with "iwae", or k B beyond ``MAX_DECODER_ROWS``."""
        model, k, B = self.model, self.k, x.shape[0]
        check_decoder_rows(k, B)
        beta = model.beta if beta is None else beta
        if self.objective == "iwae" and beta != 1:
            raise ConfigError(f"the iwae objective has no KL weight: beta must be 1, got {beta}")
        if eps is None:
            if rng is None:
                raise ConfigError("forward needs eps or a random Generator rng")
            return rng.standard_normal((k, B, width), dtype=model.dtype), beta
        if getattr(eps, "shape", None) != (k, B, width):
            raise ConfigError(f"eps must have shape ({k}, {B}, {width}); got shape "
                              f"{getattr(eps, 'shape', None)}")
        return eps, beta

    def backward(self):
        """Fill ``model.grads`` with d loss / d parameter for the last ``forward``.

        With c (k, B) the weight of each sample in the loss (wt / B for
        "iwae", 1 / (k B) for "elbo"):

            d out_ib    = c_ib d nll / d out                (k B, D), into the decoder
            dz_ib       = (decoder's dz)_ib + c_ib z_ib      (k, B, Z); the z term: "iwae" only
            dmu         = sum_i dz_ib
            dlogvar     = sum_i dz_ib eps_ib exp(logvar / 2) / 2  - 1/2 sum_i c_ib   ("iwae")
                        = sum_i dz_ib eps_ib exp(logvar / 2) / 2  + beta / B d kl / d logvar ("elbo")

        and dmu += beta / B d kl / d mu for "elbo". Then the encoder's backward.
        Derivation: ``derivations.md#importance-weighted-training``.
        """
        model, k, x, lw = self.model, self.k, self.x, self.lw
        xp = model.xp
        B, D, Z = x.shape[0], model.x_dim, model.latent
        iwae = self.objective == "iwae"
        c = self.weights / B if iwae else 1.0 / (k * B)
        dout = model.nll_backward(c, lw.out, x)
        dz = model.decoder.backward(dout.reshape(k * B, D)).reshape(k, B, Z)
        if iwae:
            dz = dz + c[..., None] * lw.z        # -log p(z) = 1/2 z^2 + const
        dmu, dlogvar = reparameterize_backward(dz, self.logvar, self.eps)
        dmu, dlogvar = dmu.sum(axis=0), dlogvar.sum(axis=0)
        if iwae:
            dlogvar = dlogvar - 0.5 * c.sum(axis=0)[:, None]   # log q's direct -1/2 logvar
        else:
            dmu_kl, dlogvar_kl = gaussian_kl_backward(self.beta_now / B, self.mu, self.logvar)
            dmu, dlogvar = dmu + dmu_kl, dlogvar + dlogvar_kl
        model.encoder.backward(xp.concatenate([dmu, dlogvar], axis=1), need_dx=False)

    def __repr__(self):
        return f"KSampleObjective({self.objective}, k={self.k})"
