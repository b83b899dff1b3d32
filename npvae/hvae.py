"""A VAE with L stochastic layers h_1, ..., h_L (Burda, Grosse and Salakhutdinov, 2016).

    inference  q(h | x) = q(h_1 | x) q(h_2 | h_1) ... q(h_L | h_{L-1})
    generative p(x, h)  = p(h_L) p(h_{L-1} | h_L) ... p(h_1 | h_2) p(x | h_1)

Every conditional is a diagonal Gaussian whose [mu | logvar] an MLP computes
(p(h_L) = N(0, I)); p(x | h_1) is the one-layer VAE's likelihood (Bernoulli
logits or Gaussian means). The paper's two-layer MNIST model, with tanh::

    q:  x (784) -> 200 -> 200 -> h_1 (100) -> 100 -> 100 -> h_2 (50)
    p:  h_2 (50) -> 100 -> 100 -> h_1 (100) -> 200 -> 200 -> x (784)

``hidden`` holds the hidden sizes of each inference network, layer by layer
(``((200, 200), (100, 100))``), ``latent`` the size of each stochastic layer
(``(100, 50)``), and ``decoder_hidden`` those of each generative network,
indexed by the layer it produces: entry 0 is p(x | h_1)'s, entry l is
p(h_l | h_{l+1})'s (default: ``hidden`` entry l reversed, the mirror image).

Neither log p(h_1 | h_2) nor log q(h_2 | h_1) has a closed-form KL against
the other, so every term is sampled. With k noise draws eps (k, B, Z_1 + ... +
Z_L) per example, ancestral through q with the reparameterization,

    h_l = mu_l + exp(logvar_l / 2) * eps_l,  [mu_l | logvar_l] = q-net_l(h_{l-1}),  h_0 = x
    log w = log p(x | h_1) + log p(h_L) + sum_{l<L} log p(h_l | h_{l+1}) - sum_l log q(h_l | h_{l-1})

    objective "elbo": loss = mean_b 1/k sum_i [ -log p(x | h_1) + beta (log q - log p(h)) ]
    objective "iwae": loss = -mean_b log 1/k sum_i w_ib                  (beta must be 1)

in nats per example, as everywhere (``recon`` is the mean -log p(x | h_1),
``kl`` the mean sampled log q(h | x) - log p(h)). The k samples of a batch go
through every network above the first as one (k B, .) batch, sample-major
(row i B + b is sample i of example b), like ``npvae.iwae``.

Backward: the one-layer importance-weighted backward, applied layer by layer
from the top; h_1 collects three paths (from p(x | h_1), from p(h_1 | h_2),
and back through q(h_2 | h_1)) before it goes down into q(h_1 | x).
Derivation: ``tutorials/derivations.md``, section "Two stochastic layers".
"""

from collections import namedtuple

import numpy as np

from .activations import sigmoid
from .backend import get_xp
from .checks import parameter_count, positive_int, sizes
from .errors import ConfigError
from .backend import to_numpy
from .evaluate import _batches, logmeanexp
from .iwae import KSampleObjective, importance_weights
from .layers import MLP, default_init, flatten_parameters
from .losses import (
    bernoulli_nll,
    bernoulli_nll_backward,
    gaussian_nll,
    gaussian_nll_backward,
    log_normal,
    log_normal_at_eps,
    log_normal_backward,
    log_standard_normal,
)
from .reparam import reparameterize, reparameterize_backward
from .vae import VAE, LossTerms, check_arguments as check_vae_arguments

HLogWeights = namedtuple("HLogWeights", ["log_w", "log_px_h", "log_ph", "log_qh"])
HLogWeights.__doc__ = ("The log importance weights (k, B) and their three terms (k, B): "
                       "log p(x | h_1), log p(h) = log p(h_L) + sum log p(h_l | h_{l+1}), "
                       "log q(h | x).")


