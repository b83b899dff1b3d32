"""Checkpoints: one ``.npz`` file, written atomically, loaded without pickle.

Layout of the file (every entry a plain numeric or unicode array):

- ``param/<name>``  each parameter of the model (``param/encoder.0.W``, ...)
- ``optim/<key>``   each optimizer state array (``optim/m_sum.theta``, ``optim/v_sum.theta``)
- ``meta``          a 0-d unicode array holding JSON::

      {"format": "npvae-checkpoint", "version": 2,
       "model": VAE.config, "optimizer": {"name", "hyperparameters", "t"},
       "state": {...anything JSON-able the trainer needs: epoch, step, rng states...}}

Writing goes to a temporary file in the same folder, which is flushed,
fsync'd and then renamed over the target (``os.replace`` is atomic), so a
crash or a full disk while writing leaves any previous checkpoint intact.

Loading uses ``np.load(allow_pickle=False)``, so nothing in the file is ever
executed, and validates everything (format, version, config, every key,
shape and dtype) before returning: a file is loaded whole or refused with a
``CheckpointError`` naming it and the problem.
"""

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .backend import to_numpy
from .errors import CheckpointError, ConfigError, NpvaeError

FORMAT = "npvae-checkpoint"
VERSION = 2  # 2: Adam's moments stored as m_sum, v_sum (version 1: m, v)
CHECKPOINT_NAME = "checkpoint.npz"

# The state arrays each optimizer keeps per parameter group (see optim.py).
OPTIMIZER_SLOTS = {"adam": ("m_sum", "v_sum"), "sgd": ("velocity",)}


# ---------------------------------------------------------------- saving


def _optimizer_meta(optimizer):
    name = type(optimizer).__name__.lower()
    hyper = {k: v for k, v in vars(optimizer).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "t"}
    return {"name": name, "hyperparameters": hyper, "t": int(optimizer.t)}


def save_checkpoint(path, model, optimizer, state):
    """Write ``model``'s parameters, ``optimizer``'s state and ``state`` to ``path``.

    ``optimizer`` may be None (a model alone). ``state`` must be JSON-able
    (plain numbers, strings, lists, dicts; a ``Generator.bit_generator.state``
    is). The write is atomic: see the module docstring.
    """
    arrays = {f"param/{k}": to_numpy(v) for k, v in model.params.items()}
    optim_meta = None
    if optimizer is not None:
        optim_meta = _optimizer_meta(optimizer)
        for k, v in optimizer.state_dict().items():
            if k != "t":
                arrays[f"optim/{k}"] = to_numpy(v)
    meta = {"format": FORMAT, "version": VERSION, "model": model.config,
            "optimizer": optim_meta, "state": state}
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: state is not JSON-able ({err})") from err
    arrays["meta"] = np.array(text)  # 0-d unicode: no pickle needed to read it back
    atomic_write(path, lambda f: np.savez(f, **arrays))


# ---------------------------------------------------------------- loading


@dataclass
class Checkpoint:
    """A validated checkpoint: host arrays and the decoded JSON."""

    path: Path
    model_config: dict
    params: dict                      # name -> np.ndarray, shapes as the model's
    optimizer: dict = None            # {"name", "hyperparameters", "t"} or None
    optimizer_arrays: dict = field(default_factory=dict)  # "m_sum.theta" -> np.ndarray
    state: dict = field(default_factory=dict)

    def optimizer_state(self):
        """The dict ``optimizer.load_state_dict`` takes."""
        return {"t": self.optimizer["t"], **self.optimizer_arrays}


