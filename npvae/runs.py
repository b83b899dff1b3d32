"""The run folder: opening and claiming it, its metrics and config files, the training position.

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
import math
import os
import re
from dataclasses import asdict
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: run folders are not locked
    fcntl = None

from . import __version__
from .atomic import atomic_write_text, make_folder
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, restore_model
from .checks import is_int
from .errors import CheckpointError, ConfigError, DataError, FileError
from .vqtrain import TERMS as VQ_TERMS

RUN_FILES = ("config.json", "metrics.csv", CHECKPOINT_NAME, "prior.npz")   # (a VQ-VAE's prior)
LOCK_NAME = ".npvae-lock"
FIGURES = ("reconstructions.png", "samples.png", "curves.png", "latents.png", "manifold.png",
           "interpolation.png", "codebook_usage.png", "codes_in_context.png")
# What --overwrite may remove: npvae's own files and nothing else (a user's photo.png stays).
OWN_FILES = re.compile(r"(config\.json|metrics\.csv|checkpoint\.npz|prior\.npz|"
                       r"samples_seed\d+\.png|" + "|".join(re.escape(name) for name in FIGURES) + ")")
OWN_FIGURES = re.compile(r"(reconstructions|samples)_epoch\d+\.png")       # in figures/
# atomic_write's temporary files: "." + the target's name + "." + mkstemp's 8 letters + ".tmp"
TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")


def open_checkpoint(run):
    """``(checkpoint, run_dir)`` of a run folder or a checkpoint file, loaded and checked whole.

    The one way npvae opens a run: every command (``open_run``) and
    ``npvae.train.resume``. The path must exist and a folder must hold
    ``checkpoint.npz``; ``npvae.checkpoint.load_checkpoint`` checks the file.
    """
    path = Path(run)
    if not path.exists():
        raise ConfigError(f"RUN={str(run)!r}: no such run folder or checkpoint file")
    if path.is_dir() and not (path / CHECKPOINT_NAME).is_file():
        raise ConfigError(f"RUN={str(run)!r}: the folder holds no {CHECKPOINT_NAME}")
    checkpoint = load_checkpoint(path / CHECKPOINT_NAME if path.is_dir() else path)
    return checkpoint, path if path.is_dir() else path.parent


def open_run(run, backend="numpy"):
    """A trained run: ``(model, checkpoint, run_dir)``, the model with its trained weights
    (``open_checkpoint``, then ``restore_model``). ``backend``: where the model lives."""
    from .cvae import model_from_config

    checkpoint, run_dir = open_checkpoint(run)
    try:
        model = model_from_config(**checkpoint.model_config, backend=backend)
    except ConfigError as err:
        raise CheckpointError(f"{checkpoint.path}: cannot build its model ({err})") from err
    restore_model(checkpoint, model)
    return model, checkpoint, run_dir


def run_test_data(checkpoint, data_dir=None):
    """The test set (``x_test``, ``y_test``) of a checkpoint's run, preprocessed as in training.

    A checkpoint written outside the trainer (no training config) gets plain
    [0, 1] pixels. ``data_dir`` replaces the run's data folder.
    """
    from .config import TrainConfig
    from .data import prepare_data

    config = TrainConfig.from_checkpoint(checkpoint)
    if config is None:
        model = checkpoint.model_config
        config = TrainConfig(likelihood=model["likelihood"], dtype=model["dtype"], batch_size=1)
    if data_dir is not None:
        config.data_dir = data_dir
    data = prepare_data(config.validate())
    if data.x_test.shape[1] != checkpoint.model_config["x_dim"]:
        raise ConfigError(f"the data has {data.x_test.shape[1]} pixels per example but the "
                          f"model expects {checkpoint.model_config['x_dim']}")
    return data.x_test, data.y_test


class RunLock:
    """A run folder claimed by this process: ``fcntl.flock`` on its ``.npvae-lock`` file.

    The OS releases the lock when the process ends, however it ends (a
    SIGKILL leaves no stale claim behind). The file holds the holder's PID,
    so a second process can say who has the folder.
    """

    def __init__(self, run_dir):
        self.run_dir, self.fd = Path(run_dir), None
        path = self.run_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as err:
            raise _folder_error(f"cannot claim run folder {self.run_dir}", err) from err
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise ConfigError(f"run folder {self.run_dir} is in use by process {holder} "
                                  "(one npvae run per folder at a time)") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the lock holds without the PID
        self.fd = fd

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _folder_error(what, err):
    error = FileError(f"{what}: {err.strerror or err}")
    error.errno = err.errno
    return error


def claim_run_dir(run_dir, preset, overwrite=False):
    """Create (or, with ``overwrite``, clear) the run folder and lock it: ``(path, note, lock)``.

    ``run_dir=None`` takes ``runs/<preset>``, or ``runs/<preset>-2``, ``-3``,
    ... when taken. An explicit folder that exists and is not empty is an
    error unless ``overwrite`` and it is an npvae run folder
    (``is_run_folder``); then npvae's own files are removed from it, and
    nothing else. The folder is locked (``RunLock``) before anything in it
    is touched, and stale temporary files of npvae's own writes are removed.
    The caller releases ``lock`` when the run ends.
    """
    if run_dir is None:
        base = Path("runs") / preset
        make_folder(base.parent)
        for i in range(1, 10_000):
            candidate = base if i == 1 else base.with_name(f"{preset}-{i}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                raise _folder_error(f"cannot create run folder {candidate}", err) from err
            return candidate, (f" ({base} is taken)" if i > 1 else ""), RunLock(candidate)
        raise ConfigError(f"no free run folder under {base.parent}")
    if not isinstance(run_dir, (str, os.PathLike)) or str(run_dir) == "":
        raise ConfigError(f"run_dir={run_dir!r} must name a folder")
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir={str(run_dir)!r} exists and is not a folder")
    make_folder(run_dir)
    _may_take(run_dir, overwrite)  # before the lock file is made: a user's folder stays as it was
    lock = RunLock(run_dir)
    try:
        remove_stale_temporaries(run_dir)
        if _may_take(run_dir, overwrite):  # (again: it may have changed before the lock)
            _clear_run(run_dir)
            return run_dir, " (overwritten)", lock
        return run_dir, "", lock
    except BaseException:
        lock.release()
        raise


def _may_take(run_dir, overwrite):
    """False for a folder empty but for npvae's lock and temporary files; True for a run
    folder to overwrite; otherwise a ConfigError naming the folder."""
    if all(p.name == LOCK_NAME or _stale(p) for p in run_dir.iterdir()):
        return False
    if not overwrite:
        raise ConfigError(f"run_dir={str(run_dir)!r} already exists; pass --overwrite to "
                          f"replace it, or --resume {run_dir} to continue it")
    if not is_run_folder(run_dir):
        raise ConfigError(f"run_dir={str(run_dir)!r} is not an npvae run folder (it has no "
                          "config.json written by npvae); --overwrite only replaces run "
                          "folders: choose another --run-dir")
    return True


def _stale(path, own=OWN_FILES):
    """True for a temporary file ``atomic_write`` left behind while writing one of npvae's."""
    match = TEMPORARY.fullmatch(path.name)
    return bool(match and own.fullmatch(match["target"]) and path.is_file())


