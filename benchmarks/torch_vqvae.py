"""npvae's VQ-VAE (``npvae.vqvae.VQVAE``) rebuilt in PyTorch: ``torch.nn`` layers, autograd.

The same model, layer for layer, built from an npvae model's ``config``
(``npvae.vqvae.build_stacks``); for the default hidden = (32, 64), F = 16::

    encoder: Unflatten (1, 28, 28), Conv2d(1, 32, 3, 2, 1), ReLU, Conv2d(32, 64, 3, 2, 1),
             ReLU, Conv2d(64, F, 1)                                  -> z_e (B, F, 7, 7)
    quantizer: codes = argmin_v |z_e - E_v|^2 per position (the expanded form npvae uses),
             z_q = z_e + (E[codes] - z_e).detach()          (straight through: value E[codes])
    decoder: ConvTranspose2d(F, 64, 3, 2, 1, 1), ReLU, ConvTranspose2d(64, 32, 3, 2, 1, 1),
             ReLU, ConvTranspose2d(32, 1, 3, 1, 1), Flatten        -> logits (B, 784)

    recon      = BCE with logits, summed over pixels, mean over the batch
    codebook   = |z_e.detach() - E[codes]|^2 summed per example, batch mean
    commitment = beta |z_e - E[codes].detach()|^2 summed per example, batch mean
    loss       = recon + commitment (+ codebook when the codebook learns by gradient)

``.detach()`` is sg[.]. Under ``update="gradient"`` the codebook E is a
leaf tensor the optimizer updates; under ``update="ema"`` it is a plain tensor
set after each optimizer step by the moving averages of
``derivations.md#vector-quantization`` (counts and sums started at 1 and E, the
counts Laplace-smoothed), written here from the formula in torch operations.
Dead-code restarts are npvae's: the codes unused since the last restart are
moved onto rows of the last batch's z_e, drawn by the same NumPy Generator
call (``rng.choice``), so given one generator both sides move the same codes
to the same rows; under ``ema`` their moving sums and counts restart too.
Adam's moments of a restarted code are kept, as npvae keeps them. The
trainer restarts every ``restart_every`` steps with the generator
``npvae train`` draws for that step (``npvae.vqtrain``).

``weights_from_npvae`` copies an npvae VQ-VAE's weights (its convolutions are
in PyTorch's layout already) and codebook, so both start from the same point.
``TorchVQTrainer`` trains the replica with ``torch.optim.Adam`` one epoch at a
time on given arrays in a given order.

PyTorch is optional: it is imported inside the functions.
"""

import time

import numpy as np

from benchmarks.torch_conv_vae import copy_weights
from npvae.vq import dead_codes


def make_stacks(config):
    """The encoder and decoder ``nn.Sequential``s of an npvae ``VQVAE.config``, PyTorch's init."""
    from torch import nn

    from benchmarks.torch_models import _activation  # npvae's activations as nn modules

    side = int(round(np.sqrt(config["x_dim"])))
    encoder, channels = [nn.Unflatten(1, (1, side, side))], 1
    for c in config["hidden"]:
        encoder += [nn.Conv2d(channels, c, 3, stride=2, padding=1),
                    _activation(config["activation"])]
        channels = c
    encoder.append(nn.Conv2d(channels, config["embedding_dim"], 1))
    decoder, channels = [], config["embedding_dim"]
    for c in config["decoder_hidden"]:
        decoder += [nn.ConvTranspose2d(channels, c, 3, stride=2, padding=1, output_padding=1),
                    _activation(config["activation"])]
        channels = c
    decoder += [nn.ConvTranspose2d(channels, 1, 3, stride=1, padding=1), nn.Flatten()]
    return nn.Sequential(*encoder), nn.Sequential(*decoder)


def weights_from_npvae(model):
    """An npvae ``VQVAE``'s arrays in the replica's order: the encoder's and the decoder's
    layers (W then b each), then the codebook (N, F)."""
    arrays = [np.asarray(layer.params[k]) for stack in (model.encoder, model.decoder)
              for layer in stack.layers for k in ("W", "b") if layer.params]
    return arrays + [np.asarray(model.quantizer.codebook)]


