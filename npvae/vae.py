"""The variational autoencoder: encoder, reparameterization, decoder, loss.

    x (B, D) --encoder--> [mu | logvar] (B, 2Z)
    z = mu + exp(logvar / 2) * eps                        (B, Z)
    z --decoder--> out (B, D): logits (Bernoulli) or means (Gaussian)

The encoder and decoder are stacks of layers (``npvae.layers.Sequential``),
built by ``architecture``: ``mlp`` (dense layers) or ``conv`` (convolutions,
``npvae.conv``). Either way x and out are flat (B, D) at the model's boundary;
a convolutional stack reshapes to images inside.

    recon = mean_i  -log p(x_i | z_i)        summed over the D pixels
    kl    = mean_i  KL(q(z | x_i) || N(0, I)) summed over the Z latents
    loss  = recon + beta * kl                (the negative ELBO when beta = 1)

All three are in nats per example: summed over pixels and latents, averaged
over the batch. ``forward`` computes them; ``backward`` fills every
parameter's gradient. The gradient of the loss with respect to the encoder
output collects two paths: through z (the reconstruction) and directly (the
KL). Derivation: ``tutorials/derivations.md``, section "The whole ELBO".
"""

import math
from collections import namedtuple
from functools import partial

import numpy as np

from .activations import ACTIVATIONS, sigmoid
from .backend import get_xp
from .checks import MODEL_DTYPES, number, one_of, parameter_count, positive_int, sizes
from .errors import ConfigError, DataError
from .conv import Conv2D, ConvTranspose2D, Reshape
from .layers import INITS, MLP, Dense, Sequential, default_init, flatten_parameters
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

ARCHITECTURES = ("mlp", "conv")


def _identity(out):
    return out


LossTerms = namedtuple("LossTerms", ["loss", "recon", "kl"])
LossTerms.__doc__ = "The batch loss and its two terms, in nats per example (0-d arrays)."


def check_arguments(x_dim=784, hidden=(400,), latent=20, *, decoder_hidden=None,
                    activation="relu", likelihood="bernoulli", sigma=1.0, beta=1.0, init=None,
                    dtype="float32", architecture="mlp"):
    """The VAE's arguments checked and normalised: its ``config``, or a one-line ConfigError.

    The one place these rules live: ``VAE`` calls it, and so does
    ``TrainConfig.validate`` (with ``x_dim=None``, before the data is loaded).
    """
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        raise ConfigError(f"architecture={architecture!r} is unknown; choose one of "
                          f"{', '.join(ARCHITECTURES)}")
    x_dim = None if x_dim is None else positive_int("x_dim", x_dim)
    latent = positive_int("latent", latent)
    hidden = sizes("hidden", hidden)
    if architecture == "conv":
        decoder_hidden = _conv_channels(x_dim, hidden, decoder_hidden)
    else:
        decoder_hidden = hidden[::-1] if decoder_hidden is None else sizes("decoder_hidden",
                                                                           decoder_hidden)
    for name, value, choices in [("activation", activation, ACTIVATIONS),
                                 ("likelihood", likelihood, LIKELIHOODS),
                                 ("init", init, (None, *INITS)),
                                 ("dtype", dtype, MODEL_DTYPES)]:
        one_of(name, value, choices)
    return dict(x_dim=x_dim, hidden=hidden, latent=latent, decoder_hidden=decoder_hidden,
                activation=activation, likelihood=likelihood,
                sigma=number("sigma", sigma, positive=True), beta=number("beta", beta),
                init=init, dtype=np.dtype(dtype).name, architecture=architecture)


def _conv_channels(x_dim, hidden, decoder_hidden):
    """The conv architecture's decoder channels, after checking its sizes against ``x_dim``."""
    if not hidden:
        raise ConfigError("hidden=[] leaves the conv architecture without a convolution; give "
                          "its channels, e.g. (32, 64)")
    n = len(hidden)
    if decoder_hidden is None:
        decoder_hidden = [hidden[0], *hidden[::-1]]
    decoder_hidden = sizes("decoder_hidden", decoder_hidden)
    if len(decoder_hidden) != n + 1:
        raise ConfigError(f"decoder_hidden={decoder_hidden!r} must hold {n + 1} channel counts "
                          f"for hidden={hidden!r}: the dense layer's map, then each of the {n} "
                          "upsampling transposed convolutions")
    if x_dim is not None:
        side = math.isqrt(x_dim)
        if side * side != x_dim or side % 2 ** n:
            raise ConfigError(f"the conv architecture needs square images whose side divides "
                              f"by 2^{n} (one halving per entry of hidden={hidden!r}); got "
                              f"x_dim={x_dim}")
    return decoder_hidden


