"""npvae: variational autoencoders from scratch in NumPy, every gradient by hand.

The pieces, a module each (read them in this order):

- ``backend``      which array library holds the arrays (NumPy, or CuPy on a GPU)
- ``threads``      how many threads the matrix products use (``--threads``, NPVAE_THREADS)
- ``memory``       the memory one training step frees, kept by malloc for the next
- ``errors``       npvae's exceptions; ``checks``: the argument checks they come from
- ``activations``  ReLU, leaky ReLU, tanh, sigmoid, softplus, with backwards
- ``layers``       the dense layer, the MLP, flat parameter storage
- ``conv``         2-D convolution and its transpose, for the conv architecture
- ``losses``       Bernoulli and Gaussian likelihoods, the Gaussian KL
- ``reparam``      the reparameterization trick
- ``vae``          the model: loss terms forward, every gradient backward
- ``cvae``         the conditional VAE: the digit label into encoder and decoder
- ``iwae``         k samples per example: the k-sample ELBO and the importance-weighted bound
- ``optim``        Adam (and the textbook Algorithm 1 it is checked against), SGD, clipping
- ``gradcheck``    central finite differences against every backward
- ``data``         IDX files, the MNIST shipped with the package, a run's data
- ``train``        ``train_step``, the plain ``fit`` loop, and the run around them
- ``config``       ``TrainConfig``: everything that defines a run, what a resume may change
- ``randomness``   every random number of a run from its one seed; exact resume
- ``progress``     progress bars, durations, Ctrl-C during training
- ``presets``      named configurations (PyTorch's example, Burda et al.'s, ...)
- ``runs``         the run folder: opening a run, config.json, metrics.csv, the position
- ``checkpoint``   ``.npz`` checkpoints loaded without pickle; ``atomic``: atomic writes
- ``evaluate``     test ELBO, the importance-weighted bound, KL per dimension
- ``plots``        the figures, and the one 2-D latent plane they and the explorer use
- ``cli``          the ``npvae`` command: every parser and exit code; ``flags``: each flag's check
- ``explore``      the interactive latent-space explorer (``npvae explore RUN``)
- ``tutorial``     what the tutorials share: their modes, folders, inline figures
- ``exercises``    grades a learner's own backwards in tutorials/exercises/
- ``export``       a run to and from safetensors, under PyTorch's state_dict names
"""

from . import memory as _memory
from . import threads as _threads

_threads.configure()  # NPVAE_THREADS, applied before NumPy loads (npvae/threads.py)
_memory.configure()   # freed memory kept for the next step, unless NPVAE_KEEP_MEMORY=0

from .errors import (CheckpointError, ConfigError, DataError, DivergenceError,  # noqa: E402
                     NpvaeError)
from .vae import VAE, LossTerms  # noqa: E402

__version__ = "0.1.0"

__all__ = ["VAE", "LossTerms", "NpvaeError", "ConfigError", "DataError", "CheckpointError",
           "DivergenceError", "__version__"]
