"""npvae: variational autoencoders from scratch in NumPy, every gradient by hand.

The pieces, a module each (read them in this order):

- ``backend``      which array library holds the arrays (NumPy, or CuPy on a GPU)
- ``threads``      how many threads the matrix products use (``--threads``, NPVAE_THREADS)
- ``errors``       npvae's exceptions; ``checks``: the argument checks they come from
- ``activations``  ReLU, leaky ReLU, tanh, sigmoid, softplus, with backwards
- ``layers``       the dense layer, the MLP, flat parameter storage
- ``losses``       Bernoulli and Gaussian likelihoods, the Gaussian KL
- ``reparam``      the reparameterization trick
- ``vae``          the model: loss terms forward, every gradient backward
- ``optim``        Adam (and the textbook Algorithm 1 it is checked against), SGD, clipping
- ``gradcheck``    central finite differences against every backward
- ``data``         IDX files, the MNIST shipped with the package, a run's data
- ``train``        ``train_step``, the plain ``fit`` loop, and the run around them
- ``config``       ``TrainConfig``: everything that defines a run, its seeds
- ``presets``      named configurations (PyTorch's example, Burda et al.'s, ...)
- ``runs``         the run folder: config.json, metrics.csv, the training position
- ``checkpoint``   ``.npz`` checkpoints loaded without pickle; ``atomic``: atomic writes
- ``evaluate``     test ELBO, the importance-weighted bound, KL per dimension
- ``plots``        the figures; ``cli``: the ``npvae`` command
- ``explore``      the interactive latent-space explorer (``npvae explore RUN``)
- ``tutorial``     what the tutorials share: their modes, folders, inline figures
- ``exercises``    grades a learner's own backwards in tutorials/exercises/
"""

from . import threads as _threads

_threads.configure()  # NPVAE_THREADS, applied before NumPy loads (npvae/threads.py)

from .errors import (CheckpointError, ConfigError, DataError, DivergenceError,  # noqa: E402
                     NpvaeError)
from .vae import VAE, LossTerms  # noqa: E402

__version__ = "0.1.0"

__all__ = ["VAE", "LossTerms", "NpvaeError", "ConfigError", "DataError", "CheckpointError",
           "DivergenceError", "__version__"]