def build_stacks(config, *, rng, dtype, xp, mlp=MLP):
    """The encoder and decoder (``Sequential``s) of a VAE ``config``, weights drawn from ``rng``.

    ``mlp``: x_dim-hidden-2Z and Z-decoder_hidden-x_dim dense layers, built by
    ``mlp(sizes, activation, ...)`` (``npvae.cvae`` passes one that appends labels).

    ``conv`` (TensorFlow's convolutional VAE tutorial, for hidden = (32, 64),
    decoder_hidden = (32, 64, 32) on 28 x 28 images): 3 x 3 kernels; each
    ``Conv2D`` has stride 2 and padding 1, halving the side (28 -> 14 -> 7);
    each upsampling ``ConvTranspose2D`` has stride 2, padding 1 and output
    padding 1, doubling it (7 -> 14 -> 28); the last has stride 1 and padding
    1, keeping it::

        encoder: (1, 28, 28) Conv 32 -> (32, 14, 14) Conv 64 -> (64, 7, 7)
                 flatten 3136 -> Dense 2Z
        decoder: Z Dense -> 1568 = (32, 7, 7) ConvT 64 -> (64, 14, 14)
                 ConvT 32 -> (32, 28, 28) ConvT 1 -> (1, 28, 28) flatten 784

    with ``activation`` after every layer but the last of each stack.
    """
    activation, latent, x_dim = config["activation"], config["latent"], config["x_dim"]
    init = default_init(activation) if config["init"] is None else config["init"]
    args = dict(rng=rng, init=init, dtype=dtype, xp=xp)
    if config["architecture"] == "mlp":
        return (mlp([x_dim, *config["hidden"], 2 * latent], activation, **args),
                mlp([latent, *config["decoder_hidden"], x_dim], activation, **args))
    act = ACTIVATIONS[activation]
    side = math.isqrt(x_dim)
    small = side // 2 ** len(config["hidden"])
    encoder, channels = [Reshape((1, side, side))], 1
    for c in config["hidden"]:
        encoder += [Conv2D(channels, c, 3, stride=2, padding=1, **args), act()]
        channels = c
    encoder += [Reshape((channels * small * small,)),
                Dense(channels * small * small, 2 * latent, **args)]
    channels, *upsampling = config["decoder_hidden"]
    decoder = [Dense(latent, channels * small * small, **args), act(),
               Reshape((channels, small, small))]
    for c in upsampling:
        decoder += [ConvTranspose2D(channels, c, 3, stride=2, padding=1, output_padding=1,
                                    **args), act()]
        channels = c
    decoder += [ConvTranspose2D(channels, 1, 3, stride=1, padding=1, **args), Reshape((x_dim,))]
    return Sequential(encoder), Sequential(decoder)


def decoder_width(config):
    """Floats per decoder row in the widest array the decoder of ``config`` makes (a ``VAE.config``).

    An MLP: its widest layer, max(x_dim, decoder_hidden); with several
    stochastic layers (``npvae.hvae``), the widest of all their stacks. The conv architecture
    (``build_stacks``): a transposed convolution's columns, C_out k k per input
    pixel, at most 9/4 x_dim max(channels) for the upsampling ones (3 x 3
    kernels, input side side / 2 at the last) and 9 x_dim for the last (stride
    1, one channel): 9/4 x_dim max(4, channels). An upper bound, within a factor of 2.
    A k-sample step (``npvae.iwae.check_step``) and the bound's chunks
    (``npvae.evaluate``) are sized by it.
    """
    if config.get("architecture", "mlp") == "conv":
        return 9 * config["x_dim"] * max(4, *config["decoder_hidden"]) // 4
    widths = config["decoder_hidden"]
    if isinstance(config.get("latent"), (list, tuple)):   # npvae.hvae: one stack per layer
        widths = [w for stack in widths for w in stack] + list(config["latent"])
    return max(config["x_dim"], *widths)


