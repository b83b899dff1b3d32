"""npvae's ``conv`` preset rebuilt in PyTorch (``torch.nn`` layers, autograd, ``torch.optim``).

The model is TensorFlow's convolutional VAE tutorial with npvae's paddings
(``npvae.vae.build_stacks``), layer for layer::

    encoder: view (1, 28, 28), Conv2d(1, 32, 3, 2, 1), ReLU, Conv2d(32, 64, 3, 2, 1), ReLU,
             Flatten, Linear(3136, 2Z)                          -> mu, logvar (B, Z) each
    decoder: Linear(Z, 1568), ReLU, Unflatten (32, 7, 7),
             ConvTranspose2d(32, 64, 3, 2, 1, 1), ReLU, ConvTranspose2d(64, 32, 3, 2, 1, 1),
             ReLU, ConvTranspose2d(32, 1, 3, 1, 1), Flatten     -> logits (B, 784)
    z = mu + eps * exp(logvar / 2)
    loss = mean over the batch of [BCE with logits summed over pixels + KL summed over latents]

the reduction npvae uses (nats per example), so the two losses are the same
number. ``weights_from_npvae`` copies an npvae conv VAE's weights (the
convolutions' are stored in PyTorch's layout already; a dense layer's W is
transposed), so both start from the same point. ``TorchConvTrainer`` trains
it on given arrays, in a given order, with Adam 1e-3, an epoch at a time.

PyTorch is optional: it is imported inside the functions.
"""

import time

import numpy as np


def make_model(hidden=(32, 64), decoder_hidden=None, latent=20, side=28, weights=None,
               dtype=None):
    """The PyTorch replica of ``npvae.VAE(side**2, hidden, latent, architecture="conv")``.

    ``weights`` (a list of arrays, ``weights_from_npvae``) replace PyTorch's
    initialisation; ``dtype`` (e.g. ``torch.float64``) converts the model.
    """
    import torch
    from torch import nn

    decoder_hidden = (hidden[0], *hidden[::-1]) if decoder_hidden is None else decoder_hidden
    small = side // 2 ** len(hidden)
    encoder, channels = [nn.Unflatten(1, (1, side, side))], 1
    for c in hidden:
        encoder += [nn.Conv2d(channels, c, 3, stride=2, padding=1), nn.ReLU()]
        channels = c
    encoder += [nn.Flatten(), nn.Linear(channels * small * small, 2 * latent)]
    channels, *upsampling = decoder_hidden
    decoder = [nn.Linear(latent, channels * small * small), nn.ReLU(),
               nn.Unflatten(1, (channels, small, small))]
    for c in upsampling:
        decoder += [nn.ConvTranspose2d(channels, c, 3, stride=2, padding=1, output_padding=1),
                    nn.ReLU()]
        channels = c
    decoder += [nn.ConvTranspose2d(channels, 1, 3, stride=1, padding=1), nn.Flatten()]
    model = nn.ModuleDict({"encoder": nn.Sequential(*encoder), "decoder": nn.Sequential(*decoder)})
    if dtype is not None:
        model = model.to(dtype)
    if weights is not None:
        copy_weights(list(model.parameters()), weights)
    return model


def copy_weights(tensors, weights):
    """Copy the arrays ``weights`` into the parameters ``tensors``, one each, same shapes."""
    import torch

    if len(tensors) != len(weights):
        raise ValueError(f"{len(weights)} arrays for {len(tensors)} parameters")
    with torch.no_grad():
        for p, w in zip(tensors, weights):
            if tuple(p.shape) != w.shape:
                raise ValueError(f"an array of shape {w.shape} for a parameter of shape "
                                 f"{tuple(p.shape)}")
            p.copy_(torch.as_tensor(np.ascontiguousarray(w), dtype=p.dtype))


def weights_from_npvae(vae):
    """An npvae conv VAE's parameters in the order of ``make_model``'s ``parameters()``.

    Layer by layer (encoder, then decoder), W then b; a dense layer's W
    (n_in, n_out) becomes ``nn.Linear``'s weight (n_out, n_in).
    """
    from npvae.layers import Dense

    arrays = []
    for layer in vae.encoder.layers + vae.decoder.layers:
        if layer.params:
            W = np.asarray(layer.params["W"])
            arrays += [W.T if isinstance(layer, Dense) else W, np.asarray(layer.params["b"])]
    return arrays


def grads_to_npvae(vae, model):
    """PyTorch's gradients under npvae's parameter names (dense weights transposed back)."""
    from npvae.layers import Dense

    grads, tensors = {}, iter(model.parameters())
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(vae, stack).layers):
            for key in layer.params:
                g = next(tensors).grad.numpy()
                grads[f"{stack}.{i}.{key}"] = g.T if isinstance(layer, Dense) and key == "W" else g
    return grads


def loss_terms(model, x, eps, latent):
    """(loss, recon, kl) in nats per example for batch ``x`` (B, D) and noise ``eps`` (B, Z)."""
    import torch
    from torch.nn import functional as F

    h = model["encoder"](x)
    mu, logvar = h[:, :latent], h[:, latent:]
    z = mu + eps * torch.exp(0.5 * logvar)
    logits = model["decoder"](z)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
    return recon + kl, recon, kl


def evaluate_loss(model, x_test, latent, batch_size=1000, seed=0):
    """The test loss: the mean over ``x_test`` of the negative ELBO, z sampled once."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x_test), batch_size):
            x = x_test[start:start + batch_size]
            eps = torch.randn((len(x), latent), generator=generator, dtype=x.dtype)
            total += loss_terms(model, x, eps, latent)[0].item() * len(x)
    return total / len(x_test)


class TorchConvTrainer:
    """The replica with ``torch.optim.Adam`` (lr 1e-3), trained one epoch at a time.

    ``weights``: the initial weights (``weights_from_npvae``). Each call of
    ``epoch(order)`` trains on ``x_train`` in the batches ``order`` gives
    (npvae's shuffle, so both see the same batches) and returns the mean
    training loss and the seconds taken; the noise eps is PyTorch's own.
    """

    def __init__(self, x_train, weights, *, hidden=(32, 64), latent=20, batch_size=128, seed=0):
        import torch

        torch.manual_seed(seed)
        self.torch, self.latent, self.batch_size = torch, latent, batch_size
        side = int(round(np.sqrt(x_train.shape[1])))
        self.model = make_model(hidden, latent=latent, side=side, weights=weights)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.x_train = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))

    def step(self, x):
        """One training step on the batch ``x`` (B, D); returns the loss as a tensor."""
        self.optimizer.zero_grad()
        loss = loss_terms(self.model, x, self.torch.randn((len(x), self.latent)),
                          self.latent)[0]
        loss.backward()
        self.optimizer.step()
        return loss

    def epoch(self, order):
        order = self.torch.as_tensor(np.asarray(order), dtype=self.torch.int64)
        total, start = 0.0, time.perf_counter()
        for i in range(0, len(order), self.batch_size):
            x = self.x_train[order[i:i + self.batch_size]]
            total += self.step(x).item() * len(x)
        return total / len(order), time.perf_counter() - start

    def test_loss(self, x_test):
        x_test = self.torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32))
        return evaluate_loss(self.model, x_test, self.latent)
