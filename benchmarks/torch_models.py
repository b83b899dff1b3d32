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

Every module has ``encode(x, y=None) -> (mu, logvar)`` and
``decoder_out(z, y=None)``: the decoder's output, Bernoulli logits or Gaussian
means (npvae's ``out``). ``iw_bounds`` is the importance-weighted bound
computed from them with given noise. ``load(path)`` builds the module a file's
metadata names and loads the file into it, strictly.

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
    """The ``torch.nn`` module of a ``VAE.config`` (``npvae.export.layout`` picks the kind),
    in the config's dtype, with PyTorch's initialisation."""
    import torch

    from npvae.export import layout

    if layout(config) == "pytorch-example":
        model = classes()["ExampleVAE"](config["x_dim"], config["hidden"][0], config["latent"],
                                        config["activation"])
    elif config.get("architecture", "mlp") == "conv":
        model = classes()["ConvVAE"](config)
    else:
        model = classes()["MLPVAE"](config)
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


def iw_bounds(model, x, eps, config, y=None):
    """L_k(x) = log (1/k) sum_j p(x | z_j) p(z_j) / q(z_j | x) per example, (B,), in PyTorch.

    x (B, D); eps (k, B, Z), the noise: z_j = mu + eps_j exp(logvar / 2), so
    log q(z_j | x) = -1/2 sum (eps_j^2 + logvar + log 2 pi). y (B,): labels of
    a conditional model, repeated for each of the k samples (sample-major).
    """
    import torch
    from torch.nn import functional as F

    k, B, Z = eps.shape
    mu, logvar = model.encode(x, y)
    z = mu + eps * torch.exp(0.5 * logvar)
    out = model.decoder_out(z.reshape(k * B, Z), None if y is None else y.repeat(k))
    out = out.reshape(k, B, -1)
    if config["likelihood"] == "bernoulli":
        log_px = -F.binary_cross_entropy_with_logits(out, x.expand_as(out),
                                                     reduction="none").sum(-1)
    else:
        sigma, D = config["sigma"], x.shape[1]
        log_px = (-((x - out) ** 2).sum(-1) / (2 * sigma**2)
                  - 0.5 * D * (LOG_2PI + 2 * math.log(sigma)))
    log_pz = -0.5 * (z**2 + LOG_2PI).sum(-1)
    log_qz = -0.5 * (eps**2 + logvar + LOG_2PI).sum(-1)
    return torch.logsumexp(log_px + log_pz - log_qz, 0) - math.log(k)


@functools.cache
def classes():
    """``{"ExampleVAE", "MLPVAE", "ConvVAE"}``: the modules' classes, defined on first use (PyTorch
    is imported here)."""
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

    return {"ExampleVAE": ExampleVAE, "MLPVAE": MLPVAE, "ConvVAE": ConvVAE}
