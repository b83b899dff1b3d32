"""The backend seam: NumPy by default, CuPy optional, and no stray NumPy call.

A stand-in array module (tests/strict_xp.py) refuses implicit conversion to
NumPy arrays the way CuPy does; a full training step through it proves that
every array operation goes through the backend's ``xp``. The step's numbers
must equal NumPy's exactly.
"""

import subprocess
import sys

import numpy as np
import pytest

from npvae import VAE, ConfigError
from npvae.backend import get_xp, to_numpy, xp_of
from npvae.optim import Adam
from npvae.train import train_step


def test_stand_in_refuses_numpy(strict_backend):
    x = get_xp("strict").zeros(3)
    with pytest.raises(TypeError):
        np.exp(x)
    with pytest.raises(TypeError):
        np.asarray(x)
    with pytest.raises(TypeError):
        np.concatenate([x, x])
    # CuPy also refuses a NumPy array as the other operand ("Unsupported type"), in place or not
    host = np.ones(3)
    for mix in (lambda: x + host, lambda: x.__iadd__(host), lambda: get_xp("strict").add(x, host)):
        with pytest.raises(TypeError, match="NumPy array mixed"):
            mix()
    x += 1.0   # a Python scalar is fine, as in CuPy
    assert float(x.sum()) == 3.0


@pytest.mark.parametrize("likelihood, activation", [("bernoulli", "relu"), ("gaussian", "tanh"),
                                                    ("bernoulli", "softplus")])
def test_training_step_through_stand_in_matches_numpy(likelihood, activation, strict_backend):
    rng = np.random.default_rng(0)
    x_host = rng.random((8, 16)).astype(np.float32)
    results = {}
    for backend in ("numpy", "strict"):
        xp = get_xp(backend)
        model = VAE(16, (12,), 3, activation=activation, likelihood=likelihood, backend=backend, seed=1)
        opt = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=1e-2)
        x = xp.asarray(x_host)
        noise = xp.random.default_rng(2)
        for _ in range(3):
            terms = train_step(model, opt, x, rng=noise, clip=5.0)
        assert xp_of(model.theta) is xp
        results[backend] = (to_numpy(model.theta), float(terms.loss), to_numpy(model.decode(model.mu)))
    np.testing.assert_array_equal(results["numpy"][0], results["strict"][0])
    assert results["numpy"][1] == results["strict"][1]
    np.testing.assert_array_equal(results["numpy"][2], results["strict"][2])


@pytest.mark.parametrize("preset", ["pytorch-example", "conv", "burda-iwae", "cvae", "burda2-iwae", "vqvae"])
def test_gradient_check_of_a_preset_runs_on_the_stand_in(preset, strict_backend):
    """``check_architecture`` (``npvae gradcheck``, ``benchmarks/gpu_check.py``) on a device
    backend: its draws (biases, x, eps) move to the model's backend, and every relative error
    equals NumPy's. It once added host draws to device biases, which CuPy refuses."""
    from npvae.gradcheck import check_architecture, preset_architecture, shrink_architecture

    errors = {}
    for backend in ("numpy", strict_backend.name):
        base, objective, k = preset_architecture(preset)
        model, results = check_architecture(shrink_architecture(base, 20), objective=objective,
                                            k=k, backend=backend)
        assert xp_of(model.theta) is get_xp(backend)
        assert all(r.ok for r in results)
        errors[backend] = [(r.name, r.rel_error, r.skipped) for r in results]
    assert errors["numpy"] == errors[strict_backend.name]


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ConfigError, match="backend='tpu' is unknown"):
        get_xp("tpu")


def test_importing_npvae_does_not_import_cupy():
    code = "import sys, npvae, npvae.vae, npvae.optim, npvae.gradcheck; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cupy_backend_without_cupy_names_the_fix():
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="needs CuPy"):
            get_xp("cupy")
    else:  # pragma: no cover - only on a GPU machine
        assert get_xp("cupy").__name__ == "cupy"
