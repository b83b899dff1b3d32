"""Freed memory kept for the next step (``npvae.memory``), on glibc.

- with ``import npvae`` a step that frees large arrays hands their memory to
  the next step: no page faults after the first rounds; with
  ``NPVAE_KEEP_MEMORY=0`` (glibc's own defaults) every round faults its
  arrays back in (the test that shows the first can fail);
- training ends at the same bytes either way: only where memory comes from
  changes.
"""

import pytest

from npvae import memory
from tests.helpers import fresh_python

pytestmark = pytest.mark.skipif(not memory._glibc(), reason="malloc's settings are glibc's")

ROUNDS = """
import resource, sys
import npvae
import numpy as np

def step():   # a conv step's pattern: large arrays made, used, all freed at its end
    arrays = [np.ones((20 << 20) // 8) for _ in range(3)]
    return sum(float(a[-1]) for a in arrays)

faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(max(faults[2:]))
"""

TRAINING = """
import hashlib
import numpy as np
from npvae.config import TrainConfig
from npvae.optim import Adam
from npvae.train import train_step
from npvae.vae import VAE

config = TrainConfig.from_preset("conv", seed=0, figures=False, progress=False)
model = VAE(**config.model_kwargs(784))
optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=1e-3)
x = np.random.default_rng(0).random((128, 784)).astype(np.float32)
rng = np.random.default_rng(1)
for _ in range(5):
    train_step(model, optimizer, x, rng=rng, check=False)
print(hashlib.sha256(model.theta.tobytes()).hexdigest())
"""


def run_python(code, **env):
    """``code`` in a fresh Python with ``env`` added, one thread, NumPy's huge pages off (so
    that a fault is one 4 KiB page); its stdout."""
    done = fresh_python(code, 600, NPVAE_THREADS="1", NUMPY_MADVISE_HUGEPAGE="0", **env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_step_reuses_the_memory_the_step_before_it_freed():
    pages = 3 * (20 << 20) // 4096       # the arrays' pages: faulted in anew when not kept
    kept = int(run_python(ROUNDS))
    handed_back = int(run_python(ROUNDS, NPVAE_KEEP_MEMORY="0"))
    assert kept < pages // 100, kept
    assert handed_back > pages // 2, handed_back


def test_training_ends_at_the_same_bytes_with_memory_kept_or_handed_back():
    assert run_python(TRAINING) == run_python(TRAINING, NPVAE_KEEP_MEMORY="0")


def test_the_setting_is_refused_nowhere_on_glibc():
    assert memory.keep_freed_memory() is True
