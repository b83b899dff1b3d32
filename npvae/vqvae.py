"""The VQ-VAE (van den Oord, Vinyals and Kavukcuoglu, 2017) on npvae's convolutions.

    x (B, 784) --encoder--> z_e (B, F, 7, 7)
    codes = nearest code of each of the 49 vectors      (B, 7, 7) in [0, N)
    z_q   = E[codes]                                    (B, F, 7, 7)
    z_q --decoder--> logits (B, 784) of Bernoulli pixels

The encoder and decoder are Keras's VQ-VAE example's on npvae's layers (its
defaults F = 16, N = 64, commitment weight lambda = 0.25), for hidden = (32, 64)::

    encoder: (1, 28, 28) Conv 32 s2 -> (32, 14, 14) Conv 64 s2 -> (64, 7, 7)
             Conv 1x1 -> (F, 7, 7)
    decoder: (F, 7, 7) ConvT 64 s2 -> (64, 14, 14) ConvT 32 s2 -> (32, 28, 28)
             ConvT 1 s1 -> (1, 28, 28) flatten 784

3 x 3 kernels (padding 1, output padding 1 where the side doubles), the
activation after every layer but the last of each stack. The loss, in nats
per example (sums over pixels, positions and dimensions; the batch mean):

    recon      = mean_i -log p(x_i | z_q,i)
    codebook   = mean_i |sg[z_e,i] - z_q,i|^2
    commitment = mean_i lambda |z_e,i - sg[z_q,i]|^2     (lambda: ``beta``)
    loss       = recon + codebook + commitment   (codebook left out under EMA updates)

``backward`` passes the decoder's gradient straight through the quantizer
to the encoder (``npvae.vq``). Derivation: ``tutorials/derivations.md``,
section "Vector quantization".
"""

import math
from collections import namedtuple

import numpy as np

from .activations import ACTIVATIONS, sigmoid
from .backend import get_xp
from .checks import MODEL_DTYPES, number, one_of, parameter_count, positive_int, sizes
from .conv import Conv2D, ConvTranspose2D, Reshape
from .errors import ConfigError
from .gradcheck import DEFAULT_H, DEFAULT_TOL, CheckResult, central_differences, noise_floor, \
    rel_error, relu_sides
from .layers import INITS, Sequential, default_init, flatten_parameters
from .losses import bernoulli_nll, bernoulli_nll_backward
from .vae import VAE
from .vq import UPDATES, VectorQuantizer

LIKELIHOODS = ("bernoulli",)

VQLossTerms = namedtuple("VQLossTerms", ["loss", "recon", "codebook", "commitment"])
VQLossTerms.__doc__ = "The batch loss and its three terms, in nats per example (0-d arrays)."


def check_arguments(x_dim=784, hidden=(32, 64), *, decoder_hidden=None, embedding_dim=16,
                    n_codes=64, beta=0.25, update="gradient", decay=0.99, epsilon=1e-5,
                    activation="relu", likelihood="bernoulli", init=None, dtype="float32"):
    """The VQ-VAE's arguments checked and normalised: its ``config``, or a one-line ConfigError.

    ``x_dim=None`` (``TrainConfig.validate``, before the data is loaded) skips the image-size check.
    """
    x_dim = None if x_dim is None else positive_int("x_dim", x_dim)
    hidden = sizes("hidden", hidden)
    if not hidden:
        raise ConfigError("hidden=[] leaves the VQ-VAE without a convolution; give its "
                          "channels, e.g. (32, 64)")
    decoder_hidden = hidden[::-1] if decoder_hidden is None else sizes("decoder_hidden",
                                                                       decoder_hidden)
    if len(decoder_hidden) != len(hidden):
        raise ConfigError(f"decoder_hidden={decoder_hidden!r} must hold {len(hidden)} channel "
                          f"counts, one per upsampling transposed convolution of hidden={hidden!r}")
    side = None if x_dim is None else math.isqrt(x_dim)
    if side is not None and (side * side != x_dim or side % 2 ** len(hidden)):
        raise ConfigError(f"the VQ-VAE needs square images whose side divides by "
                          f"2^{len(hidden)} (one halving per entry of hidden={hidden!r}); got "
                          f"x_dim={x_dim}")
    for name, value, choices in [("update", update, UPDATES),
                                 ("activation", activation, ACTIVATIONS),
                                 ("likelihood", likelihood, LIKELIHOODS),
                                 ("init", init, (None, *INITS)),
                                 ("dtype", dtype, MODEL_DTYPES)]:
        one_of(name, value, choices)
    decay = number("decay", decay)
    if decay >= 1:
        raise ConfigError(f"decay={decay!r} must be in [0, 1)")
    return dict(x_dim=x_dim, hidden=hidden, decoder_hidden=decoder_hidden,
                embedding_dim=positive_int("embedding_dim", embedding_dim),
                n_codes=positive_int("n_codes", n_codes), beta=number("beta", beta),
                update=update, decay=decay, epsilon=number("epsilon", epsilon, positive=True),
                activation=activation, likelihood=likelihood, init=init,
                dtype=np.dtype(dtype).name)


