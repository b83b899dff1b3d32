"""What several test modules share, written once.

- ``error_line``: the one stderr line of a failed command;
- ``fresh_python``: code run in a new Python, without the npvae and BLAS variables inherited;
- ``snapshot``: every file under a folder (digest and mode), to show nothing changed;
- ``assert_all_ok``: every gradient-check result passes, or the failing ones are shown;
- ``idx_bytes``, ``write_idx``, ``write_tiny_mnist``: IDX files and a tiny MNIST-format data set;
- ``TINY_FLAGS``, ``train_args``, ``tiny_config``: a tiny run on that data (milliseconds a run),
  from the command line or as a ``TrainConfig``;
- ``copy_run``: a private copy of a trained run folder (``conftest.trained_run``) to change;
- ``ANCHOR_RE``, ``github_anchor``, ``headings``, ``derivation_anchors``: the links into
  ``tutorials/derivations.md`` and the anchors its headings give.
"""

import gzip
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from npvae import memory, threads
from npvae.config import TrainConfig
from npvae.data import MNIST_FILES
from tests.timeouts import safety_net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------- commands and folders


def fresh_python(code, seconds, **env):
    """Run ``code`` in a fresh Python: the subprocess's result (text). npvae's and BLAS's
    variables (threads, ``NPVAE_KEEP_MEMORY``) are not inherited; ``env`` is added, and the
    repository is on its path. ``seconds``: the safety net against a hang (``safety_net``)."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in threads.BLAS_VARIABLES + (threads.ENVIRONMENT, memory.ENVIRONMENT)}
    environment.update(env, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True,
                          text=True, timeout=safety_net(seconds))


def error_line(capsys):
    """The single stderr line of a failed command."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("npvae: error: "), err
    return err


def snapshot(folder):
    """Every file and folder under ``folder``: its content's digest (None for a folder) and mode."""
    return {p.relative_to(folder): (hashlib.sha256(p.read_bytes()).hexdigest()
                                    if p.is_file() else None, p.lstat().st_mode)
            for p in sorted(Path(folder).rglob("*"))}


def copy_run(run, folder):
    """A copy of the run folder ``run`` as ``folder/run``, for a test that changes it."""
    return Path(shutil.copytree(run, Path(folder) / "run"))


# ---------------------------------------------------------------- gradient checks


def assert_all_ok(results):
    """Every ``npvae.gradcheck`` result within its tolerance; else the failing ones, listed."""
    bad = [str(r) for r in results if not r.ok]
    assert not bad, "gradient check failed:\n" + "\n".join(bad)


# ---------------------------------------------------------------- IDX files and tiny data

IDX_TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array):
    """The IDX encoding of ``array``: magic, big-endian dims, big-endian data."""
    array = np.asarray(array)
    header = struct.pack(">BBBB", 0, 0, IDX_TYPE_CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, gz=True):
    """Write ``array`` as IDX to ``path`` (gzipped when ``gz``) and return ``path``."""
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_tiny_mnist(folder, n_train=48, n_test=16, side=4, seed=0, replace=None):
    """Four raw IDX files of random uint8 images (side x side) and labels; ``replace`` maps
    some of ``x_train``, ``y_train``, ``x_test``, ``y_test`` to raw bytes written instead."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {"x_train": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for key, name in MNIST_FILES.items():
        (folder / name).write_bytes((replace or {}).get(key) or idx_bytes(arrays[key]))
    return folder


# ---------------------------------------------------------------- a tiny run

# A 16-8-2 model in batches of 10: 5 steps an epoch on the tiny data.
TINY_FLAGS = ["--hidden", "8", "--latent", "2", "--batch-size", "10", "--no-progress",
              "--no-figures"]


def train_args(tiny, run_dir, *more, epochs=2):
    """``npvae train`` arguments of a tiny run on the data in ``tiny``, into ``run_dir``."""
    return ["train", "--data-dir", str(tiny), "--run-dir", str(run_dir), "--epochs", str(epochs),
            *TINY_FLAGS, *more]


def tiny_config(data_dir=None, **overrides):
    """A tiny, fast ``TrainConfig`` (16-8-2 on ``data_dir``, batches of 10, 4 epochs, no
    figures or progress bar); ``overrides`` (``preset`` among them) change any setting."""
    values = dict(hidden=(8,), latent=2, epochs=4, batch_size=10,
                  data_dir=None if data_dir is None else str(data_dir), figures=False,
                  progress=False)
    values.update(overrides)
    preset = values.pop("preset", "pytorch-example")
    return TrainConfig.from_preset(preset, **values)


# ---------------------------------------------------------------- links into derivations.md

DERIVATIONS = Path(__file__).resolve().parents[1] / "tutorials" / "derivations.md"
ANCHOR_RE = re.compile(r"derivations\.md#([A-Za-z0-9_-]+)")


def github_anchor(heading):
    """The anchor GitHub gives a heading: lowercase, punctuation removed, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(markdown):
    """``{anchor: heading text}`` for every heading outside code fences (duplicates get -1, -2)."""
    found, seen, fenced = {}, {}, False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = re.match(r"(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if match and not fenced:
            anchor = github_anchor(match.group(2))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found[anchor if count == 0 else f"{anchor}-{count}"] = match.group(2)
    return found


def derivation_anchors(path=DERIVATIONS):
    """``{anchor: heading text}`` of ``tutorials/derivations.md``."""
    return headings(path.read_text(encoding="utf-8"))