def is_hierarchical(config):
    """Whether a model ``config`` (or a ``TrainConfig``'s fields) has several stochastic layers:
    its ``latent`` is a sequence of sizes rather than one size."""
    latent = config.get("latent") if isinstance(config, dict) else getattr(config, "latent", None)
    return isinstance(latent, (list, tuple))


def _nested(name, value, n):
    """``n`` lists of layer sizes from ``value``, or a one-line ConfigError."""
    def is_list(v):
        return not isinstance(v, (str, bytes)) and hasattr(v, "__len__")

    if not is_list(value) or len(value) != n or not all(map(is_list, value)):
        raise ConfigError(f"{name}={value!r} must hold {n} lists of hidden sizes, one per "
                          f"stochastic layer, e.g. ((200, 200), (100, 100))")
    return [sizes(name, v) for v in value]


def check_model_arguments(*args, **kwargs):
    """A model's arguments checked by the rules of the model they build: this module's
    ``check_arguments`` when ``latent`` is a sequence of sizes (several stochastic layers),
    else ``npvae.vae.check_arguments``. Returns the normalised config, or a ConfigError."""
    check = check_arguments if is_hierarchical(kwargs) else check_vae_arguments
    return check(*args, **kwargs)


def check_arguments(x_dim=784, hidden=((200, 200), (100, 100)), latent=(100, 50), *,
                    decoder_hidden=None, activation="tanh", likelihood="bernoulli", sigma=1.0,
                    beta=1.0, init=None, dtype="float32", architecture="mlp"):
    """The hierarchical VAE's arguments checked and normalised: its ``config``, or a ConfigError.

    The rules for activation, likelihood, sigma, beta, init and dtype are the
    one-layer VAE's (``npvae.vae.check_arguments``); here only the layer sizes.
    """
    latent = sizes("latent", latent)
    if len(latent) < 2:
        raise ConfigError(f"latent={latent!r} must give two or more stochastic layers' sizes "
                          "(one layer is npvae.VAE)")
    if architecture != "mlp":
        raise ConfigError(f"architecture={architecture!r}: a model with several stochastic "
                          "layers is built of MLPs (architecture 'mlp')")
    L = len(latent)
    hidden = _nested("hidden", hidden, L)
    decoder_hidden = ([h[::-1] for h in hidden] if decoder_hidden is None
                      else _nested("decoder_hidden", decoder_hidden, L))
    rest = check_vae_arguments(x_dim, hidden[0], latent[0], activation=activation,
                               likelihood=likelihood, sigma=sigma, beta=beta, init=init,
                               dtype=dtype)
    return dict(rest, hidden=hidden, latent=latent, decoder_hidden=decoder_hidden)


def network_sizes(config):
    """The sizes of every MLP, ``{"q_h1": [...], ..., "p_x": [...], "p_h1": [...], ...}``.

    q_h{l}: h_{l-1} -> hidden[l-1] -> 2 Z_l  ([mu | logvar] of q(h_l | h_{l-1}), h_0 = x);
    p_x: h_1 -> decoder_hidden[0] -> D (logits or means of p(x | h_1));
    p_h{l}: h_{l+1} -> decoder_hidden[l] -> 2 Z_l ([mu | logvar] of p(h_l | h_{l+1})).
    """
    latent, x_dim = config["latent"], config["x_dim"]
    below = [x_dim, *latent[:-1]]
    nets = {f"q_h{l + 1}": [below[l], *config["hidden"][l], 2 * latent[l]]
            for l in range(len(latent))}
    nets["p_x"] = [latent[0], *config["decoder_hidden"][0], x_dim]
    nets.update({f"p_h{l}": [latent[l], *config["decoder_hidden"][l], 2 * latent[l - 1]]
                 for l in range(1, len(latent))})
    return nets


def parameter_shapes(config):
    """Every parameter's name and shape for an ``HVAE.config``, without allocating anything."""
    config = check_arguments(positive_int("x_dim", config["x_dim"]), config["hidden"],
                             config["latent"], decoder_hidden=config.get("decoder_hidden"))
    shapes = {f"{net}.{k}": s for net, n in network_sizes(config).items()
              for k, s in MLP.shapes(n).items()}
    parameter_count(sum(int(np.prod(s)) for s in shapes.values()))
    return shapes


