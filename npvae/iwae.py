"""Training on k samples per example: the k-sample ELBO and the importance-weighted bound.

For each example x_i of a batch (B, D), draw k noise vectors eps_il and
z_il = mu_i + exp(logvar_i / 2) * eps_il (Burda, Grosse and Salakhutdinov, 2016),
with the log weights log w_il = log p(x_i | z_il) + log p(z_il) - log q(z_il | x_i):

    objective "elbo" (the k-sample ELBO, its KL in closed form):
        loss = mean_i [ 1/k sum_l nll(x_i | z_il) + beta KL(q(z | x_i) || N(0, I)) ]

    objective "elbo-sampled" (the paper's VAE: the KL sampled at each z_il):
        loss = mean_i [ 1/k sum_l nll(x_i | z_il) + beta (log q(z_il | x_i) - log p(z_il)) ]
             = -mean_i 1/k sum_l log w_il                      (beta = 1)

    objective "iwae" (the paper's IWAE), every term sampled:
        loss = -mean_i log 1/k sum_l w_il                       (= -L_k, beta must be 1)

"elbo" and "elbo-sampled" have the same expectation over eps, value and
gradient; the closed form usually has the smaller variance (no sampling
noise in its KL term). Burda et al.'s VAE is
"elbo-sampled" (their update is the gradient of sum_l log w_l / k).
Nats per example, summed over pixels and latents, averaged over the batch, as
everywhere. The k samples of the batch go through the decoder as one (k B, Z)
batch (sample-major: counting from 0, row l B + i is sample l of example i),
not in a loop.

k = 1. "elbo" with k = 1 is ``VAE.forward`` (same numbers, same gradient).
"elbo-sampled" and "iwae" with k = 1 are one computation, bit for bit (the
log of a mean of one weight is its log): the ELBO with the KL sampled,
equal to the closed-form ELBO in expectation but not sample by sample.

Backward. Each sample's gradient of -log p(x | z_il) + beta (log q - log p)
is weighted by c_il, with the normalised importance weights (a softmax over
the k samples) for "iwae" and uniform weights otherwise:

    c_il = wt_il / B,  wt_il = w_il / sum_l' w_il'   ("iwae", beta = 1)
    c_il = 1 / (k B)                              ("elbo", "elbo-sampled")

through the decoder (d nll / d out, times c), through z_il = mu + sigma eps_il
to mu and logvar; the sampled KL ("elbo-sampled", "iwae") adds the prior's
d(-log p(z)) / dz = z and the direct term of log q: with eps fixed,
log q(z_il | x) = -1/2 sum(eps_il^2 + logvar + log 2 pi), so
d(-log w_il) / d logvar = -1/2 directly and mu appears only through z. "elbo"
adds the closed-form KL's gradient instead of those two.
Derivation: ``tutorials/derivations.md``, section "Importance-weighted training".
"""

from .backend import xp_of
from .checks import positive_int
from .cvae import set_condition
from .errors import ConfigError
from .evaluate import log_weights, logmeanexp
from .losses import gaussian_kl, gaussian_kl_backward
from .reparam import reparameterize_backward
from .vae import LossTerms, decoder_width

OBJECTIVES = ("elbo", "elbo-sampled", "iwae")

MAX_DECODER_ROWS = 2**18
"""The most rows, k B, of one step's decoder batch: 262,144 rows of 784 float32
pixels are 0.8 GB an array, and a step keeps a few. More is refused, not swapped."""


def check_decoder_rows(k, batch):
    """A ConfigError when k samples of ``batch`` examples exceed ``MAX_DECODER_ROWS``."""
    if k * batch > MAX_DECODER_ROWS:
        raise ConfigError(f"k={k} samples of {batch} examples make {k * batch:,} decoder rows a "
                          f"step, more than the {MAX_DECODER_ROWS:,} allowed: lower k or the "
                          "batch size")


MAX_STEP_BYTES = MAX_DECODER_ROWS * 784 * 4
"""The most bytes of one step's widest decoder array: k B rows of ``vae.decoder_width``
floats. An MLP on MNIST in float32 meets it at MAX_DECODER_ROWS rows, as before; a conv
decoder's transposed-convolution columns are 144 times wider (channels 64), and a step of
the conv preset at batch 128 meets it at k = 14 (about 1.2 GB for the whole step)."""