def _read_arrays(path):
    """Every array of the .npz at ``path``, read fully (so corruption shows now)."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: not an npvae checkpoint (a single .npy array, "
                                  "not an .npz archive)")
        with npz:
            arrays = {}
            for key in npz.files:
                try:
                    arrays[key] = npz[key]
                except ValueError as err:
                    if "allow_pickle" in str(err):
                        raise CheckpointError(
                            f"{path}: entry {key!r} is an object array (pickled Python "
                            "objects); refused, since loading it could run code") from err
                    raise
            return arrays
    except CheckpointError:
        raise
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no such checkpoint file") from err
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({err})") from err


def _decode_meta(path, arrays):
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: missing the 'meta' entry; not an npvae checkpoint")
    meta = arrays["meta"]
    if meta.shape != () or meta.dtype.kind != "U":
        raise CheckpointError(f"{path}: 'meta' must be a 0-d unicode array, got "
                              f"{meta.dtype} of shape {meta.shape}")
    try:
        meta = json.loads(meta.item())
    except ValueError as err:
        raise CheckpointError(f"{path}: 'meta' is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: format is {found!r}, not {FORMAT!r}")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: bad checkpoint version {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{path}: written by a newer npvae (checkpoint version {version}; "
                              f"this npvae reads version {VERSION} and older); upgrade npvae")
    for key, kind in (("model", dict), ("state", dict)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path}: 'meta' lacks a {key!r} object")
    if meta.get("optimizer") is not None and not isinstance(meta["optimizer"], dict):
        raise CheckpointError(f"{path}: 'meta' has a malformed 'optimizer' entry")
    return meta


def config_differences(found, expected):
    """``"field: a vs b"`` for each field where two model configs differ."""
    diffs = []
    for key in sorted(set(found) | set(expected)):
        a, b = found.get(key, "<absent>"), expected.get(key, "<absent>")
        if a != b:
            diffs.append(f"{key}: {a!r} in the checkpoint vs {b!r} expected")
    return diffs


def _reference_model(path, config):
    """A VAE built from ``config`` (checked by VAE itself), for its parameter shapes."""
    from .cvae import build_model

    try:
        reference = build_model(**config)
    except (TypeError, NpvaeError) as err:
        raise CheckpointError(f"{path}: the model config in the checkpoint is invalid "
                              f"({err})") from err
    if set(config) != set(reference.config):
        raise CheckpointError(f"{path}: the model config in the checkpoint has the fields "
                              f"{sorted(config)}, not {sorted(reference.config)}")
    return reference


def _check_params(path, arrays, reference):
    expected = {k: (v.shape, v.dtype) for k, v in reference.params.items()}
    found = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    if missing or extra:
        raise CheckpointError(f"{path}: parameters do not match the model config "
                              f"(missing {missing}, unexpected {extra})")
    for k, (shape, dtype) in expected.items():
        a = found[k]
        if a.shape != shape or a.dtype != dtype:
            raise CheckpointError(f"{path}: parameter {k!r} is {a.dtype}{list(a.shape)}; the model "
                                  f"config needs {dtype}{list(shape)}")
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: parameter {k!r} holds NaN or infinite values")
    return {k: found[k] for k in expected}


def _check_optimizer(path, meta, arrays, reference):
    optim = meta.get("optimizer")
    found = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    if optim is None:
        if found:
            raise CheckpointError(f"{path}: optimizer arrays without an 'optimizer' entry in meta")
        return None, {}
    name, t = optim.get("name"), optim.get("t")
    if name not in OPTIMIZER_SLOTS:
        raise CheckpointError(f"{path}: unknown optimizer {name!r}; known: "
                              f"{', '.join(OPTIMIZER_SLOTS)}")
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise CheckpointError(f"{path}: bad optimizer step count t={t!r}")
    if not isinstance(optim.get("hyperparameters"), dict):
        raise CheckpointError(f"{path}: optimizer entry lacks its hyperparameters")
    if meta["version"] == 1 and name == "adam":
        found = _adam_sums_from_version_1(path, found, optim["hyperparameters"])
    # Groups are either the flat buffer "theta" or the named parameters.
    shapes = {"theta": reference.theta.shape, **{k: v.shape for k, v in reference.params.items()}}
    slots = OPTIMIZER_SLOTS[name]
    groups = set()
    for key, a in found.items():
        slot, _, group = key.partition(".")
        if slot not in slots or group not in shapes:
            raise CheckpointError(f"{path}: unexpected optimizer array {key!r} for {name}")
        if a.shape != shapes[group] or a.dtype != reference.theta.dtype:
            raise CheckpointError(f"{path}: optimizer array {key!r} is {a.dtype}{list(a.shape)}; "
                                  f"expected {reference.theta.dtype}{list(shapes[group])}")
        groups.add(group)
    missing = [f"{s}.{g}" for g in sorted(groups) for s in slots if f"{s}.{g}" not in found]
    if missing or not groups:
        raise CheckpointError(f"{path}: optimizer state incomplete (missing {missing or slots})")
    return optim, found


def _adam_sums_from_version_1(path, found, hyper):
    """Version 1 kept Adam's m and v; since version 2 it keeps m / (1 - beta1) and v / (1 - beta2)."""
    betas = {"m": hyper.get("beta1"), "v": hyper.get("beta2")}
    if not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas.values()):
        raise CheckpointError(f"{path}: Adam's hyperparameters lack valid beta1 and beta2")
    converted = {}
    for key, a in found.items():
        slot, _, group = key.partition(".")
        if slot in betas:                       # m.theta -> m_sum.theta = m / (1 - beta1)
            converted[f"{slot}_sum.{group}"] = a / (1 - betas[slot])
        else:                                   # left for _check_optimizer to refuse
            converted[key] = a
    return converted


