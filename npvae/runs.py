"""The run folder: claiming it, its metrics and config files, and the training position.

A run folder holds ``config.json`` (the ``TrainConfig``, the model's config
and the data's sizes), ``metrics.csv`` (one row per epoch, rewritten
atomically), ``checkpoint.npz`` (the latest, written atomically; see
``npvae.checkpoint``) and the figures. The checkpoint's ``state`` holds the
position reached (epoch, step in the epoch, global step, the epoch's partial
sums and generator states), which ``check_state`` validates before a resume
uses it.
"""

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

from . import __version__
from .atomic import atomic_write_text
from .checkpoint import CHECKPOINT_NAME
from .checks import is_int
from .errors import CheckpointError, ConfigError

RUN_FILES = ("config.json", "metrics.csv", CHECKPOINT_NAME)


def claim_run_dir(run_dir, preset, overwrite=False):
    """Create (or, with ``overwrite``, clear) the run folder; return ``(path, note)``.

    ``run_dir=None`` takes ``runs/<preset>``, or ``runs/<preset>-2``, ``-3``,
    ... when taken. An explicit folder that exists and is not empty is an
    error unless ``overwrite``, which removes npvae's own files from it.
    """
    try:
        if run_dir is None:
            base = Path("runs") / preset
            base.parent.mkdir(parents=True, exist_ok=True)
            for i in range(1, 10_000):
                candidate = base if i == 1 else base.with_name(f"{preset}-{i}")
                try:
                    candidate.mkdir()
                except FileExistsError:
                    continue
                return candidate, (f" ({base} is taken)" if i > 1 else "")
            raise ConfigError(f"no free run folder under {base.parent}")
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"run_dir={str(run_dir)!r} exists and is not a folder")
        if run_dir.is_dir() and any(run_dir.iterdir()):
            if not overwrite:
                raise ConfigError(f"run_dir={str(run_dir)!r} already exists; pass --overwrite to "
                                  f"replace it, or --resume {run_dir} to continue it")
            _clear_run(run_dir)
            return run_dir, " (overwritten)"
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir, ""
    except OSError as err:
        raise ConfigError(f"cannot create run folder {run_dir}: {err.strerror or err}") from err


def _clear_run(run_dir):
    """Remove the files a run writes (and nothing else)."""
    doomed = [run_dir / name for name in RUN_FILES]
    doomed += list(run_dir.glob("*.png")) + list((run_dir / "figures").glob("*.png"))
    for path in doomed:
        path.unlink(missing_ok=True)


def write_config(run_dir, config, model, data):
    """``config.json``: the training config, the model's config and the data's sizes."""
    info = {"npvae_version": __version__, "train": asdict(config), "model": model.config,
            "data": data.summary()}
    atomic_write_text(Path(run_dir) / "config.json", json.dumps(info, indent=2) + "\n")


def write_metrics(path, metrics):
    """Write the per-epoch rows to ``path`` as CSV, atomically."""
    if not metrics:
        return
    columns = list(metrics[0])
    for row in metrics[1:]:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(metrics)
    atomic_write_text(path, out.getvalue())


def read_metrics(path):
    """The rows of a ``metrics.csv``, numbers as floats (``epoch`` and ``step`` as ints)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append({k: (int(v) if k in ("epoch", "step") else float(v)) if v != "" else None
                         for k, v in row.items()})
    return rows


def format_row(row, epochs):
    """The one-line summary of an epoch's metrics row."""
    line = (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
            f"(recon {row['train_recon']:.4f}, kl {row['train_kl']:.4f})  "
            f"test loss {row['test_loss']:.4f} (recon {row['test_recon']:.4f}, "
            f"kl {row['test_kl']:.4f})")
    if "val_loss" in row:
        line += f"  val loss {row['val_loss']:.4f}"
    return line + f"  {row['seconds']:.1f} s, {row['examples_per_s']:.0f} examples/s"


def new_state(config, data):
    """The training position of a new run: nothing done yet."""
    return {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "partial": None, "rng": None,
            "metrics": [], "train_config": asdict(config), "data": data.summary()}


def check_state(path, state):
    """The trainer's position in a checkpoint, checked before anything uses it."""
    problems = [key for key in ("epoch", "step_in_epoch", "global_step")
                if not is_int(state.get(key)) or state[key] < 0]
    for key, kind in (("metrics", list), ("train_config", dict), ("data", dict)):
        if not isinstance(state.get(key), kind):
            problems.append(key)
    if state.get("step_in_epoch"):
        partial, rng = state.get("partial"), state.get("rng")
        if not (isinstance(partial, dict)
                and {"n", "loss", "recon", "kl", "seconds"} <= set(partial)):
            problems.append("partial")
        if not (isinstance(rng, dict) and isinstance(rng.get("shuffle_epoch_start"), dict)):
            problems.append("rng")
    if problems:
        raise CheckpointError(f"{path}: not a training checkpoint (missing or malformed: "
                              f"{', '.join(problems)})")
    return state
