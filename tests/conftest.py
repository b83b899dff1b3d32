"""Shared test settings and fixtures.

- hypothesis profiles sized for a 2-core CI machine;
- ``strict_backend``: the stand-in GPU array module (``tests/strict_xp.py``),
  registered as backend ``"strict"`` for one test;
- ``tiny``: a tiny MNIST-format data set (``tests.helpers.write_tiny_mnist``), one a session;
- ``trained_run``: one finished tiny run (2 epochs, with figures) for the whole session, made
  by the command line; read it, or change a copy of it (``tests.helpers.copy_run``).
"""

import os
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, settings

from npvae import backend
from tests.helpers import train_args, write_tiny_mnist
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


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny MNIST-format data set: 48 training and 16 test images of 4 x 4 pixels."""
    return write_tiny_mnist(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def trained_run(tiny, tmp_path_factory):
    """A finished 2-epoch ``npvae train`` run on ``tiny``, with its figures. Shared by the
    session: tests that change a run change ``copy_run(trained_run, tmp_path)``."""
    from npvae import cli

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    argv = [a for a in train_args(tiny, run_dir) if a != "--no-figures"]
    assert cli.main(argv) == 0
    return run_dir
