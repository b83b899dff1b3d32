"""npvae: variational autoencoders from scratch in NumPy, every gradient by hand.

The pieces, a module each:

- ``backend``      which array library holds the arrays (NumPy, or CuPy on a GPU)
- ``activations``  ReLU, leaky ReLU, tanh, sigmoid, softplus, with backwards
- ``layers``       the dense layer, the MLP, flat parameter storage
- ``losses``       Bernoulli and Gaussian likelihoods, the Gaussian KL
- ``reparam``      the reparameterization trick
- ``vae``          the model: loss terms forward, every gradient backward
- ``optim``        Adam, SGD, clipping by global norm
- ``gradcheck``    central finite differences against every backward
- ``data``         IDX files and the MNIST shipped with the package
"""

from .errors import CheckpointError, ConfigError, DataError, DivergenceError, NpvaeError
from .vae import VAE, LossTerms

__version__ = "0.1.0"

__all__ = ["VAE", "LossTerms", "NpvaeError", "ConfigError", "DataError", "CheckpointError",
           "DivergenceError", "__version__"]