def load_checkpoint(path, expect_config=None):
    """Read and validate the checkpoint at ``path``; return a ``Checkpoint``.

    ``expect_config`` (a ``VAE.config``) makes any difference in the model
    config an error that names the differing fields. Raises ``CheckpointError``
    naming the file for a missing, truncated or corrupt file, an object
    (pickle) array, a wrong format name, a newer version, missing or extra
    entries, and shapes or dtypes that do not match the config.
    """
    path = Path(path)
    arrays = _read_arrays(path)
    meta = _decode_meta(path, arrays)
    config = meta["model"]
    if expect_config is not None:
        diffs = config_differences(config, dict(expect_config))
        if diffs:
            raise CheckpointError(f"{path}: the checkpoint's model differs from the one expected: "
                                  + "; ".join(diffs))
    reference = _reference_model(path, config)
    params = _check_params(path, arrays, reference)
    optim, optim_arrays = _check_optimizer(path, meta, arrays, reference)
    # (_check_optimizer has refused any optim/ entry it does not know.)
    known = {"meta"} | {f"param/{k}" for k in params} | {k for k in arrays if k.startswith("optim/")}
    unknown = sorted(set(arrays) - known)
    if unknown:
        raise CheckpointError(f"{path}: unexpected entries {unknown}")
    return Checkpoint(path=path, model_config=config, params=params, optimizer=optim,
                      optimizer_arrays=optim_arrays, state=meta["state"])


def restore_model(checkpoint, model):
    """Copy a checkpoint's parameters into ``model`` (same config), in place."""
    diffs = config_differences(checkpoint.model_config, model.config)
    if diffs:
        raise CheckpointError(f"{checkpoint.path}: the checkpoint's model differs: "
                              + "; ".join(diffs))
    for k, p in model.params.items():
        p[...] = model.xp.asarray(checkpoint.params[k])


def restore_optimizer(checkpoint, optimizer):
    """Load a checkpoint's optimizer state into ``optimizer`` (same kind and groups)."""
    name = type(optimizer).__name__.lower()
    if checkpoint.optimizer is None or checkpoint.optimizer["name"] != name:
        found = checkpoint.optimizer and checkpoint.optimizer["name"]
        raise CheckpointError(f"{checkpoint.path}: holds optimizer {found!r}, not {name!r}")
    state = checkpoint.optimizer_state()
    missing = [k for k in optimizer.state_dict() if k not in state]
    if missing:
        raise CheckpointError(f"{checkpoint.path}: optimizer state lacks {missing}")
    optimizer.load_state_dict(state)


def model_from_checkpoint(path, backend="numpy"):
    """Build the checkpoint's VAE with its trained weights: ``(model, checkpoint)``.

    ``path`` is a checkpoint file or a run folder holding ``checkpoint.npz``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    checkpoint = load_checkpoint(path)
    from .cvae import build_model

    try:
        model = build_model(**checkpoint.model_config, backend=backend)
    except ConfigError as err:
        raise CheckpointError(f"{path}: cannot build its model ({err})") from err
    restore_model(checkpoint, model)
    return model, checkpoint