def check_step(model, k, batch):
    """A ConfigError when a step of k samples of ``batch`` examples would make a decoder array
    larger than ``MAX_STEP_BYTES`` (or more rows than ``MAX_DECODER_ROWS``): its real size, the
    widest array ``model``'s architecture makes, checked before anything is drawn."""
    check_decoder_rows(k, batch)
    width = decoder_width(model.config)
    size = k * batch * width * model.dtype.itemsize
    if size > MAX_STEP_BYTES:
        raise ConfigError(f"k={k} samples of {batch} examples make {k * batch:,} decoder rows of "
                          f"{width:,} {model.dtype} values in this architecture's widest array "
                          f"({size / 2**30:.2f} GiB), more than the {MAX_STEP_BYTES / 2**30:.2f} "
                          "GiB allowed: lower k or the batch size")


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
    """The k-sample loss of ``model``: ``objective`` "elbo", "elbo-sampled" or "iwae", ``k`` samples.

    Used like the model itself: ``terms = objective.forward(x, rng=rng)``
    (a ``LossTerms``: loss, recon, kl), then ``objective.backward()`` fills
    ``model.grads``. ``recon`` is the mean over the k samples of
    -log p(x | z); ``kl`` is the closed-form KL ("elbo") or the mean of the
    sampled log q(z | x) - log p(z) ("elbo-sampled", "iwae"). For "elbo" and
    "elbo-sampled", loss = recon + beta kl; for "iwae", loss = -L_k <= recon +
    kl (the bound is tighter than the average of the k ELBO terms, see
    ``importance_weights``).
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
        shape. ``beta`` weighs the KL of "elbo" and "elbo-sampled"; "iwae" takes
        only beta = 1.
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
        kl = (lw.log_qz - lw.log_pz).mean()
        if self.objective == "iwae":
            self.weights = importance_weights(lw.log_w)
            return LossTerms(-logmeanexp(lw.log_w, axis=0).mean(), recon, kl)
        # "elbo-sampled": every sample weighs 1/k. log w + (1 - beta)(log q - log p) is
        # log p(x | z) - beta (log q - log p); at beta = 1 it is log w itself, so that
        # k = 1 gives the "iwae" numbers bit for bit (logmeanexp of one sample is it).
        self.weights = model.xp.full((k, B), 1.0 / k, dtype=lw.log_w.dtype)
        loss = -(lw.log_w + (1 - beta) * (lw.log_qz - lw.log_pz)).mean(axis=0).mean()
        return LossTerms(loss, recon, kl)

    def noise(self, x, eps, rng, beta, width):
        """``(eps, beta)`` for the checked batch ``x`` (B, D): eps (k, B, width) as given, or
        drawn from ``rng``; beta the model's when None. One-line ConfigErrors for a wrong
        shape, a missing generator, a beta with "iwae", or a step beyond ``check_step``'s limit."""
        model, k, B = self.model, self.k, x.shape[0]
        check_step(model, k, B)
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
        "iwae", 1 / (k B) for "elbo" and "elbo-sampled") and b the weight of
        the sampled KL (beta for "elbo-sampled", 1 for "iwae"):

            d out_il    = c_il d nll / d out                 (k B, D), into the decoder
            dz_il       = (decoder's dz)_il + b c_il z_il     (k, B, Z); the z term: sampled KL only
            dmu         = sum_l dz_il
            dlogvar     = sum_l dz_il eps_il exp(logvar / 2) / 2  - b/2 sum_l c_il  (sampled KL)
                        = sum_l dz_il eps_il exp(logvar / 2) / 2  + beta / B d kl / d logvar ("elbo")

        and dmu += beta / B d kl / d mu for "elbo". Then the encoder's backward.
        Derivation: ``derivations.md#importance-weighted-training``.
        """
        model, k, x, lw = self.model, self.k, self.x, self.lw
        xp = model.xp
        B, D, Z = x.shape[0], model.x_dim, model.latent
        sampled = self.objective != "elbo"        # the KL sampled, weighed by beta
        c = self.weights / B if sampled else 1.0 / (k * B)
        dout = model.nll_backward(c, lw.out, x)
        dz = model.decoder.backward(dout.reshape(k * B, D)).reshape(k, B, Z)
        if sampled:
            dz = dz + (self.beta_now * c)[..., None] * lw.z        # -log p(z) = 1/2 z^2 + const
        dmu, dlogvar = reparameterize_backward(dz, self.logvar, self.eps)
        dmu, dlogvar = dmu.sum(axis=0), dlogvar.sum(axis=0)
        if sampled:   # log q's direct -1/2 logvar
            dlogvar = dlogvar - 0.5 * self.beta_now * c.sum(axis=0)[:, None]
        else:
            dmu_kl, dlogvar_kl = gaussian_kl_backward(self.beta_now / B, self.mu, self.logvar)
            dmu, dlogvar = dmu + dmu_kl, dlogvar + dlogvar_kl
        model.encoder.backward(xp.concatenate([dmu, dlogvar], axis=1), need_dx=False)

    def __repr__(self):
        return f"KSampleObjective({self.objective}, k={self.k})"
