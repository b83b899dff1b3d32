"""Named configurations: a model (``npvae.VAE`` keyword arguments) and its training.

``npvae train --preset NAME`` starts from one of these; any flag overrides a
field. Every preset keeps the uniform reductions of the engine: losses are
summed over pixels and latents and averaged over the batch (nats per example).

- ``pytorch-example`` (the default) is PyTorch's ``examples/vae/main.py``:
  784-400-20, ReLU, Bernoulli likelihood on [0, 1] pixels (no binarization),
  ``torch.nn.Linear``'s initialisation, Adam 1e-3, batch 128, 10 epochs.
- ``mlp-mse`` is the VAE of the blog post npvae started from (an MLP
  784-128-64-20 trained on a squared error), with its MSE done right: a
  Gaussian likelihood with sigma^2 = 1/2 makes the reconstruction term the
  squared error *summed* over pixels (plus a constant), next to the KL.
  Tutorial 11 trains it next to the post's three mistakes.
- ``iwae`` is the architecture of Burda, Grosse and Salakhutdinov (2016):
  two tanh layers of 200, 50 latents, dynamically binarized MNIST, batch 20.
- ``conv`` is TensorFlow's convolutional VAE tutorial: two 3 x 3 stride-2
  convolutions of 32 and 64 channels (28 -> 14 -> 7, padding 1) and a dense
  layer to 2Z; a dense layer to 32 x 7 x 7, transposed convolutions of 64
  and 32 channels (stride 2, padding 1, output padding 1: 7 -> 14 -> 28)
  and one of 1 channel (stride 1, padding 1); ReLU, Bernoulli logits on
  [0, 1] pixels, PyTorch's initialisation, Adam 1e-3, batch 128. The layers
  are in ``npvae.vae.build_stacks``.
- ``burda-vae`` and ``burda-iwae`` are that paper's one-stochastic-layer MNIST
  experiment (Table 1) with k = 5 samples: the k-sample ELBO ("VAE") and the
  importance-weighted bound ("IWAE"). ``burda-vae`` takes the KL in closed
  form (npvae's "elbo", usually less variance); ``--objective
  elbo-sampled`` samples it as the paper's VAE does (the same expectation).
  Both use Adam with
  beta2 0.999 and eps 1e-4, and the paper's learning rates
  1e-3 * 10^(-i/7), i = 0..7, shortened to one epoch each (``iwae-short``,
  8 epochs). The paper's full schedule (3^i epochs per stage, 3,280 in all):
  ``--lr-schedule iwae --epochs 3280``.
  ``--k`` changes the number of samples.
- ``cvae`` is ``pytorch-example`` made conditional on the digit label.
- ``vqvae`` is van den Oord, Vinyals and Kavukcuoglu's VQ-VAE (2017) at the
  sizes of Keras's VQ-VAE example (``npvae.vqvae``): two 3 x 3 stride-2
  convolutions of 32 and 64 channels and a 1 x 1 one to a 7 x 7 grid of
  F = 16-dimensional vectors, each replaced by the nearest of N = 64 codes;
  transposed convolutions of 64 and 32 channels and one of 1 back to the
  pixels; ReLU, Bernoulli logits on [0, 1] pixels (as ``conv``), Glorot
  initialisation (Keras's), commitment weight 0.25, the codebook learned by
  the codebook loss's gradient (the paper's main form; ``--codebook-update
  ema`` for the moving averages), Adam 1e-3, batch 128. One addition to the
  paper: codes that no position chose in the last 100 steps are restarted
  at encoder outputs (``--restart-every 0`` turns that off and shows codes
  dying).
- ``burda2-vae`` and ``burda2-iwae`` are Table 1's two-stochastic-layer models
  (``npvae.hvae``): 784-200-200-100 (h1) -100-100-50 (h2), tanh, the
  generative path mirrored, k = 5, trained as ``burda-vae`` / ``burda-iwae``.
"""

import math

from .errors import ConfigError

# Shared by several presets (each preset gets its own copy).
PYTORCH_MLP = dict(hidden=(400,), latent=20, activation="relu", likelihood="bernoulli", sigma=1.0,
                   init="pytorch")
BURDA_MLP = dict(hidden=(200, 200), latent=50, activation="tanh", likelihood="bernoulli",
                 sigma=1.0, init=None)
BURDA_TWO_LAYERS = dict(hidden=((200, 200), (100, 100)), latent=(100, 50), activation="tanh",
                        likelihood="bernoulli", sigma=1.0, init=None)
BURDA_TABLE_1 = dict(epochs=8, batch_size=20, lr=1e-3, binarize="dynamic", k=5,
                     lr_schedule="iwae-short", adam_eps=1e-4)

