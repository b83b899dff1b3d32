"""The variational autoencoder: encoder, reparameterization, decoder, loss.

    x (B, D) --encoder MLP--> [mu | logvar] (B, 2Z)
    z = mu + exp(logvar / 2) * eps                        (B, Z)
    z --decoder MLP--> out (B, D): logits (Bernoulli) or means (Gaussian)

    recon = mean_i  -log p(x_i | z_i)        summed over the D pixels
    kl    = mean_i  KL(q(z | x_i) || N(0, I)) summed over the Z latents
    loss  = recon + beta * kl                (the negative ELBO when beta = 1)

All three are in nats per example: summed over pixels and latents, averaged
over the batch. ``forward`` computes them; ``backward`` fills every
parameter's gradient. The gradient of the loss with respect to the encoder
output collects two paths: through z (the reconstruction) and directly (the
KL). Derivation: ``tutorials/derivations.md``, section "The whole ELBO".
"""

from collections import namedtuple
from functools import partial

import numpy as np

from .activations import ACTIVATIONS, sigmoid
from .backend import get_xp
from .checks import number, positive_int, sizes
from .errors import ConfigError, DataError
from .layers import INITS, MLP, flatten_parameters
from .losses import (
    LIKELIHOODS,
    bernoulli_nll,
    bernoulli_nll_backward,
    gaussian_kl,
    gaussian_kl_backward,
    gaussian_nll,
    gaussian_nll_backward,
)
from .reparam import reparameterize, reparameterize_backward

def _identity(out):
    return out


LossTerms = namedtuple("LossTerms", ["loss", "recon", "kl"])
LossTerms.__doc__ = "The batch loss and its two terms, in nats per example (0-d arrays)."


def check_arguments(x_dim=784, hidden=(400,), latent=20, *, decoder_hidden=None,
                    activation="relu", likelihood="bernoulli", sigma=1.0, beta=1.0, init=None,
                    dtype="float32"):
    """The VAE's arguments checked and normalised: its ``config``, or a one-line ConfigError.

    The one place these rules live: ``VAE`` calls it, and so does
    ``TrainConfig.validate`` (with ``x_dim=None``, before the data is loaded).
    """
    x_dim = None if x_dim is None else positive_int("x_dim", x_dim)
    latent = positive_int("latent", latent)
    hidden = sizes("hidden", hidden)
    decoder_hidden = hidden[::-1] if decoder_hidden is None else sizes("decoder_hidden",
                                                                       decoder_hidden)
    for name, value, choices in [("activation", activation, ACTIVATIONS),
                                 ("likelihood", likelihood, LIKELIHOODS),
                                 ("init", init, (None, *INITS)),
                                 ("dtype", dtype, ("float32", "float64", np.float32, np.float64))]:
        if not isinstance(value, (str, type(None), type, np.dtype)) or value not in choices:
            raise ConfigError(f"{name}={value!r} is unknown; choose one of "
                              f"{', '.join(str(c) for c in choices if isinstance(c, str))}")
    return dict(x_dim=x_dim, hidden=hidden, latent=latent, decoder_hidden=decoder_hidden,
                activation=activation, likelihood=likelihood,
                sigma=number("sigma", sigma, positive=True), beta=number("beta", beta),
                init=init, dtype=np.dtype(dtype).name)


