"""The array backend: which library holds the arrays (NumPy or CuPy).

All compute code asks this module for its array module ``xp`` instead of
calling ``numpy`` directly, so the same layer code runs on a GPU when the
arrays live there. Importing npvae never imports CuPy; ``get_xp("cupy")``
does, on first use.

A backend is a module with NumPy's API (``xp.matmul``, ``xp.exp``, ...), the
type of its arrays, and a ``to_numpy`` that copies an array to the host.
"""

import numpy as np

from .errors import ConfigError

BACKENDS = ("numpy", "cupy")

_modules = {"numpy": np}
_array_types = {np.ndarray: np}
_to_numpy = {np: np.asarray}


def register_backend(name, module, array_type, to_numpy):
    """Make ``module`` available as ``get_xp(name)``.

    ``array_type`` is the class of the module's arrays (used by ``xp_of``) and
    ``to_numpy(x)`` copies one of them to a NumPy array. CuPy registers itself
    through this; tests register a stand-in module the same way.
    """
    _modules[name] = module
    _array_types[array_type] = module
    _to_numpy[module] = to_numpy


def get_xp(backend="numpy"):
    """The array module called ``backend``: ``numpy`` or ``cupy``."""
    if not isinstance(backend, str):
        raise ConfigError(f"backend={backend!r} must be a name: one of {', '.join(BACKENDS)}")
    if backend == "cupy" and "cupy" not in _modules:
        try:
            import cupy
        except ImportError as err:  # pragma: no cover - depends on the machine
            raise ConfigError(
                "backend='cupy' needs CuPy, which is not installed "
                "(pip install 'npvae[gpu]', or cupy-cudaXXx for your CUDA)"
            ) from err
        register_backend("cupy", cupy, cupy.ndarray, cupy.asnumpy)
    if backend not in _modules:
        raise ConfigError(
            f"backend={backend!r} is unknown; choose one of {', '.join(BACKENDS)}"
        )
    return _modules[backend]


def xp_of(x):
    """The array module that owns array ``x`` (NumPy for anything unknown)."""
    return _array_types.get(type(x), np)


def to_numpy(x):
    """Copy ``x`` to a NumPy array on the host (no copy if it already is one)."""
    return _to_numpy[xp_of(x)](x)


def default_rng(seed, xp=np):
    """A seeded random Generator of module ``xp`` (``xp.random.default_rng``)."""
    return xp.random.default_rng(seed)