def _split(h, Z):
    """[mu | logvar] (..., 2 Z) as (mu, logvar)."""
    return h[..., :Z], h[..., Z:]


class HVAE:
    """A VAE with L >= 2 stochastic layers; arguments as ``npvae.VAE``'s, with per-layer sizes.

    Parameters
    ----------
    x_dim : pixels per example, D.
    hidden : the hidden sizes of each inference network q(h_l | h_{l-1}),
        e.g. ``((200, 200), (100, 100))``.
    latent : the size of each stochastic layer, bottom first, e.g. ``(100, 50)``.
    decoder_hidden : the hidden sizes of p(x | h_1), then of each
        p(h_l | h_{l+1}); default each of ``hidden`` reversed.
    activation, likelihood, sigma, beta, init, dtype, backend, seed : as ``npvae.VAE``.

    Attributes the trainer, the evaluator and the figures use, as for a VAE:
    ``theta``/``dtheta`` (flat parameters and gradients), ``params``/``grads``,
    ``latent`` (the **top** layer's size Z_L: ``decode`` and the figures work
    there), ``latents`` (every layer's), ``noise_dim`` (Z_1 + ... + Z_L, the
    width of ``eps``), ``encode``, ``decode``, ``forward``/``backward`` (the
    one-sample ELBO, sampled KL; ``HKSampleObjective`` for k samples).
    """

    n_classes = None
    """No labels: a hierarchical model is not conditional."""

    check_input = VAE.check_input

    def __init__(self, x_dim=784, hidden=((200, 200), (100, 100)), latent=(100, 50), *,
                 decoder_hidden=None, activation="tanh", likelihood="bernoulli", sigma=1.0,
                 beta=1.0, init=None, dtype="float32", architecture="mlp", backend="numpy",
                 seed=0):
        self.config = config = check_arguments(
            positive_int("x_dim", x_dim), hidden, latent, decoder_hidden=decoder_hidden,
            activation=activation, likelihood=likelihood, sigma=sigma, beta=beta, init=init,
            dtype=dtype, architecture=architecture)
        parameter_shapes(config)  # refuse a model beyond the size limit before allocating it
        self.xp = xp = get_xp(backend)
        self.backend = backend
        self.x_dim, self.beta = config["x_dim"], config["beta"]
        self.latents = tuple(config["latent"])
        self.latent, self.noise_dim = self.latents[-1], sum(self.latents)
        self.dtype = dtype = np.dtype(config["dtype"])
        init = default_init(activation) if config["init"] is None else config["init"]
        rng = np.random.default_rng(seed)
        self.nets = {name: MLP(n, activation, rng=rng, init=init, dtype=dtype, xp=xp)
                     for name, n in network_sizes(config).items()}
        self.theta, self.dtheta = flatten_parameters(
            [layer for net in self.nets.values() for layer in net.layers], xp)
        if likelihood == "bernoulli":
            self.nll, self.nll_backward, self.output_mean = (
                bernoulli_nll, bernoulli_nll_backward, sigmoid)
        else:
            s = config["sigma"]
            self.nll = lambda out, x: gaussian_nll(out, x, s)
            self.nll_backward = lambda dout, out, x: gaussian_nll_backward(dout, out, x, s)
            self.output_mean = lambda out: out
        self._own = HKSampleObjective(self, 1, "elbo")

    @property
    def L(self):
        """The number of stochastic layers."""
        return len(self.latents)

    @property
    def params(self):
        """Every parameter by name (``"q_h1.0.W"``, ..., ``"p_x.0.W"``, ...): views into ``theta``."""
        return {f"{name}.{k}": v for name, net in self.nets.items() for k, v in net.params.items()}

    @property
    def grads(self):
        """Every gradient, with the same names as ``params``: views into ``dtheta``."""
        return {f"{name}.{k}": v for name, net in self.nets.items() for k, v in net.grads.items()}

    def encode_layers(self, x):
        """[(mu_l, logvar_l)] of every q(h_l | h_{l-1}), each (B, Z_l), with h_{l-1} its mean.

        The deterministic pass through the means: what ``encode`` and the
        per-layer active units (``active_units_per_layer``) read.
        """
        out, h = [], x
        for l, Z in enumerate(self.latents):
            mu, logvar = _split(self.nets[f"q_h{l + 1}"].forward(h), Z)
            out.append((mu, logvar))
            h = mu
        return out

    def encode(self, x):
        """The top layer's q(h_L | h_{L-1}) through the means: ``(mu, logvar)``, each (B, Z_L)."""
        return self.encode_layers(x)[-1]

    def decoder_out(self, h):
        """p(x | h_1)'s output (Bernoulli logits or Gaussian means), (B, D), for top-layer
        values ``h`` (B, Z_L), through the means of p(h_l | h_{l+1}) below it."""
        for l in range(self.L - 1, 0, -1):
            h = _split(self.nets[f"p_h{l}"].forward(h), self.latents[l - 1])[0]
        return self.nets["p_x"].forward(h)

    def decode(self, h):
        """The mean of p(x | h_1) for top-layer values ``h`` (B, Z_L), through the means of
        p(h_l | h_{l+1}) below it: probabilities or means, (B, D)."""
        return self.output_mean(self.decoder_out(h))

    def log_weights(self, x, eps):
        """log w for noise ``eps`` (k, B, noise_dim): an ``HLogWeights`` of (k, B) arrays.

        Forward only through the networks; ``HKSampleObjective.forward`` keeps
        what its backward needs. Shapes: x (B, D).
        """
        return self._forward(x, eps)[0]

    def _forward(self, x, eps):
        """``(HLogWeights, cache)``: the sampled pass, ancestral through q, then p."""
        k, B = eps.shape[:2]
        R = k * B
        cache = {"hs": [], "eps": [], "logvars": [], "p": []}
        log_qh, h, offset = 0.0, x, 0
        for l, Z in enumerate(self.latents):
            mu, logvar = _split(self.nets[f"q_h{l + 1}"].forward(h), Z)
            e = eps[..., offset:offset + Z]
            offset += Z
            if l == 0:                       # (B, Z_1), shared by the k samples
                h, _ = reparameterize(mu, logvar, e)
                log_qh = log_qh + log_normal_at_eps(e, logvar)
                h = h.reshape(R, Z)
            else:                            # (R, Z_l), one per sample
                e = e.reshape(R, Z)
                h, _ = reparameterize(mu, logvar, e)
                log_qh = log_qh + log_normal_at_eps(e, logvar).reshape(k, B)
            cache["hs"].append(h)
            cache["eps"].append(e)
            cache["logvars"].append(logvar)
        log_ph = log_standard_normal(h).reshape(k, B)
        for l in range(self.L - 1, 0, -1):   # p(h_l | h_{l+1}), l = L-1 .. 1 (1-based h_l)
            Z = self.latents[l - 1]
            pmu, plogvar = _split(self.nets[f"p_h{l}"].forward(cache["hs"][l]), Z)
            log_ph = log_ph + log_normal(cache["hs"][l - 1], pmu, plogvar).reshape(k, B)
            cache["p"].append((pmu, plogvar))
        out = self.nets["p_x"].forward(cache["hs"][0]).reshape(k, B, self.x_dim)
        log_px_h = -self.nll(out, x)
        cache["out"] = out
        return HLogWeights(log_px_h + log_ph - log_qh, log_px_h, log_ph, log_qh), cache

    def forward(self, x, y=None, *, eps=None, rng=None, beta=None, check=True):
        """The one-sample ELBO's ``LossTerms`` (the KL sampled): noise ``eps`` (B, noise_dim)
        or drawn from ``rng``. ``HKSampleObjective(model, 1, "elbo")`` with eps[None]."""
        if eps is not None:
            if getattr(eps, "ndim", None) != 2:
                raise ConfigError(f"eps must have shape (batch, {self.noise_dim}); got shape "
                                  f"{getattr(eps, 'shape', None)}")
            eps = eps[None]
        return self._own.forward(x, y, eps=eps, rng=rng, beta=beta, check=check)

    def backward(self):
        """Fill ``grads`` for the last ``forward``; see ``HKSampleObjective.backward``.

        Derivation: ``derivations.md#two-stochastic-layers``.
        """
        self._own.backward()

    def __repr__(self):
        c = self.config
        q = " / ".join("-".join(map(str, [*h, z])) for h, z in zip(c["hidden"], c["latent"]))
        return (f"HVAE({c['x_dim']}-{q}, {len(c['latent'])} stochastic layers, "
                f"{c['activation']}, {c['likelihood']}, beta={c['beta']}, {c['dtype']})")