def parameter_shapes(config):
    """Every parameter's name and shape for a ``VAE.config``, without allocating anything.

    A ConfigError for sizes that are not positive integers, or a model beyond
    ``checks.max_parameters()``. Layer indices are ``build_stacks``'s. A
    conditional model's config holds ``n_classes``, C: its first layers take
    C more inputs, the one-hot label (``npvae.cvae``).
    """
    if isinstance(config.get("latent"), (list, tuple)):    # several stochastic layers
        from .hvae import parameter_shapes as hvae_shapes
        return hvae_shapes(config)
    x_dim, latent = positive_int("x_dim", config["x_dim"]), positive_int("latent", config["latent"])
    hidden = sizes("hidden", config["hidden"])
    labels = 0 if config.get("n_classes") is None else positive_int("n_classes", config["n_classes"])
    if config.get("architecture", "mlp") == "mlp":
        decoder_hidden = hidden[::-1] if config.get("decoder_hidden") is None else \
            sizes("decoder_hidden", config["decoder_hidden"])
        encoder = MLP.shapes([x_dim + labels, *hidden, 2 * latent])
        decoder = MLP.shapes([latent + labels, *decoder_hidden, x_dim])
        shapes = {**{f"encoder.{k}": s for k, s in encoder.items()},
                  **{f"decoder.{k}": s for k, s in decoder.items()}}
    elif labels:
        raise ConfigError("a conditional model is built on the mlp architecture; got "
                          f"architecture={config['architecture']!r}")
    else:
        decoder_hidden = _conv_channels(x_dim, hidden, config.get("decoder_hidden"))
        small = math.isqrt(x_dim) // 2 ** len(hidden)
        shapes, channels = {}, 1
        for i, c in enumerate(hidden):                 # Conv2D at 1, 3, ...: (c_out, c_in, 3, 3)
            shapes.update({f"encoder.{2 * i + 1}.W": (c, channels, 3, 3), f"encoder.{2 * i + 1}.b": (c,)})
            channels = c
        flat, dense = channels * small * small, 2 * len(hidden) + 2
        shapes.update({f"encoder.{dense}.W": (flat, 2 * latent), f"encoder.{dense}.b": (2 * latent,)})
        channels, *upsampling = decoder_hidden
        shapes.update({"decoder.0.W": (latent, channels * small * small),
                       "decoder.0.b": (channels * small * small,)})
        for i, c in enumerate([*upsampling, 1]):       # ConvTranspose2D at 3, 5, ...: (c_in, c_out, 3, 3)
            shapes.update({f"decoder.{2 * i + 3}.W": (channels, c, 3, 3), f"decoder.{2 * i + 3}.b": (c,)})
            channels = c
    parameter_count(sum(math.prod(s) for s in shapes.values()))
    return shapes