class TorchVQVAE:
    """The replica: ``encoder`` and ``decoder`` (``nn.Sequential``), the codebook and its
    moving averages as tensors, and the code usage ``counts`` (N,) since the last restart.

    ``config``: an npvae ``VQVAE.config``; ``weights``: ``weights_from_npvae``'s
    arrays (None: PyTorch's initialisation and npvae's U(-0.05, 0.05) codebook
    from ``seed``); ``dtype``: ``torch.float32`` or ``torch.float64``.
    """

    def __init__(self, config, weights=None, dtype=None, seed=0):
        import torch

        self.torch, self.config = torch, config
        self.dtype = torch.float32 if dtype is None else dtype
        self.beta, self.update = config["beta"], config["update"]
        self.decay, self.epsilon = config["decay"], config["epsilon"]
        self.encoder, self.decoder = (s.to(self.dtype) for s in make_stacks(config))
        N, F = config["n_codes"], config["embedding_dim"]
        if weights is None:
            weights = [p.detach().numpy() for p in self.layer_parameters()]
            weights.append(np.random.default_rng(seed).uniform(-0.05, 0.05, (N, F)))
        copy_weights(self.layer_parameters(), weights[:-1])
        self.codebook = torch.tensor(np.asarray(weights[-1]), dtype=self.dtype)
        if self.codebook.shape != (N, F):
            raise ValueError(f"a codebook of shape {tuple(self.codebook.shape)}, not {(N, F)}")
        if self.update == "gradient":
            self.codebook.requires_grad_(True)
        else:
            self.ema_count = torch.ones(N, dtype=self.dtype)
            self.ema_sum = self.codebook.clone()
        self.counts = torch.zeros(N, dtype=torch.int64)

    def layer_parameters(self):
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    def parameters(self):
        """What the optimizer trains: the layers' weights, and the codebook under ``gradient``."""
        return self.layer_parameters() + ([self.codebook] if self.update == "gradient" else [])

    def nearest(self, rows):
        """argmin_v |z_t - E_v|^2 of rows (B G, F) by npvae's expansion |z|^2 - 2 z.E + |E|^2."""
        E = self.codebook.detach()
        d = self.torch.addmm((rows * rows).sum(1, keepdim=True), rows, E.T, alpha=-2.0)
        return (d + (E * E).sum(1)).argmin(dim=1)

    def forward(self, x):
        """``(loss, recon, codebook, commitment)`` (0-d tensors) of the batch x (B, x_dim)."""
        from torch.nn import functional as F

        B = x.shape[0]
        self.z_e = z_e = self.encoder(x)                        # (B, F, g, g)
        rows = z_e.detach().permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        self.rows, self.codes = rows, self.nearest(rows)
        self.counts += self.torch.bincount(self.codes, minlength=len(self.counts))
        e = self.codebook[self.codes].reshape(B, *z_e.shape[2:], -1).permute(0, 3, 1, 2)
        z_q = z_e + (e - z_e).detach()                          # straight through
        logits = self.decoder(z_q)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / B
        codebook = ((z_e.detach() - e) ** 2).sum() / B
        commitment = self.beta * ((z_e - e.detach()) ** 2).sum() / B
        loss = recon + commitment + (codebook if self.update == "gradient" else 0)
        return loss, recon, codebook, commitment

    def ema_update(self):
        """The moving-average codebook update from the last forward (``ema``):
        nbar <- g nbar + (1 - g) n, mbar <- g mbar + (1 - g) m, E_v = mbar_v / ntilde_v,
        ntilde_v = (nbar_v + delta) / (nbar + N delta) nbar."""
        torch, g, delta = self.torch, self.decay, self.epsilon
        N = len(self.ema_count)
        with torch.no_grad():
            n = torch.bincount(self.codes, minlength=N).to(self.dtype)
            m = torch.zeros_like(self.ema_sum).index_add_(0, self.codes, self.rows)
            self.ema_count.mul_(g).add_((1 - g) * n)
            self.ema_sum.mul_(g).add_((1 - g) * m)
            total = self.ema_count.sum()
            smoothed = (self.ema_count + delta) / (total + N * delta) * total
            self.codebook.copy_(self.ema_sum / smoothed[:, None])

    def reset_usage(self):
        """The code counts (N,) since the last reset, as a NumPy array; starts counting again."""
        counts = self.counts.numpy().copy()
        self.counts.zero_()
        return counts

    def restart_dead_codes(self, rng):
        """npvae's ``VQVAE.restart_dead_codes``: the codes unused since the last call moved
        onto rows of the last batch's z_e drawn by ``rng``; returns ``(counts, restarted)``."""
        counts = self.reset_usage()
        dead = dead_codes(counts)
        if dead.size:
            n = self.rows.shape[0]
            pick = rng.choice(n, size=dead.size, replace=n < dead.size)
            index, rows = self.torch.as_tensor(dead), self.rows[self.torch.as_tensor(pick)]
            with self.torch.no_grad():
                self.codebook[index] = rows
                if self.update == "ema":
                    self.ema_sum[index] = rows
                    self.ema_count[index] = 1
        return counts, dead