def is_vq(config):
    """Whether a model config (a dict, e.g. ``VQVAE.config``) is a VQ-VAE's: it has ``n_codes``."""
    return isinstance(config, dict) and "n_codes" in config


def parameter_shapes(config):
    """Every parameter's name and shape for a ``VQVAE.config``, without allocating anything.

    Layer indices are ``build_stacks``'s: the encoder's convolutions at 1, 3, ...
    (W (c_out, c_in, 3, 3)) and its 1 x 1 convolution to F at 2n + 1; the
    decoder's transposed convolutions at 0, 2, ..., 2n (W (c_in, c_out, 3, 3));
    ``quantizer.codebook`` (N, F) under gradient updates only.
    """
    c = check_arguments(**config)
    shapes, channels = {}, 1
    for i, out in enumerate(c["hidden"]):
        shapes.update({f"encoder.{2 * i + 1}.W": (out, channels, 3, 3),
                       f"encoder.{2 * i + 1}.b": (out,)})
        channels = out
    last, F = 2 * len(c["hidden"]) + 1, c["embedding_dim"]
    shapes.update({f"encoder.{last}.W": (F, channels, 1, 1), f"encoder.{last}.b": (F,)})
    channels = F
    for i, out in enumerate([*c["decoder_hidden"], 1]):
        shapes.update({f"decoder.{2 * i}.W": (channels, out, 3, 3), f"decoder.{2 * i}.b": (out,)})
        channels = out
    if c["update"] == "gradient":
        shapes["quantizer.codebook"] = (c["n_codes"], F)
    parameter_count(sum(math.prod(s) for s in shapes.values()))
    return shapes


def buffer_shapes(config):
    """``{name: (shape, dtype)}`` of the arrays a VQ-VAE keeps beside its parameters
    (``VQVAE.buffers``): the usage counts (N,) int64, and under EMA updates the codebook
    (N, F), its moving counts (N,) and sums (N, F) in the model's dtype."""
    N, F, dtype = config["n_codes"], config["embedding_dim"], np.dtype(config["dtype"])
    shapes = {"quantizer.counts": ((N,), np.dtype(np.int64))}
    if config["update"] == "ema":
        shapes.update({"quantizer.codebook": ((N, F), dtype), "quantizer.ema_count": ((N,), dtype),
                       "quantizer.ema_sum": ((N, F), dtype)})
    return shapes


def build_stacks(config, *, rng, dtype, xp):
    """The encoder (x -> z_e (B, F, g, g)) and decoder (z_q -> out (B, x_dim)), g = side / 2^n."""
    init = default_init(config["activation"]) if config["init"] is None else config["init"]
    args = dict(rng=rng, init=init, dtype=dtype, xp=xp)
    act = ACTIVATIONS[config["activation"]]
    side = math.isqrt(config["x_dim"])
    encoder, channels = [Reshape((1, side, side))], 1
    for c in config["hidden"]:
        encoder += [Conv2D(channels, c, 3, stride=2, padding=1, **args), act()]
        channels = c
    encoder.append(Conv2D(channels, config["embedding_dim"], 1, **args))
    decoder, channels = [], config["embedding_dim"]
    for c in config["decoder_hidden"]:
        decoder += [ConvTranspose2D(channels, c, 3, stride=2, padding=1, output_padding=1,
                                    **args), act()]
        channels = c
    decoder += [ConvTranspose2D(channels, 1, 3, stride=1, padding=1, **args),
                Reshape((config["x_dim"],))]
    return Sequential(encoder), Sequential(decoder)