def claim_existing_run(run_dir):
    """Lock an existing run folder to continue it (``RunLock``) and remove stale temporaries."""
    lock = RunLock(run_dir)
    try:
        remove_stale_temporaries(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def is_run_folder(run_dir):
    """True if ``run_dir`` holds a ``config.json`` that npvae wrote (``write_config``)."""
    path = Path(run_dir) / "config.json"
    try:
        if not path.is_file() or path.stat().st_size > 2**20:
            return False
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(info, dict) and {"npvae_version", "train", "model"} <= set(info)


def remove_stale_temporaries(run_dir):
    """Remove what an interrupted ``atomic_write`` of npvae's own files left behind."""
    for folder, own in ((Path(run_dir), OWN_FILES), (Path(run_dir) / "figures", OWN_FIGURES)):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if _stale(path, own):
                _remove(path)


def _clear_run(run_dir):
    """Remove the files a run writes (and nothing else)."""
    for folder, own in ((run_dir, OWN_FILES), (run_dir / "figures", OWN_FIGURES)):
        if folder.is_dir():
            for path in folder.iterdir():
                if own.fullmatch(path.name) and path.is_file():
                    _remove(path)
    figures = run_dir / "figures"
    if figures.is_dir() and not any(figures.iterdir()):
        figures.rmdir()


def _remove(path):
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        raise _folder_error(f"cannot remove {path}", err) from err


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
    """The rows of a ``metrics.csv``, numbers as floats (``epoch`` and ``step`` as ints).

    A file that is not npvae's metrics (binary, not CSV of numbers, over
    64 MB) is a one-line ``DataError`` naming it.
    """
    rows = []
    try:
        if Path(path).stat().st_size > 64 * 2**20:
            raise DataError(f"{path}: too large for a metrics.csv npvae wrote")
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if None in row or None in row.values():
                    raise ValueError(f"line {len(rows) + 2} has a different number of fields")
                rows.append({k: (int(v) if k in ("epoch", "step") else float(v)) if v != ""
                             else None for k, v in row.items()})
    except OSError as err:
        raise _folder_error(f"cannot read {path}", err) from err
    except (ValueError, csv.Error) as err:  # (UnicodeDecodeError is a ValueError)
        raise DataError(f"{path}: not a metrics file npvae wrote ({err})") from err
    return rows


def repair_metrics(run_dir, metrics):
    """Make ``metrics.csv`` hold exactly the checkpoint's rows: the checkpoint is the truth
    about how far a run got (a failure after it was written may have left the file ahead
    of it, or behind it)."""
    path = Path(run_dir) / "metrics.csv"
    if metrics:
        write_metrics(path, metrics)
    elif path.exists():
        _remove(path)


ELBO_TERMS = ("loss", "recon", "kl")
"""The loss terms of a VAE's step, summed over an epoch (a VQ-VAE's: ``npvae.vqtrain.TERMS``)."""


def new_sums(terms=ELBO_TERMS):
    """The partial sums of an epoch not begun: examples, each of the loss ``terms``, seconds."""
    return {"n": 0, **{term: 0.0 for term in terms}, "seconds": 0.0}


def metrics_row(epoch, global_step, beta, sums, test, val=None, train_extra=None):
    """The metrics row of ``epoch`` (from 0): the train means of the epoch's ``sums`` (and
    ``train_extra``, e.g. a VQ-VAE's code usage), the ``test`` (and ``val``) terms, its time
    and speed. ``beta`` None (a VQ-VAE: no KL to weigh) leaves its column out."""
    n = sums["n"]
    row = {"epoch": epoch + 1, "step": global_step, **({} if beta is None else {"beta": beta})}
    row.update({f"train_{k}": v / n for k, v in sums.items() if k not in ("n", "seconds")})
    row.update({f"train_{k}": v for k, v in (train_extra or {}).items()})
    for split, values in (("test", test), ("val", val)):
        row.update({f"{split}_{k}": v for k, v in (values or {}).items()})
    row.update(seconds=round(sums["seconds"], 3),
               examples_per_s=round(n / max(sums["seconds"], 1e-9), 1))
    return row


def format_row(row, epochs):
    """The one-line summary of an epoch's metrics row."""
    if "train_kl" not in row:
        return _format_vq_row(row, epochs)
    line = (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
            f"(recon {row['train_recon']:.4f}, kl {row['train_kl']:.4f})  "
            f"test loss {row['test_loss']:.4f} (recon {row['test_recon']:.4f}, "
            f"kl {row['test_kl']:.4f})")
    if "val_loss" in row:
        line += f"  val loss {row['val_loss']:.4f}"
    return line + f"  {row['seconds']:.1f} s, {row['examples_per_s']:.0f} examples/s"


def _format_vq_row(row, epochs):
    """``format_row`` of a VQ-VAE's epoch: each split's loss, its three terms and code usage."""
    def split(name):
        return (f"{name} loss {row[f'{name}_loss']:.4f} (recon {row[f'{name}_recon']:.4f}, "
                f"codebook {row[f'{name}_codebook']:.4f}, commitment "
                f"{row[f'{name}_commitment']:.4f}; perplexity {row[f'{name}_perplexity']:.1f}, "
                f"{row[f'{name}_dead_codes']} dead codes)")
    splits = [split(name) for name in ("train", "test", "val") if f"{name}_loss" in row]
    return (f"epoch {row['epoch']}/{epochs}  " + "  ".join(splits)
            + f"  {row['seconds']:.1f} s, {row['examples_per_s']:.0f} examples/s")


def new_state(config, data):
    """The training position of a new run: nothing done yet."""
    return {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "partial": None, "rng": None,
            "metrics": [], "train_config": asdict(config), "data": data.summary()}


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _usage(usage, train_config):
    """Whether a VQ run's partial ``usage`` is its N code counts, non-negative integers."""
    return (isinstance(usage, list) and len(usage) == train_config.get("n_codes")
            and all(is_int(c) and c >= 0 for c in usage))


def check_state(path, state):
    """The trainer's position in a checkpoint, checked before anything uses it.

    Besides the types: one metrics row per completed epoch, numbered in
    order; a step inside the epoch and a global step that adds up (from the
    stored data size and batch size); partial sums that are finite numbers.
    """
    problems = [key for key in ("epoch", "step_in_epoch", "global_step")
                if not is_int(state.get(key)) or state[key] < 0]
    for key, kind in (("metrics", list), ("train_config", dict), ("data", dict)):
        if not isinstance(state.get(key), kind):
            problems.append(key)
    if not problems:
        metrics = state["metrics"]
        if len(metrics) != state["epoch"] or not all(
                isinstance(row, dict) and row.get("epoch") == i + 1
                and all(v is None or _number(v) for v in row.values())
                for i, row in enumerate(metrics)):
            problems.append("metrics (one row of numbers per completed epoch)")
        n, batch_size = state["data"].get("n_train"), state["train_config"].get("batch_size")
        if is_int(n) and is_int(batch_size) and n > 0 and batch_size > 0:
            per_epoch = -(-n // batch_size)
            if state["step_in_epoch"] > per_epoch:
                problems.append(f"step_in_epoch (an epoch has {per_epoch} steps)")
            elif state["global_step"] != state["epoch"] * per_epoch + state["step_in_epoch"]:
                problems.append("global_step (not epoch * steps per epoch + step_in_epoch)")
        else:
            problems.append("data or train_config (the data size and batch size)")
    if state.get("step_in_epoch"):
        partial, rng = state.get("partial"), state.get("rng")
        vq = isinstance(state.get("train_config"), dict) and \
            state["train_config"].get("architecture") == "vqvae"
        sums = [*(VQ_TERMS if vq else ELBO_TERMS), "seconds"]
        if not (isinstance(partial, dict) and {"n", *sums} <= set(partial)
                and is_int(partial["n"]) and partial["n"] >= 0
                and all(_number(partial[k]) for k in sums)
                and (not vq or _usage(partial.get("usage"), state["train_config"]))):
            problems.append("partial")
        if not (isinstance(rng, dict) and isinstance(rng.get("shuffle_epoch_start"), dict)):
            problems.append("rng")
    if problems:
        raise CheckpointError(f"{path}: not a training checkpoint (missing or malformed: "
                              f"{', '.join(problems)})")
    return state
