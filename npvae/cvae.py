"""The conditional VAE: the label, one-hot, is an input of the encoder and of the decoder.

    [x | onehot(y)] (B, D + Y) --encoder MLP--> [mu | logvar] (B, 2Z)
    z = mu + exp(logvar / 2) * eps                                (B, Z)
    [z | onehot(y)] (B, Z + Y) --decoder MLP--> out (B, D)

with Y classes (10 for MNIST digits) and the prior p(z) = N(0, I) unchanged,
independent of y: the generative model M2 of Kingma, Rezende, Mohamed and
Welling (2014) with the label observed. (Sohn, Lee and Yan's 2015 conditional
VAE would also condition the prior, p(z | y), with a network of its own; npvae
does not build that.) The loss is the VAE's, now a bound on log p(x | y).
Everything else (reparameterization, likelihoods, KL, the k-sample objectives
of ``npvae.iwae``) is the VAE's own. Conditional models are built on the mlp
architecture only.

The only new piece is the concatenation in front of each network
(``LabelledMLP``): forward appends the one-hot columns; backward drops their
gradient, since the labels are data. Because z's gradient is the first Z
columns of the decoder's input gradient, the rest of ``VAE.backward`` is
unchanged. Derivation: ``tutorials/derivations.md``, section "Conditional VAE".

The labels of a batch are set with ``condition(y)`` (``forward``, ``encode``
and ``decode`` take ``y`` and call it); a decoder batch of k B rows (k samples
of B examples, sample-major) reuses the B labels k times.
"""

from functools import partial

import numpy as np

from .checks import positive_int
from .errors import ConfigError, DataError
from .layers import MLP
from .vae import VAE, build_stacks