class VQVAE:
    """A VQ-VAE: conv encoder, vector quantizer (``npvae.vq``), conv decoder.

    Parameters
    ----------
    x_dim : pixels per example (a square image; 784 for MNIST).
    hidden : channels of the encoder's stride-2 convolutions, (32, 64).
    decoder_hidden : channels of the decoder's stride-2 transposed
        convolutions; default ``hidden`` reversed.
    embedding_dim : F, each code vector's dimension (16).
    n_codes : N, the codebook's size (64).
    beta : lambda, the commitment weight (0.25; the paper's beta).
    update : the codebook learns by ``gradient`` (of the codebook loss) or
        by ``ema`` (moving averages, ``decay`` and ``epsilon``).
    likelihood : ``bernoulli`` (the decoder gives logits; pixels in [0, 1]),
        the one supported so far.
    activation, init, dtype, backend : as ``npvae.VAE``.
    seed : seeds the initial weights and codebook.

    ``params`` and ``grads`` are named ``encoder.*``, ``decoder.*`` and
    (gradient updates) ``quantizer.codebook``: views into ``theta`` and
    ``dtheta``, so npvae's optimizers update them in one pass.
    ``VQVAE(**model.config)`` rebuilds the same model.
    """

    def __init__(self, x_dim=784, hidden=(32, 64), *, decoder_hidden=None, embedding_dim=16,
                 n_codes=64, beta=0.25, update="gradient", decay=0.99, epsilon=1e-5,
                 activation="relu", likelihood="bernoulli", init=None, dtype="float32",
                 backend="numpy", seed=0):
        self.config = config = check_arguments(
            x_dim, hidden, decoder_hidden=decoder_hidden, embedding_dim=embedding_dim,
            n_codes=n_codes, beta=beta, update=update, decay=decay, epsilon=epsilon,
            activation=activation, likelihood=likelihood, init=init, dtype=dtype)
        self.xp = xp = get_xp(backend)
        self.backend, self.x_dim = backend, config["x_dim"]
        self.dtype = dtype = np.dtype(config["dtype"])
        rng = np.random.default_rng(seed)
        self.encoder, self.decoder = build_stacks(config, rng=rng, dtype=dtype, xp=xp)
        self.quantizer = VectorQuantizer(
            config["n_codes"], config["embedding_dim"], beta=config["beta"],
            update=config["update"], decay=config["decay"], epsilon=config["epsilon"], rng=rng,
            dtype=dtype, xp=xp)
        self.theta, self.dtheta = flatten_parameters(
            self.encoder.layers + self.decoder.layers + [self.quantizer], xp)

    noise_dim = 0   # a VQ-VAE draws no noise: its codes are the nearest, not sampled

    nll = staticmethod(bernoulli_nll)
    nll_backward = staticmethod(bernoulli_nll_backward)
    output_mean = staticmethod(sigmoid)

    def _named(self, which):
        return {f"{part}.{k}": v for part in ("encoder", "decoder", "quantizer")
                for k, v in getattr(getattr(self, part), which).items()}

    @property
    def params(self):
        """Every parameter by name (``"encoder.1.W"``, ..., ``"quantizer.codebook"``)."""
        return self._named("params")

    @property
    def grads(self):
        """Every gradient, with the same names as ``params``."""
        return self._named("grads")

    @property
    def buffers(self):
        """The arrays beside the parameters that training changes and a checkpoint keeps
        (``buffer_shapes``): ``quantizer.counts``, the codes' usage since the last dead-code
        restart, and under EMA updates ``quantizer.codebook``, ``.ema_count``, ``.ema_sum``."""
        q = self.quantizer
        return {"quantizer.counts": q.counts, **{f"quantizer.{k}": v for k, v in q.buffers.items()}}

    check_input = VAE.check_input

    def encode(self, x):
        """The codes of x (B, x_dim): (B, g, g) integers in [0, N)."""
        return self.quantizer.nearest(self.encoder.forward(x))

    def decode(self, codes):
        """The decoder's mean of p(x | z_q) for codes (B, g, g): probabilities or means (B, x_dim)."""
        return self.output_mean(self.decoder.forward(self.quantizer.lookup(codes)))

    def forward(self, x, *, codes=None, check=True):
        """The loss terms of batch x (B, x_dim): ``VQLossTerms(loss, recon, codebook, commitment)``.

        ``codes`` (B, g, g) holds the codes fixed (the gradient checks);
        otherwise each position takes its nearest code. ``check=False``
        skips the scan of x's values. Keeps what ``backward`` needs.
        """
        self.x = x = self.check_input(x, values=check)
        self.z_e = self.encoder.forward(x)
        self.z_q, self.codes, terms = self.quantizer.forward(self.z_e, codes)
        self.out = self.decoder.forward(self.z_q)
        recon = self.nll(self.out, x).mean()
        codebook, commitment = terms.codebook.mean(), terms.commitment.mean()
        loss = recon + commitment + (codebook if self.config["update"] == "gradient" else 0)
        return VQLossTerms(loss, recon, codebook, commitment)

    def backward(self):
        """Fill ``grads`` (and so ``dtheta``): the decoder's from the reconstruction, the
        codebook's from the codebook loss, the encoder's from the decoder's gradient passed
        straight through plus the commitment loss. Derivation:
        ``derivations.md#vector-quantization``."""
        dout = 1.0 / self.x.shape[0]
        dz_q = self.decoder.backward(self.nll_backward(dout, self.out, self.x))
        dz_e = self.quantizer.backward(dz_q, dout)
        self.encoder.backward(dz_e, need_dx=False)

    def update_codebook(self):
        """After the optimizer's step: the moving-average codebook update (``ema`` only; a
        gradient-trained codebook was updated by the optimizer)."""
        if self.config["update"] == "ema":
            self.quantizer.ema_update()

    def restart_dead_codes(self, rng):
        """Restart the codes unused since the last call at vectors of the last batch's z_e,
        drawn by ``rng``; returns ``(counts, restarted)``: the usage (N,) and the codes moved."""
        counts = self.quantizer.reset_usage()
        return counts, self.quantizer.restart_dead_codes(counts, self.z_e, rng)

    @property
    def grid(self):
        """The code grid's (rows, cols): the image side halved once per convolution, (g, g)."""
        g = math.isqrt(self.config["x_dim"]) // 2 ** len(self.config["hidden"])
        return g, g

    def __repr__(self):
        c = self.config
        side, (grid, _) = math.isqrt(c["x_dim"]), self.grid
        return (f"VQVAE(conv {side}x{side}, channels {'-'.join(map(str, c['hidden']))} / "
                f"{grid}x{grid}x{c['embedding_dim']}, {c['n_codes']} codes / "
                f"{'-'.join(map(str, c['decoder_hidden']))}-1, {c['activation']}, "
                f"{c['likelihood']}, beta={c['beta']}, {c['update']}, {c['dtype']})")