class VAE:
    """A VAE whose encoder and decoder are stacks of layers (MLPs or convolutions).

    Parameters
    ----------
    x_dim : pixels per example, D (784 for MNIST).
    hidden : encoder hidden sizes, e.g. ``(400,)`` or ``(128, 64)``; for
        ``architecture="conv"``, the channels of its stride-2 convolutions.
    latent : latent size Z.
    decoder_hidden : decoder hidden sizes; default ``hidden`` reversed, so
        ``hidden=(128, 64)`` gives 784-128-64 / 20 / 64-128-784. For ``conv``,
        the channels of the dense layer's image, then of each stride-2
        transposed convolution; default ``(hidden[0], *reversed(hidden))``.
    activation : ``relu``, ``leaky_relu``, ``tanh``, ``sigmoid`` or ``softplus``.
    likelihood : ``bernoulli`` (decoder gives logits) or ``gaussian`` (decoder
        gives means; fixed standard deviation ``sigma``).
    beta : weight of the KL term (1 gives the ELBO).
    init : ``he``, ``glorot`` or ``pytorch``; default by activation.
    dtype : ``float32`` for training, ``float64`` for gradient checks.
    architecture : ``mlp`` (dense layers) or ``conv`` (see ``build_stacks``;
        x_dim must be a square image whose side 2^len(hidden) divides).
    backend : ``numpy`` or ``cupy``.
    seed : seeds the initial weights.

    ``VAE(**model.config)`` rebuilds the same model (with ``seed``, the same
    initial weights).
    """

    n_classes = None
    """Labels the model is conditioned on: None here, C for ``npvae.cvae.CVAE``."""

    def __init__(self, x_dim=784, hidden=(400,), latent=20, *, decoder_hidden=None,
                 activation="relu", likelihood="bernoulli", sigma=1.0, beta=1.0,
                 init=None, dtype="float32", architecture="mlp", backend="numpy", seed=0):
        self.config = config = check_arguments(
            positive_int("x_dim", x_dim), hidden, latent, decoder_hidden=decoder_hidden, activation=activation,
            likelihood=likelihood, sigma=sigma, beta=beta, init=init, dtype=dtype,
            architecture=architecture)
        if self.n_classes is not None:
            config["n_classes"] = self.n_classes
        parameter_shapes(config)  # refuse a model beyond the size limit before allocating it
        self.xp = xp = get_xp(backend)
        self.backend = backend
        self.x_dim, self.latent, self.beta = config["x_dim"], config["latent"], config["beta"]
        self.dtype = dtype = np.dtype(config["dtype"])
        self.encoder, self.decoder = self._stacks(config, rng=np.random.default_rng(seed),
                                                  dtype=dtype, xp=xp)
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

    def _stacks(self, config, **layer_args):
        """The encoder and decoder: ``build_stacks`` (a hook: ``npvae.cvae`` feeds them labels)."""
        return build_stacks(config, **layer_args)

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

    def noise(self, batch, eps=None, rng=None):
        """The noise eps (batch, Z) of a step: ``eps`` itself, checked, or drawn from the
        ``Generator`` ``rng`` in the model's dtype (as ``reparameterize`` draws it)."""
        if eps is None:
            if rng is None:
                raise ValueError("the noise needs eps or a random Generator rng")
            return rng.standard_normal((batch, self.latent), dtype=self.dtype)
        if getattr(eps, "shape", None) != (batch, self.latent):
            raise ConfigError(f"eps must have shape ({batch}, {self.latent}); "
                              f"got shape {getattr(eps, 'shape', None)}")
        return eps

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
        eps = self.noise(x.shape[0], eps, rng)
        self.x = x
        self.beta_now = self.beta if beta is None else beta
        self.mu, self.logvar = self.encode(x)
        self.z, self.eps = reparameterize(self.mu, self.logvar, eps)
        self.out = self.decoder.forward(self.z)
        recon = self.nll(self.out, x).mean()
        kl = gaussian_kl(self.mu, self.logvar).mean()
        return LossTerms(recon + self.beta_now * kl, recon, kl)

    def backward(self, batch=None):
        """Fill ``grads`` (and so ``dtheta``) with d loss / d parameter.

        Per example, d loss / d (its term) is 1/B: the batch mean. ``batch``:
        B when this forward saw a chunk of a batch of B examples
        (``npvae.chunked``), so the gradients are the chunk's share of the
        batch's; default, the examples of the last forward.
        Derivation: ``derivations.md#the-whole-elbo``.
        """
        dout = 1.0 / (self.x.shape[0] if batch is None else batch)
        dz = self.decoder.backward(self.nll_backward(dout, self.out, self.x))
        dmu, dlogvar = reparameterize_backward(dz, self.logvar, self.eps)
        dmu_kl, dlogvar_kl = gaussian_kl_backward(self.beta_now * dout, self.mu, self.logvar)
        dh = self.xp.concatenate([dmu + dmu_kl, dlogvar + dlogvar_kl], axis=1)
        self.encoder.backward(dh, need_dx=False)

    def __repr__(self):
        c = self.config
        if c["architecture"] == "conv":
            side = math.isqrt(c["x_dim"])
            return (f"VAE(conv {side}x{side}, channels {'-'.join(map(str, c['hidden']))} / "
                    f"{c['latent']} / {'-'.join(map(str, c['decoder_hidden']))}-1, "
                    f"{c['activation']}, {c['likelihood']}, beta={c['beta']}, {c['dtype']})")
        return (f"VAE({c['x_dim']}-{'-'.join(map(str, c['hidden']))} / {c['latent']} / "
                f"{'-'.join(map(str, c['decoder_hidden']))}-{c['x_dim']}, {c['activation']}, "
                f"{c['likelihood']}, beta={c['beta']}, {c['dtype']})")