class TorchVQTrainer:
    """The replica trained with ``torch.optim.Adam`` (lr 1e-3 by default), one epoch at a time.

    ``epoch(order)`` trains on ``x_train`` in the batches ``order`` gives (npvae's
    shuffle, so both see the same batches): per step zero_grad, forward,
    backward, Adam's step, the moving-average update under ``ema``, then,
    every ``restart_every`` steps (0: never), the dead codes restarted with
    the generator ``npvae train`` uses for that step
    (``npvae.vqtrain.restart_generator(seed, step)``), so both sides restart
    the same codes at the same vectors.
    """

    def __init__(self, x_train, config, weights, *, batch_size=128, lr=1e-3, dtype=None,
                 restart_every=0, seed=0):
        import torch

        self.torch, self.batch_size = torch, batch_size
        self.restart_every, self.seed, self.global_step = restart_every, seed, 0
        self.model = TorchVQVAE(config, weights, dtype=dtype)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.x_train = torch.as_tensor(np.ascontiguousarray(x_train), dtype=self.model.dtype)

    def step(self, x):
        """One training step on the batch x (B, D); returns the four loss terms (tensors)."""
        from npvae.vqtrain import restart_due, restart_generator

        self.optimizer.zero_grad()
        terms = self.model.forward(x)
        terms[0].backward()
        self.optimizer.step()
        if self.model.update == "ema":
            self.model.ema_update()
        self.global_step += 1
        if restart_due(self.restart_every, self.global_step):
            self.model.restart_dead_codes(restart_generator(self.seed, self.global_step))
        return terms

    def epoch(self, order):
        """``(mean (loss, recon, codebook, commitment), code usage (N,), seconds)`` of one pass
        over ``x_train`` in ``order``; the usage counts the codes of every batch."""
        order = self.torch.as_tensor(np.asarray(order), dtype=self.torch.int64)
        usage = self.torch.zeros_like(self.model.counts)
        totals, start = np.zeros(4), time.perf_counter()
        for i in range(0, len(order), self.batch_size):
            x = self.x_train[order[i:i + self.batch_size]]
            totals += [t.item() * len(x) for t in self.step(x)]
            usage += self.torch.bincount(self.model.codes, minlength=len(usage))
        return totals / len(order), usage.numpy(), time.perf_counter() - start

    def evaluate(self, x, batch_size=1000):
        """The mean loss terms of x (N, D) and its code usage (N,), without training; the
        usage since the last restart is left as it was."""
        x = self.torch.as_tensor(np.ascontiguousarray(x), dtype=self.model.dtype)
        saved, totals = self.model.reset_usage(), np.zeros(4)
        with self.torch.no_grad():
            for i in range(0, len(x), batch_size):
                totals += [t.item() * len(x[i:i + batch_size])
                           for t in self.model.forward(x[i:i + batch_size])]
        usage = self.model.reset_usage()
        self.model.counts += self.torch.as_tensor(saved)
        return totals / len(x), usage