def q_sample_backward(dh, logvar, eps, ck):
    """(dmu, dlogvar) of one q layer: the path through h = mu + exp(logvar / 2) eps, and
    the direct term of ``ck`` log q(h | .) = -ck/2 sum(eps^2 + logvar + log 2 pi).

        dmu     = dh
        dlogvar = dh eps exp(logvar / 2) / 2 - ck / 2

    Shapes: dh, logvar, eps (..., Z), ck (..., 1). Derivation:
    ``derivations.md#two-stochastic-layers``.
    """
    dmu, dlogvar = reparameterize_backward(dh, logvar, eps)
    return dmu, dlogvar - 0.5 * ck


class HKSampleObjective(KSampleObjective):
    """The k-sample loss of an ``HVAE``: ``objective`` "elbo" or "iwae", ``k`` samples.

    The interface of ``npvae.iwae.KSampleObjective`` (its arguments, checks
    and noise): ``terms = forward(x, rng=rng)`` (``LossTerms``), then
    ``backward()`` fills ``model.grads``. Noise eps (k, B, noise_dim). "elbo"
    samples the KL too (no closed form between two layers): loss = recon +
    beta kl, kl = mean (log q - log p(h)).
    Derivation: ``derivations.md#two-stochastic-layers``.
    """

    def forward(self, x, y=None, *, eps=None, rng=None, beta=None, check=True):
        """The loss terms of batch ``x`` (B, D); keeps what ``backward`` needs."""
        model = self.model
        if y is not None:
            raise ConfigError("labels y were given, but this model is not conditional")
        x = model.check_input(x, values=check)
        eps, beta = self.noise(x, eps, rng, beta, model.noise_dim)
        self.x, self.beta_now = x, beta
        self.lw, self.cache = lw, _ = model._forward(x, eps)
        recon = -lw.log_px_h.mean()
        kl = (lw.log_qh - lw.log_ph).mean()
        if self.objective != "iwae":   # any ELBO: here its KL is sampled whatever it is called
            return LossTerms(recon + beta * kl, recon, kl)
        self.weights = importance_weights(lw.log_w)
        return LossTerms(-logmeanexp(lw.log_w, axis=0).mean(), recon, kl)

    def backward(self):
        """Fill ``model.grads`` with d loss / d parameter for the last ``forward``.

        With c (k, B) each sample's weight (wt / B for "iwae", 1 / (k B) for
        "elbo") and ck = beta c the weight of the sampled KL terms, rows
        R = k B, top-down (``derivations.md#two-stochastic-layers``):

            d out          = c d nll / d out                        into p_x, gives dh_1
            p(h_l | h_{l+1}): (dh_l, dpmu, dplogvar) = -ck d log N(h_l; pmu, plogvar)
                              [dpmu | dplogvar] into p_h{l}, gives dh_{l+1}
            p(h_L):         dh_L += ck h_L
            then for l = L .. 1, through h_l = mu_l + exp(logvar_l / 2) eps_l
            (``q_sample_backward``):
                dmu_l     = dh_l
                dlogvar_l = dh_l eps_l exp(logvar_l / 2) / 2 - ck / 2   (log q's direct term)
                [dmu_l | dlogvar_l] into q_h{l}, gives dh_{l-1} (l > 1)

        For l = 1 the k samples share mu_1 and logvar_1: summed over samples.
        """
        model, k, cache = self.model, self.k, self.cache
        B, R, L = self.x.shape[0], self.k * self.x.shape[0], model.L
        xp = model.xp
        c = self.weights / B if self.objective == "iwae" else xp.full((k, B), 1.0 / (k * B),
                                                                      dtype=model.dtype)
        ck = (self.beta_now * c).reshape(R, 1)
        dout = model.nll_backward(c, cache["out"], self.x).reshape(R, model.x_dim)
        dhs = [0.0] * L                                   # d loss / d h_l, (R, Z_l)
        dhs[0] = model.nets["p_x"].backward(dout)
        for i, l in enumerate(range(L - 1, 0, -1)):      # p(h_l | h_{l+1}), as in _forward
            pmu, plogvar = cache["p"][i]
            dh, dpmu, dplogvar = log_normal_backward(-ck[:, 0], cache["hs"][l - 1], pmu, plogvar)
            dhs[l - 1] = dhs[l - 1] + dh
            dhs[l] = dhs[l] + model.nets[f"p_h{l}"].backward(
                xp.concatenate([dpmu, dplogvar], axis=1))
        dhs[L - 1] = dhs[L - 1] + ck * cache["hs"][L - 1]  # -log p(h_L) = 1/2 h_L^2 + const
        for l in range(L - 1, -1, -1):                    # down through q, top first
            Z = model.latents[l]
            if l == 0:                                    # mu_1, logvar_1 (B, Z_1): k samples each
                dmu, dlogvar = q_sample_backward(dhs[0].reshape(k, B, Z), cache["logvars"][0],
                                                 cache["eps"][0], ck.reshape(k, B, 1))
                model.nets["q_h1"].backward(
                    xp.concatenate([dmu.sum(axis=0), dlogvar.sum(axis=0)], axis=1), need_dx=False)
            else:
                dmu, dlogvar = q_sample_backward(dhs[l], cache["logvars"][l], cache["eps"][l], ck)
                dhs[l - 1] = dhs[l - 1] + model.nets[f"q_h{l + 1}"].backward(
                    xp.concatenate([dmu, dlogvar], axis=1))

    def __repr__(self):
        return f"HKSampleObjective({self.objective}, k={self.k})"


def layer_activity(model, x, batch_size=1000):
    """A_u = Cov_x(E[h_lu]) of every stochastic layer, bottom first: [host float64 (Z_l,)].

    Burda et al.'s activity statistic, layer by layer, with E[h_l | x] taken
    through the means (``HVAE.encode_layers``: h_{l-1} at its mean, not
    averaged over its samples). A unit with A_u below 0.01 is inactive.
    """
    means = [[] for _ in model.latents]
    for xb in _batches(model, x, batch_size):
        for l, (mu, _) in enumerate(model.encode_layers(xb)):
            means[l].append(to_numpy(mu).astype(np.float64))
    return [np.concatenate(m).var(axis=0) for m in means]


def active_units_per_layer(model, x, threshold=0.01, batch_size=1000):
    """How many units of each stochastic layer are active (A_u > ``threshold``): [int]."""
    return [int((a > threshold).sum()) for a in layer_activity(model, x, batch_size)]


def k_sample_objective(model, k, objective):
    """The k-sample loss of any model: ``HKSampleObjective`` for an ``HVAE``, else
    ``npvae.iwae.KSampleObjective``."""
    return (HKSampleObjective if isinstance(model, HVAE) else KSampleObjective)(model, k, objective)