PRESETS = {
    "pytorch-example": {
        "description": "PyTorch's examples/vae: 784-400-20 ReLU, Bernoulli on [0,1] pixels, "
                       "Adam 1e-3, batch 128, 10 epochs",
        "model": dict(PYTORCH_MLP),
        "training": dict(epochs=10, batch_size=128, lr=1e-3, binarize="none"),
    },
    "mlp-mse": {
        "description": "the blog post's MLP 784-128-64-20, its MSE summed over pixels "
                       "(Gaussian, sigma^2 = 1/2) plus the KL, Adam 1e-3, batch 32",
        "model": dict(hidden=(128, 64), latent=20, activation="relu", likelihood="gaussian",
                      sigma=math.sqrt(0.5), init=None),
        "training": dict(epochs=10, batch_size=32, lr=1e-3, binarize="none"),
    },
    "iwae": {
        "description": "Burda et al.'s VAE: 784-200-200-50 tanh, Bernoulli on dynamically "
                       "binarized pixels, Adam 1e-3, batch 20",
        "model": dict(BURDA_MLP),
        "training": dict(epochs=10, batch_size=20, lr=1e-3, binarize="dynamic"),
    },
    "conv": {
        "description": "TensorFlow's convolutional VAE: conv 32-64 (3x3, stride 2) / 20 / "
                       "dense 32x7x7, convT 64-32-1, ReLU, Bernoulli on [0,1] pixels, Adam "
                       "1e-3, batch 128",
        "model": dict(architecture="conv", hidden=(32, 64), decoder_hidden=None, latent=20,
                      activation="relu", likelihood="bernoulli", sigma=1.0, init="pytorch"),
        # test batches of 250: a batch of 1000 made 226 MB column matrices, which malloc maps
        # anew for each batch (npvae.memory): 1.31 s against 0.81 for 5000 digits, same loss
        "training": dict(epochs=10, batch_size=128, lr=1e-3, binarize="none",
                         eval_batch_size=250),
    },
    "burda-vae": {
        "description": "Burda et al.'s Table 1 VAE, k=5: 784-200-200-50 tanh, k-sample ELBO "
                       "(KL in closed form; the paper samples it: --objective elbo-sampled), "
                       "dynamic binarization, batch 20, Adam eps 1e-4, their lr decay shortened "
                       "to 8 epochs",
        "model": dict(BURDA_MLP),
        "training": dict(BURDA_TABLE_1, objective="elbo"),
    },
    "burda-iwae": {
        "description": "Burda et al.'s Table 1 IWAE, k=5: as burda-vae, trained on the "
                       "importance-weighted bound",
        "model": dict(BURDA_MLP),
        "training": dict(BURDA_TABLE_1, objective="iwae"),
    },
    "burda2-vae": {
        "description": "Burda et al.'s Table 1 two-layer VAE, k=5: 784-200-200-100 / "
                       "100-100-50 tanh (two stochastic layers), k-sample ELBO, as burda-vae",
        "model": dict(BURDA_TWO_LAYERS),
        "training": dict(BURDA_TABLE_1, objective="elbo"),
    },
    "burda2-iwae": {
        "description": "Burda et al.'s Table 1 two-layer IWAE, k=5: as burda2-vae, trained "
                       "on the importance-weighted bound",
        "model": dict(BURDA_TWO_LAYERS),
        "training": dict(BURDA_TABLE_1, objective="iwae"),
    },
    "vqvae": {
        "description": "van den Oord et al.'s VQ-VAE at Keras's sizes: conv 32-64 (3x3, stride 2) "
                       "to a 7x7 grid of 16-dim vectors, 64 codes, commitment 0.25, codebook by "
                       "gradient, dead codes restarted every 100 steps, convT 64-32-1, ReLU, "
                       "Bernoulli on [0,1] pixels, Adam 1e-3, batch 128",
        "model": dict(architecture="vqvae", hidden=(32, 64), decoder_hidden=None, latent=None,
                      activation="relu", likelihood="bernoulli", sigma=None, init="glorot",
                      beta=None, embedding_dim=16, n_codes=64, commitment=0.25,
                      codebook_update="gradient", ema_decay=None, restart_every=100),
        "training": dict(epochs=10, batch_size=128, lr=1e-3, binarize="none",
                         eval_batch_size=250),   # as conv's
    },
    "cvae": {
        "description": "a conditional VAE: pytorch-example with the digit label, one-hot, "
                       "into encoder and decoder",
        "model": dict(PYTORCH_MLP),
        "training": dict(epochs=10, batch_size=128, lr=1e-3, binarize="none", conditional=True),
    },
}

DEFAULT_PRESET = "pytorch-example"


def get_preset(name):
    """The preset called ``name`` (a dict with ``description``, ``model``, ``training``)."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"preset={name!r} is unknown; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def describe_presets():
    """One line per preset: its name and description."""
    width = max(map(len, PRESETS))
    return "\n".join(f"{name:<{width}}  {p['description']}" for name, p in PRESETS.items())