class LabelledMLP(MLP):
    """An MLP whose input is ``[x | onehot(y)]``: ``sizes[0]`` features plus ``n_classes``.

    ``onehot`` (B, Y) is set by the model before each pass. Shapes: x (R, n)
    with R a multiple of B -> out (R, sizes[-1]). Parameters are the MLP's
    (the first layer's W has n + Y rows).

    Backward (``derivations.md#conditional-vae``), from dout (R, sizes[-1]):
    the MLP's backward gives the gradient of ``[x | onehot]`` (R, n + Y) and
    every parameter's (the label rows of the first W get onehot^T dout_1, the
    summed gradient of each class's examples); dx is its first n columns.
    """

    def __init__(self, sizes, activation="relu", *, n_classes, **layer_args):
        super().__init__([sizes[0] + n_classes, *sizes[1:]], activation, **layer_args)
        self.n_classes, self.onehot = n_classes, None
        self.xp = layer_args.get("xp", np)

    def labels_for(self, rows):
        """The one-hot labels of ``rows`` input rows (R, Y): ``onehot`` repeated R / B times."""
        if self.onehot is None:
            raise ConfigError("a conditional model needs the labels y of the batch")
        B = self.onehot.shape[0]
        if rows % B:
            raise ConfigError(f"{rows} rows do not match the {B} labels of the batch")
        return self.onehot if rows == B else self.xp.tile(self.onehot, (rows // B, 1))

    def forward(self, x):
        return super().forward(self.xp.concatenate([x, self.labels_for(x.shape[0])], axis=1))

    def backward(self, dout, need_dx=True):
        """The MLP's backward; dx without the label columns (R, n), or None.

        Derivation: ``derivations.md#conditional-vae``.
        """
        dx = super().backward(dout, need_dx)
        return None if dx is None else dx[:, :-self.n_classes]


class CVAE(VAE):
    """A conditional VAE: ``VAE``'s arguments plus ``n_classes`` (Y, 10 for MNIST).

    ``forward(x, y, ...)``, ``encode(x, y)``, ``decode(z, y)`` take integer
    labels y (B,) in [0, Y). ``config`` holds ``n_classes``, so
    ``model_from_config(**model.config)`` rebuilds it (checkpoints use that).
    """

    def __init__(self, x_dim=784, hidden=(400,), latent=20, *, n_classes=10, **kwargs):
        self.n_classes = positive_int("n_classes", n_classes)
        if self.n_classes < 2:
            raise ConfigError(f"n_classes={n_classes!r} must be at least 2")
        super().__init__(x_dim, hidden, latent, **kwargs)   # puts n_classes in the config

    def _stacks(self, config, **layer_args):
        """``build_stacks``'s MLPs, each fed the one-hot labels (the mlp architecture only)."""
        return build_stacks(config, mlp=partial(LabelledMLP, n_classes=self.n_classes),
                            **layer_args)

    def condition(self, y):
        """Set the labels ``y`` (B,) of the next encoder and decoder passes (one-hot, Y columns)."""
        xp = self.xp
        y = check_labels(xp.asarray(y), self.n_classes)
        onehot = xp.zeros((y.shape[0], self.n_classes), dtype=self.dtype)
        onehot[xp.arange(y.shape[0]), y] = 1
        self.encoder.onehot = self.decoder.onehot = onehot

    def forward(self, x, y=None, **kwargs):
        """``VAE.forward`` for batch ``x`` (B, D) with labels ``y`` (B,)."""
        if y is None:
            raise ConfigError("a conditional model needs the labels y of the batch")
        if getattr(x, "shape", (None,))[0] != len(y):
            raise ConfigError(f"x holds {getattr(x, 'shape', (None,))[0]} examples but y "
                              f"{len(y)} labels")
        self.condition(y)
        return super().forward(x, **kwargs)

    def encode(self, x, y=None):
        """q(z | x, y): ``(mu, logvar)``, each (B, Z); y None keeps the labels set last."""
        if y is not None:
            self.condition(y)
        return super().encode(x)

    def decode(self, z, y=None):
        """The mean of p(x | z, y), (B, D); y None keeps the labels set last."""
        if y is not None:
            self.condition(y)
        return super().decode(z)

    def __repr__(self):
        return "C" + super().__repr__()[:-1] + f", {self.n_classes} classes)"


def check_labels(y, n_classes, what="labels y"):
    """``y`` (N,), integers in [0, ``n_classes``), or a one-line error naming ``what``.

    The one rule for labels: ``CVAE.condition`` applies it to every batch,
    and training to the whole data set before it claims a run folder.
    """
    if y.ndim != 1 or y.shape[0] < 1:
        raise ConfigError(f"{what} must have shape (batch,); got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise DataError(f"{what} must be integers; got dtype {y.dtype}")
    if bool((y < 0).any()) or bool((y >= n_classes).any()):
        raise DataError(f"{what} must lie in [0, {n_classes}); got min {int(y.min())} "
                        f"and max {int(y.max())}")
    return y


def is_conditional(model):
    """Whether ``model`` takes labels (a ``CVAE``)."""
    return isinstance(model, CVAE)


def check_digit(model, digit, name="--digit"):
    """``digit``, a label to draw (None: none asked), checked against ``model``.

    A ConfigError, naming the option ``name``, when the model is not
    conditional or the digit is not one of its Y classes: the one rule behind
    ``npvae sample --digit``, ``npvae explore --digit`` and the figures.
    """
    if digit is None:
        return None
    if not is_conditional(model):
        raise ConfigError(f"{name} needs a conditional run: this run's model is not conditional, "
                          "so it cannot draw a chosen digit (train one with --conditional)")
    if not 0 <= digit < model.n_classes:
        raise ConfigError(f"{name}={digit} must be one of 0 to {model.n_classes - 1}")
    return digit


def set_condition(model, y, batch=None):
    """Condition ``model`` on labels ``y`` (B,), or check that it needs none.

    A conditional model without labels, or labels for a plain VAE, or ``batch``
    examples with a different number of labels, is a ConfigError.
    """
    if not is_conditional(model):
        if y is not None:
            raise ConfigError("labels y were given, but this VAE is not conditional "
                              "(build it with n_classes)")
        return
    if y is None:
        raise ConfigError("a conditional model needs the labels y of the batch")
    if batch is not None and len(y) != batch:
        raise ConfigError(f"x holds {batch} examples but y {len(y)} labels")
    model.condition(y)


def model_from_config(**config):
    """The model a ``config`` describes (``VAE.config``, plus ``backend`` and ``seed``): a CVAE
    when it has ``n_classes``, an ``npvae.hvae.HVAE`` when ``latent`` lists several stochastic
    layers, an ``npvae.vqvae.VQVAE`` when it has ``n_codes``, else a plain VAE. Training,
    checkpoints and runs build with it."""
    from .hvae import HVAE, is_hierarchical
    from .vqvae import VQVAE, is_vq

    if is_vq(config):
        return VQVAE(**config)
    if is_hierarchical(config):
        if config.pop("n_classes", None) is not None:
            raise ConfigError("a model with several stochastic layers is not conditional: drop "
                              "--conditional or give one latent size")
        return HVAE(**config)
    if config.get("n_classes") is not None:
        return CVAE(**config)
    config.pop("n_classes", None)
    return VAE(**config)
