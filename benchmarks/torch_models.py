"""npvae's models as ``torch.nn`` modules, named so that ``npvae export``'s files load into them.

``npvae export RUN FILE.safetensors`` writes a run's weights under PyTorch's
``state_dict`` names (``npvae/export.py``); these are the modules whose
``load_state_dict(safetensors.torch.load_file(FILE), strict=True)`` takes
them, one per layout:

- ``ExampleVAE``: PyTorch's ``examples/vae/main.py`` model (``fc1``, ``fc21``,
  ``fc22``, ``fc3``, ``fc4``), its sizes and activation from the config. For
  the ``pytorch-example`` preset it is the example's class as published
  (``benchmarks/torch_vae.py``'s ``model_class()``), which loads the same file.
- ``MLPVAE``: ``encoder`` and ``decoder`` ``nn.Sequential``s of ``nn.Linear``
  and activations, at the indices npvae's layers have (``encoder.0``,
  ``encoder.2``, ...); with ``n_classes`` C, the one-hot label is appended to
  the input of each (``npvae.cvae``), so their first layers take C more inputs.
- ``ConvVAE``: ``benchmarks/torch_conv_vae.py``'s convolutional replica
  (``encoder.1`` a ``Conv2d``, ..., ``decoder.3`` a ``ConvTranspose2d``, ...).
- ``HVAE``: npvae's model with L stochastic layers (``npvae.hvae``), one
  ``nn.Sequential`` per conditional, named as npvae's networks: ``q_h1`` (x ->
  [mu_1 | logvar_1]), ..., ``q_hL``; ``p_x`` (h_1 -> logits or means of x);
  ``p_h1`` (h_2 -> [mu | logvar] of p(h_1 | h_2)), ..., ``p_h{L-1}``; so
  ``q_h1.0.weight``, ``q_h1.2.weight``, ..., ``p_h1.4.bias``.

Every module has ``encode(x, y=None) -> (mu, logvar)`` (for ``HVAE`` the top
layer's, through the means) and ``decoder_out(z, y=None)``: the decoder's
output, Bernoulli logits or Gaussian means (npvae's ``out``; for ``HVAE`` from
the top layer's z down through the means). ``iw_bounds`` is the
importance-weighted bound computed from them with given noise (for ``HVAE``
from its ``log_weights``, every layer sampled). ``load(path)`` builds the
module a file's metadata names and loads the file into it, strictly.

PyTorch is optional: it is imported inside the functions.
"""

import functools
import json
import math

LOG_2PI = math.log(2 * math.pi)


def _activation(name):
    """The ``torch.nn`` module of npvae's activation ``name`` (same formula)."""
    import torch
    from torch import nn

    class Softplus(nn.Module):  # log(1 + e^x) for every x (nn.Softplus switches to x above 20)
        def forward(self, x):
            return torch.logaddexp(x, torch.zeros_like(x))

    return {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.01), "tanh": nn.Tanh,
            "sigmoid": nn.Sigmoid, "softplus": Softplus}[name]()


def module_for(config):
    """The ``torch.nn`` module of a ``VAE.config`` (``npvae.export.torch_module`` names its
    class), in the config's dtype, with PyTorch's initialisation."""
    import torch

    from npvae.export import torch_module

    name = torch_module(config)
    if name == "ExampleVAE":
        model = classes()[name](config["x_dim"], config["hidden"][0], config["latent"],
                                config["activation"])
    else:
        model = classes()[name](config)
    return model.to({"float32": torch.float32, "float64": torch.float64}[config["dtype"]])