class VAE:
    """A VAE with MLP encoder and decoder.

    Parameters
    ----------
    x_dim : pixels per example, D (784 for MNIST).
    hidden : encoder hidden sizes, e.g. ``(400,)`` or ``(128, 64)``.
    latent : latent size Z.
    decoder_hidden : decoder hidden sizes; default ``hidden`` reversed, so
        ``hidden=(128, 64)`` gives 784-128-64 / 20 / 64-128-784.
    activation : ``relu``, ``leaky_relu``, ``tanh``, ``sigmoid`` or ``softplus``.
    likelihood : ``bernoulli`` (decoder gives logits) or ``gaussian`` (decoder
        gives means; fixed standard deviation ``sigma``).
    beta : weight of the KL term (1 gives the ELBO).
    init : ``he``, ``glorot`` or ``pytorch``; default by activation.
    dtype : ``float32`` for training, ``float64`` for gradient checks.
    backend : ``numpy`` or ``cupy``.
    seed : seeds the initial weights.
    """

    def __init__(self, x_dim=784, hidden=(400,), latent=20, *, decoder_hidden=None,
                 activation="relu", likelihood="bernoulli", sigma=1.0, beta=1.0,
                 init=None, dtype="float32", backend="numpy", seed=0):
        self.config = config = check_arguments(
            positive_int("x_dim", x_dim), hidden, latent, decoder_hidden=decoder_hidden, activation=activation,
            likelihood=likelihood, sigma=sigma, beta=beta, init=init, dtype=dtype)
        self.xp = xp = get_xp(backend)
        self.backend = backend
        self.x_dim, self.latent, self.beta = config["x_dim"], config["latent"], config["beta"]
        self.dtype = dtype = np.dtype(config["dtype"])
        hidden, decoder_hidden = config["hidden"], config["decoder_hidden"]
        rng = np.random.default_rng(seed)
        layer_args = dict(rng=rng, init=init, dtype=dtype, xp=xp)
        self.encoder = self._network([self.x_dim, *hidden, 2 * self.latent], activation, **layer_args)
        self.decoder = self._network([self.latent, *decoder_hidden, self.x_dim], activation, **layer_args)
        self.theta, self.dtheta = flatten_parameters(self.encoder.layers + self.decoder.layers, xp)
        # ``output_mean`` maps the decoder's output to the mean of p(x | z): the sigmoid of
        # Bernoulli logits, or the Gaussian's mean itself (not to be confused with ``mu``).
        if likelihood == "bernoulli":
            self.nll, self.nll_backward = bernoulli_nll, bernoulli_nll_backward
            self.output_mean = sigmoid
        else:
            self.nll = partial(gaussian_nll, sigma=config["sigma"])
            self.nll_backward = partial(gaussian_nll_backward, sigma=config["sigma"])
            self.output_mean = _identity

    def _network(self, sizes, activation, **layer_args):
        """The encoder's or decoder's network (a hook: ``npvae.cvae`` appends labels to its input)."""
        return MLP(sizes, activation, **layer_args)

    @property
    def params(self):
        """Every parameter by name (``"encoder.0.W"``, ...): views into ``theta``."""
        return {**{f"encoder.{k}": v for k, v in self.encoder.params.items()},
                **{f"decoder.{k}": v for k, v in self.decoder.params.items()}}

    @property
    def grads(self):
        """Every gradient, with the same names as ``params``: views into ``dtheta``."""
        return {**{f"encoder.{k}": v for k, v in self.encoder.grads.items()},
                **{f"decoder.{k}": v for k, v in self.decoder.grads.items()}}

    def check_input(self, x, values=True):
        """``x`` as a (B, x_dim) array of the model's dtype, or a clear error.

        Shape and dtype problems are ConfigErrors; with ``values``, NaN or
        infinite entries, and pixels outside [0, 1] under the Bernoulli
        likelihood, are DataErrors. (The trainer checks its whole data set
        once and skips the per-batch value check.)
        """
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != self.x_dim or shape[0] < 1:
            raise ConfigError(f"x must have shape (batch, {self.x_dim}); got shape {shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ConfigError(f"x must be a floating array; got dtype {x.dtype} (scale pixels to [0, 1])")
        if values:
            if not bool(self.xp.isfinite(x).all()):
                raise DataError("x contains NaN or infinite values")
            if self.config["likelihood"] == "bernoulli" and not bool(((x >= 0) & (x <= 1)).all()):
                raise DataError(f"the bernoulli likelihood needs pixels in [0, 1]; x has min "
                                f"{float(x.min())} and max {float(x.max())}")
        return x.astype(self.dtype, copy=False)

    def encode(self, x):
        """q(z | x): ``(mu, logvar)``, each (B, Z)."""
        h = self.encoder.forward(x)
        return h[:, :self.latent], h[:, self.latent:]

    def decode(self, z):
        """The decoder's mean of p(x | z): probabilities or means, (B, D)."""
        return self.output_mean(self.decoder.forward(z))

    def forward(self, x, y=None, *, eps=None, rng=None, beta=None, check=True):
        """The loss terms of batch ``x`` (B, D) for noise ``eps`` or one drawn from ``rng``.

        ``y``, labels, is for conditional models (``npvae.cvae.CVAE``); here it must be None.
        ``beta`` overrides the configured weight of the KL (KL warm-up).
        ``check=False`` skips the scan of x for NaN and out-of-range pixels
        (for data already checked once). Returns ``LossTerms(loss, recon, kl)``
        and keeps what ``backward`` needs.
        """
        if y is not None:
            raise ConfigError("labels y were given, but this VAE is not conditional "
                              "(build it with n_classes, see npvae.cvae)")
        x = self.check_input(x, values=check)
        if eps is not None and getattr(eps, "shape", None) != (x.shape[0], self.latent):
            raise ConfigError(f"eps must have shape ({x.shape[0]}, {self.latent}); "
                              f"got shape {getattr(eps, 'shape', None)}")
        self.x = x
        self.beta_now = self.beta if beta is None else beta
        self.mu, self.logvar = self.encode(x)
        self.z, self.eps = reparameterize(self.mu, self.logvar, eps, rng)
        self.out = self.decoder.forward(self.z)
        recon = self.nll(self.out, x).mean()
        kl = gaussian_kl(self.mu, self.logvar).mean()
        return LossTerms(recon + self.beta_now * kl, recon, kl)

    def backward(self):
        """Fill ``grads`` (and so ``dtheta``) with d loss / d parameter.

        Per example, d loss / d (its term) is 1/B: the batch mean.
        Derivation: ``derivations.md#the-whole-elbo``.
        """
        dout = 1.0 / self.x.shape[0]
        dz = self.decoder.backward(self.nll_backward(dout, self.out, self.x))
        dmu, dlogvar = reparameterize_backward(dz, self.logvar, self.eps)
        dmu_kl, dlogvar_kl = gaussian_kl_backward(self.beta_now * dout, self.mu, self.logvar)
        dh = self.xp.concatenate([dmu + dmu_kl, dlogvar + dlogvar_kl], axis=1)
        self.encoder.backward(dh, need_dx=False)

    def __repr__(self):
        c = self.config
        return (f"VAE({c['x_dim']}-{'-'.join(map(str, c['hidden']))} / {c['latent']} / "
                f"{'-'.join(map(str, c['decoder_hidden']))}-{c['x_dim']}, {c['activation']}, "
                f"{c['likelihood']}, beta={c['beta']}, {c['dtype']})")
