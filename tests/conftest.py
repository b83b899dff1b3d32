"""Shared test settings and fixtures.

- hypothesis profiles sized for a 2-core CI machine;
- ``strict_backend``: the stand-in GPU array module (``tests/strict_xp.py``),
  registered as backend ``"strict"`` for one test;
- ``write_tiny_mnist`` and the ``tiny`` fixture: a tiny MNIST-format data set.
"""

import os
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from npvae import backend
from npvae.data import MNIST_FILES
from tests.strict_xp import StrictArray, make_module
from tests.strict_xp import to_numpy as strict_to_numpy

settings.register_profile(
    "default", max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("NPVAE_HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def strict_backend(monkeypatch):
    """A stand-in for CuPy, as backend ``"strict"``: NumPy underneath, refusing implicit
    conversion to NumPy, with generators whose state cannot be saved.

    Registered in copies of the backend tables, so nothing outlives the test.
    Returns a namespace with ``name`` and ``transfers`` (the shape of every
    array copied to the host through ``npvae.backend.to_numpy``).
    """
    for table in ("_modules", "_array_types", "_to_numpy"):
        monkeypatch.setattr(backend, table, dict(getattr(backend, table)))
    transfers = []

    def to_host(a):
        transfers.append(a.shape)
        return strict_to_numpy(a)

    backend.register_backend("strict", make_module(), StrictArray, to_host)
    return SimpleNamespace(name="strict", transfers=transfers)


def write_tiny_mnist(folder, n_train=48, n_test=16, side=4, seed=0):
    """Four raw IDX files of random uint8 images (side x side) and labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {"x_train": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for key, name in MNIST_FILES.items():
        a = arrays[key]
        header = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
        (folder / name).write_bytes(header + a.tobytes())
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny MNIST-format data set: 48 training and 16 test images of 4 x 4 pixels."""
    return write_tiny_mnist(tmp_path_factory.mktemp("tiny"))