def load(path):
    """The module a file of ``npvae export`` describes, its weights loaded strictly."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        config = json.loads(f.metadata()["npvae.model"])
    model = module_for(config)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model, config


def log_px(out, x, config):
    """log p(x | z) summed over pixels: ``out`` (..., D) Bernoulli logits or Gaussian means
    (sigma from ``config``), x (B, D) broadcast against it."""
    from torch.nn import functional as F

    if config["likelihood"] == "bernoulli":
        return -F.binary_cross_entropy_with_logits(out, x.expand_as(out),
                                                   reduction="none").sum(-1)
    sigma, D = config["sigma"], x.shape[-1]
    return (-((x - out) ** 2).sum(-1) / (2 * sigma**2)
            - 0.5 * D * (LOG_2PI + 2 * math.log(sigma)))


def log_normal(z, mu, logvar):
    """log N(z; mu, diag exp(logvar)) summed over the last axis (npvae.losses.log_normal)."""
    import torch

    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)


def iw_bounds(model, x, eps, config, y=None):
    """L_k(x) = log (1/k) sum_j p(x | z_j) p(z_j) / q(z_j | x) per example, (B,), in PyTorch.

    x (B, D); eps (k, B, Z), the noise: z_j = mu + eps_j exp(logvar / 2), so
    log q(z_j | x) = -1/2 sum (eps_j^2 + logvar + log 2 pi). y (B,): labels of
    a conditional model, repeated for each of the k samples (sample-major).
    An ``HVAE`` brings its own log weights: eps (k, B, Z_1 + ... + Z_L).
    """
    import torch

    k = eps.shape[0]
    if hasattr(model, "log_weights"):
        return torch.logsumexp(model.log_weights(x, eps), 0) - math.log(k)
    _, B, Z = eps.shape
    mu, logvar = model.encode(x, y)
    z = mu + eps * torch.exp(0.5 * logvar)
    out = model.decoder_out(z.reshape(k * B, Z), None if y is None else y.repeat(k))
    log_pz = -0.5 * (z**2 + LOG_2PI).sum(-1)
    log_qz = -0.5 * (eps**2 + logvar + LOG_2PI).sum(-1)
    return torch.logsumexp(log_px(out.reshape(k, B, -1), x, config) + log_pz - log_qz, 0) \
        - math.log(k)


@functools.cache
def classes():
    """``{"ExampleVAE", "MLPVAE", "ConvVAE", "HVAE"}``: the modules' classes, defined on first
    use (PyTorch is imported here)."""
    import torch
    from torch import nn

    from benchmarks.torch_conv_vae import make_model

    class ExampleVAE(nn.Module):
        """PyTorch's example: fc1 (H, D), fc21 / fc22 (Z, H) for mu / logvar, fc3 (H, Z),
        fc4 (D, H). ``decode(z)`` is the example's (sigmoid probabilities)."""

        def __init__(self, x_dim=784, hidden=400, latent=20, activation="relu"):
            super().__init__()
            self.x_dim, self.act = x_dim, _activation(activation)
            self.fc1 = nn.Linear(x_dim, hidden)
            self.fc21 = nn.Linear(hidden, latent)
            self.fc22 = nn.Linear(hidden, latent)
            self.fc3 = nn.Linear(latent, hidden)
            self.fc4 = nn.Linear(hidden, x_dim)

        def encode(self, x, y=None):
            h1 = self.act(self.fc1(x.view(-1, self.x_dim)))
            return self.fc21(h1), self.fc22(h1)

        def decoder_out(self, z, y=None):
            return self.fc4(self.act(self.fc3(z)))

        def decode(self, z):
            return self.decoder_out(z).sigmoid()

    def stack(sizes, activation):
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), _activation(activation)]
        return nn.Sequential(*layers[:-1])

    class MLPVAE(nn.Module):
        """npvae's MLP VAE (with ``n_classes``: its conditional VAE) as two ``nn.Sequential``s."""

        def __init__(self, config):
            super().__init__()
            self.latent, self.n_classes = config["latent"], config.get("n_classes") or 0
            C, act = self.n_classes, config["activation"]
            self.encoder = stack([config["x_dim"] + C, *config["hidden"], 2 * self.latent], act)
            self.decoder = stack([self.latent + C, *config["decoder_hidden"], config["x_dim"]], act)

        def _labelled(self, x, y):
            if not self.n_classes:
                return x
            onehot = nn.functional.one_hot(torch.as_tensor(y), self.n_classes)
            return torch.cat([x, onehot.to(x.dtype)], dim=1)

        def encode(self, x, y=None):
            h = self.encoder(self._labelled(x, y))
            return h[:, :self.latent], h[:, self.latent:]

        def decoder_out(self, z, y=None):
            return self.decoder(self._labelled(z, y))

    class ConvVAE(nn.Module):
        """npvae's conv VAE: ``torch_conv_vae.make_model``, its ReLUs swapped for the config's
        activation."""

        def __init__(self, config):
            super().__init__()
            self.latent = config["latent"]
            stacks = make_model(config["hidden"], config["decoder_hidden"], self.latent,
                                side=math.isqrt(config["x_dim"]))
            for layers in stacks.values():
                for i, layer in enumerate(layers):
                    if isinstance(layer, nn.ReLU):
                        layers[i] = _activation(config["activation"])
            self.encoder, self.decoder = stacks["encoder"], stacks["decoder"]

        def encode(self, x, y=None):
            h = self.encoder(x)
            return h[:, :self.latent], h[:, self.latent:]

        def decoder_out(self, z, y=None):
            return self.decoder(z)

    class HVAE(nn.Module):
        """npvae's VAE with L stochastic layers (``npvae.hvae``): an ``nn.Sequential`` per
        conditional, ``q_h1`` ... ``q_hL``, ``p_x``, ``p_h1`` ... ``p_h{L-1}``
        (``npvae.hvae.network_sizes``), registered in that order."""

        def __init__(self, config):
            from npvae.hvae import network_sizes

            super().__init__()
            self.config, self.latents = config, list(config["latent"])
            for name, sizes in network_sizes(config).items():
                self.add_module(name, stack(sizes, config["activation"]))

        def encode_layers(self, x):
            """[(mu_l, logvar_l)] of every q(h_l | h_{l-1}), each (B, Z_l), h_{l-1} its mean."""
            out, h = [], x
            for l, Z in enumerate(self.latents):
                q = self.get_submodule(f"q_h{l + 1}")(h)
                out.append((q[..., :Z], q[..., Z:]))
                h = out[-1][0]
            return out

        def encode(self, x, y=None):
            return self.encode_layers(x)[-1]

        def decoder_out(self, h, y=None):
            """p(x | h_1)'s logits or means for top-layer values h (..., Z_L), through the
            means of p(h_l | h_{l+1}) below it."""
            for l in range(len(self.latents) - 1, 0, -1):
                h = self.get_submodule(f"p_h{l}")(h)[..., :self.latents[l - 1]]
            return self.get_submodule("p_x")(h)

        def log_weights(self, x, eps):
            """log w = log p(x | h_1) + log p(h_L) + sum_l log p(h_l | h_{l+1})
            - sum_l log q(h_l | h_{l-1}), (k, B), for noise eps (k, B, Z_1 + ... + Z_L):
            h_l = mu_l + exp(logvar_l / 2) eps_l, ancestral through q from h_0 = x."""
            hs, log_qh, h, offset = [], 0.0, x, 0
            for l, Z in enumerate(self.latents):
                q = self.get_submodule(f"q_h{l + 1}")(h)   # (B, 2 Z_1), then (k, B, 2 Z_l)
                mu, logvar, e = q[..., :Z], q[..., Z:], eps[..., offset:offset + Z]
                h = mu + torch.exp(0.5 * logvar) * e      # (k, B, Z_l)
                log_qh = log_qh - 0.5 * (e**2 + logvar + LOG_2PI).sum(-1)
                hs.append(h)
                offset += Z
            log_ph = -0.5 * (hs[-1] ** 2 + LOG_2PI).sum(-1)
            for l in range(len(self.latents) - 1, 0, -1):
                p, Z = self.get_submodule(f"p_h{l}")(hs[l]), self.latents[l - 1]
                log_ph = log_ph + log_normal(hs[l - 1], p[..., :Z], p[..., Z:])
            return log_px(self.get_submodule("p_x")(hs[0]), x, self.config) + log_ph - log_qh

    return {"ExampleVAE": ExampleVAE, "MLPVAE": MLPVAE, "ConvVAE": ConvVAE, "HVAE": HVAE}