def check_gradients(model, x, h=DEFAULT_H, tol=DEFAULT_TOL):
    """Every gradient of a float64 ``VQVAE`` at batch x against central differences.

    The codes are held at the nearest ones of x (the argmin has no derivative),
    and each gradient is compared with the derivative of what it claims to be
    the derivative of (``derivations.md#vector-quantization``):

    - ``decoder.*``: the loss itself (only the reconstruction reaches them);
    - ``quantizer.codebook``: the codebook loss alone, |sg[z_e] - E[c]|^2 (the
      decoder's gradient stops at its input z_e + sg[z_q - z_e]);
    - ``encoder.*``: the straight-through surrogate, the reconstruction of
      z_e + Delta with the offset Delta = z_q - z_e held constant, plus the
      commitment with the codes' vectors constant.

    Returns one ``CheckResult`` per parameter. The floor of the relative
    error is ``noise_floor`` of the three terms' magnitudes. Entries whose
    +-h step moves a ReLU input across 0 are skipped and counted, as
    ``npvae.gradcheck.check_model`` does.
    """
    terms = model.forward(x)
    sides = relu_sides(model)
    base = None if sides is None else [a.copy() for a in sides()]
    model.backward()
    analytic = {k: g.copy() for k, g in model.grads.items()}
    codes, z_q = model.codes.copy(), model.z_q.copy()
    offset = z_q - model.z_e
    floor = noise_floor(abs(float(terms.recon)) + abs(float(terms.codebook))
                        + abs(float(terms.commitment)))

    def loss():
        return float(model.forward(x, codes=codes, check=False).loss)

    def codebook_loss():
        return float(model.forward(x, codes=codes, check=False).codebook)

    def straight_through():
        z_e = model.encoder.forward(x)
        recon = model.nll(model.decoder.forward(z_e + offset), x).mean()
        return float(recon + model.quantizer.beta * ((z_e - z_q) ** 2).sum() / x.shape[0])

    of = {"decoder": loss, "quantizer": codebook_loss, "encoder": straight_through}
    results = []
    for name, p in model.params.items():
        numeric, crossed = central_differences(of[name.split(".")[0]], p, h, sides, base)
        kept = ~crossed
        results.append(CheckResult(name, rel_error(analytic[name][kept], numeric[kept], floor),
                                   tol, int(crossed.sum()), int(p.size)))
    return results
