"""Checkpoints: one ``.npz`` file, written atomically, loaded without pickle.

Layout of the file (every entry a plain numeric or unicode array):

- ``param/<name>``  each parameter of the model (``param/encoder.0.W``, ...)
- ``optim/<key>``   each optimizer state array (``optim/m_sum.theta``, ``optim/v_sum.theta``)
- ``buffer/<name>`` each array a model keeps beside its parameters (a VQ-VAE's
                    ``buffer/quantizer.counts``, and under EMA updates its codebook,
                    moving counts and sums: ``npvae.vqvae.buffer_shapes``); none for a VAE
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
import math
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .backend import to_numpy
from .checks import MAX_DEFLATE_RATIO
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
    arrays.update({f"buffer/{k}": to_numpy(v) for k, v in getattr(model, "buffers", {}).items()})
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
    buffers: dict = field(default_factory=dict)   # name -> np.ndarray (a VQ-VAE's)

    def optimizer_state(self):
        """The dict ``optimizer.load_state_dict`` takes."""
        return {"t": self.optimizer["t"], **self.optimizer_arrays}


# Bounds on what a file may make npvae read, checked before anything is decompressed.
MAX_META_BYTES = 64 * 2**20   # the JSON metadata (4 bytes a character in the file)
MAX_ENTRIES = 10_000          # members of the archive
MAX_JSON_DEPTH = 64           # nesting of the metadata (npvae writes 4 levels)

_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
                NotImplementedError, struct.error)


def _open_file(path):
    """``path`` opened for reading, or a CheckpointError unless it is a regular file.

    ``os.stat`` comes first, so a FIFO or a device is never opened (it could
    hang); ``fstat`` on the open descriptor catches a path swapped between.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            kind = "a folder" if path.is_dir() else "not a regular file"
            raise CheckpointError(f"{path}: {kind}, not a checkpoint file")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no such checkpoint file") from err
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from err
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise CheckpointError(f"{path}: not a regular file, not a checkpoint file")
    return f


def _members(path, archive):
    """``{key: ZipInfo}`` of the archive's ``.npy`` members, names and sizes checked.

    Only ``meta``, ``param/*``, ``optim/*`` and ``buffer/*`` are npvae's; a member that
    claims to inflate beyond what deflate can do is a lie (a bomb).
    """
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise CheckpointError(f"{path}: {len(infos)} entries; not an npvae checkpoint")
    members, unexpected = {}, []
    for info in infos:
        key = info.filename.removesuffix(".npy")
        if (key != "meta" and not key.startswith(("param/", "optim/", "buffer/"))) \
                or key in members:
            unexpected.append(key)
            continue
        if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED,
                                                              zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"{path}: entry {key!r} is encrypted or compressed with a "
                                  "method npvae does not read")
        stored = info.compress_type == zipfile.ZIP_STORED
        if info.file_size > (1 if stored else MAX_DEFLATE_RATIO) * max(info.compress_size, 1):
            raise CheckpointError(f"{path}: entry {key!r} claims {info.file_size} bytes from "
                                  f"{info.compress_size} stored; corrupt, or a decompression bomb")
        members[key] = info
    if unexpected:
        raise CheckpointError(f"{path}: unexpected entries {sorted(unexpected)}")
    return members


def _header(path, archive, key, info):
    """``(shape, dtype)`` from the ``.npy`` header of member ``key``, reading nothing more.

    The member's declared size must be the header plus exactly the data its
    shape and dtype imply, so reading it later inflates no more than that.
    """
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"entry {key!r} has .npy format version {version}")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        header_size = f.tell()
    if dtype.hasobject:
        raise CheckpointError(f"{path}: entry {key!r} is an object array (pickled Python "
                              "objects); refused, since loading it could run code")
    implied = header_size + math.prod(shape) * dtype.itemsize
    if info.file_size != implied:
        raise CheckpointError(f"{path}: entry {key!r} holds {info.file_size} bytes but its "
                              f"header ({dtype}{list(shape)}) implies {implied}")
    return shape, dtype


def _read(archive, key, info):
    """The array of member ``key`` (its header already checked), read whole."""
    with archive.open(info) as f:
        array = np.lib.format.read_array(f, allow_pickle=False)
        if f.read(1):  # reading to the end also checks the member's CRC
            raise ValueError(f"trailing bytes in entry {key!r}")
    return array


def _depth(value):
    """How deeply decoded JSON nests lists and dicts (up to MAX_JSON_DEPTH + 1), iteratively."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            if depth > MAX_JSON_DEPTH:
                return depth
            deepest = max(deepest, depth)
            stack += [(v, depth + 1) for v in (value.values() if isinstance(value, dict)
                                               else value)]
    return deepest


def _decode_meta(path, meta):
    """The checked JSON held by ``meta``, a 0-d unicode array."""
    try:
        meta = json.loads(meta.item())
    except RecursionError as err:
        raise CheckpointError(f"{path}: 'meta' nests too deeply to read") from err
    except ValueError as err:
        raise CheckpointError(f"{path}: 'meta' is not valid JSON ({err})") from err
    if _depth(meta) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{path}: 'meta' nests more than {MAX_JSON_DEPTH} levels deep")
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


def _invalid_config(path, err):
    return CheckpointError(f"{path}: the model config in the checkpoint is invalid ({err})")


def _expected_params(path, config):
    """``({name: shape}, dtype)`` the stored config implies, with nothing allocated."""
    from . import vae, vqvae

    try:
        shapes = (vqvae if vqvae.is_vq(config) else vae).parameter_shapes(config)
        if config.get("dtype") not in ("float32", "float64"):
            raise ConfigError(f"dtype={config.get('dtype')!r} is not float32 or float64")
    except (KeyError, TypeError, NpvaeError) as err:
        raise _invalid_config(path, err) from err
    return shapes, np.dtype(config["dtype"])


def _reference_model(path, config):
    """A VAE (or CVAE) built from ``config``: the model's own checks of everything in it."""
    from .cvae import model_from_config

    try:
        reference = model_from_config(**config)
    except (TypeError, NpvaeError) as err:
        raise _invalid_config(path, err) from err
    if set(config) != set(reference.config):
        raise CheckpointError(f"{path}: the model config in the checkpoint has the fields "
                              f"{sorted(config)}, not {sorted(reference.config)}")
    return reference


def _check_param_headers(path, headers, shapes, dtype):
    found = {k[len("param/"):]: v for k, v in headers.items() if k.startswith("param/")}
    missing = [k for k in shapes if k not in found]
    extra = [k for k in found if k not in shapes]
    if missing or extra:
        raise CheckpointError(f"{path}: parameters do not match the model config "
                              f"(missing {missing}, unexpected {extra})")
    for k, shape in shapes.items():
        found_shape, found_dtype = found[k]
        if found_shape != shape or found_dtype != dtype:
            raise CheckpointError(f"{path}: parameter {k!r} is {found_dtype}{list(found_shape)}; "
                                  f"the model config needs {dtype}{list(shape)}")


def _check_buffers(path, config, headers, arrays=None):
    """The ``buffer/`` members against what a VQ-VAE's config implies (``vqvae.buffer_shapes``;
    a VAE has none): their headers, or with ``arrays`` read, their values (finite, and the
    counts, moving or not, never negative). Returns ``{name: array}`` once read."""
    from .vqvae import buffer_shapes, is_vq

    expected = buffer_shapes(config) if is_vq(config) else {}
    found = {k[len("buffer/"):]: v for k, v in headers.items() if k.startswith("buffer/")}
    if set(found) != set(expected):
        raise CheckpointError(f"{path}: buffers do not match the model config (missing "
                              f"{sorted(set(expected) - set(found))}, unexpected "
                              f"{sorted(set(found) - set(expected))})")
    for k, (shape, dtype) in expected.items():
        if found[k] != (shape, dtype):
            raise CheckpointError(f"{path}: buffer {k!r} is {found[k][1]}{list(found[k][0])}; "
                                  f"the model config needs {dtype}{list(shape)}")
    if arrays is None:
        return None
    buffers = {k: arrays[f"buffer/{k}"] for k in expected}
    for k, a in buffers.items():
        if not np.isfinite(a).all() or (k.endswith("count") or k.endswith("counts")) \
                and (a < 0).any():
            raise CheckpointError(f"{path}: buffer {k!r} holds NaN, infinite or negative values")
    return buffers


def _check_optimizer_headers(path, meta, headers, shapes, dtype):
    """The checked 'optimizer' entry of meta (or None), against the optim/ members' headers."""
    optim = meta.get("optimizer")
    found = {k[len("optim/"):]: v for k, v in headers.items() if k.startswith("optim/")}
    if optim is None:
        if found:
            raise CheckpointError(f"{path}: optimizer arrays without an 'optimizer' entry in meta")
        return None
    name, t = optim.get("name"), optim.get("t")
    if name not in OPTIMIZER_SLOTS:
        raise CheckpointError(f"{path}: unknown optimizer {name!r}; known: "
                              f"{', '.join(OPTIMIZER_SLOTS)}")
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise CheckpointError(f"{path}: bad optimizer step count t={t!r}")
    if not isinstance(optim.get("hyperparameters"), dict):
        raise CheckpointError(f"{path}: optimizer entry lacks its hyperparameters")
    slots = ("m", "v") if meta["version"] == 1 and name == "adam" else OPTIMIZER_SLOTS[name]
    # Groups are either the flat buffer "theta" or the named parameters.
    groups_shapes = {"theta": (sum(math.prod(s) for s in shapes.values()),), **shapes}
    groups = set()
    for key, (shape, found_dtype) in found.items():
        slot, _, group = key.partition(".")
        if slot not in slots or group not in groups_shapes:
            raise CheckpointError(f"{path}: unexpected optimizer array {key!r} for {name}")
        if shape != groups_shapes[group] or found_dtype != dtype:
            raise CheckpointError(f"{path}: optimizer array {key!r} is {found_dtype}{list(shape)}; "
                                  f"expected {dtype}{list(groups_shapes[group])}")
        groups.add(group)
    missing = [f"{s}.{g}" for g in sorted(groups) for s in slots if f"{s}.{g}" not in found]
    if missing or not groups:
        raise CheckpointError(f"{path}: optimizer state incomplete (missing {missing or slots})")
    return optim


def _check_optimizer_values(path, meta, optim, arrays):
    """The optimizer arrays (version-1 Adam converted), refused if NaN, infinite or, for
    Adam's second moments, negative: a sum of squares never is."""
    found = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    if optim is None:
        return {}
    if meta["version"] == 1 and optim["name"] == "adam":
        found = _adam_sums_from_version_1(path, found, optim["hyperparameters"])
    for key, a in found.items():
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: optimizer array {key!r} holds NaN or infinite values")
        if key.startswith("v_sum.") and (a < 0).any():
            raise CheckpointError(f"{path}: optimizer array {key!r} holds negative values (Adam's "
                                  "second moments are sums of squares)")
    return found


def _adam_sums_from_version_1(path, found, hyper):
    """Version 1 kept Adam's m and v; since version 2 it keeps m / (1 - beta1) and v / (1 - beta2)."""
    betas = {"m": hyper.get("beta1"), "v": hyper.get("beta2")}
    if not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas.values()):
        raise CheckpointError(f"{path}: Adam's hyperparameters lack valid beta1 and beta2")
    converted = {}
    for key, a in found.items():
        slot, _, group = key.partition(".")
        converted[f"{slot}_sum.{group}"] = a / (1 - betas[slot])  # m.theta -> m_sum.theta
    return converted


def _load(path, archive):
    """load_checkpoint's work on an open archive: every check before the reads it guards."""
    members = _members(path, archive)
    if "meta" not in members:
        raise CheckpointError(f"{path}: missing the 'meta' entry; not an npvae checkpoint")
    shape, dtype = _header(path, archive, "meta", members["meta"])
    if shape != () or dtype.kind != "U":
        raise CheckpointError(f"{path}: 'meta' must be a 0-d unicode array, got "
                              f"{dtype} of shape {shape}")
    if members["meta"].file_size > MAX_META_BYTES:
        raise CheckpointError(f"{path}: 'meta' is {members['meta'].file_size} bytes, more than "
                              f"{MAX_META_BYTES}")
    meta = _decode_meta(path, _read(archive, "meta", members["meta"]))
    config = meta["model"]
    if isinstance(config, dict) and "architecture" not in config and "n_codes" not in config:
        config = {**config, "architecture": "mlp"}  # written before the conv architecture
    shapes, dtype = _expected_params(path, config)
    headers = {key: _header(path, archive, key, info) for key, info in members.items()
               if key != "meta"}
    _check_param_headers(path, headers, shapes, dtype)
    _check_buffers(path, config, headers)
    optim = _check_optimizer_headers(path, meta, headers, shapes, dtype)
    # Every member's size is now what the config implies: reading them is bounded by it.
    arrays = {key: _read(archive, key, members[key]) for key in headers}
    params = {k: arrays[f"param/{k}"] for k in shapes}
    for k, a in params.items():
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: parameter {k!r} holds NaN or infinite values")
    optim_arrays = _check_optimizer_values(path, meta, optim, arrays)
    buffers = _check_buffers(path, config, headers, arrays)
    _reference_model(path, config)
    return Checkpoint(path=path, model_config=config, params=params, optimizer=optim,
                      optimizer_arrays=optim_arrays, state=meta["state"], buffers=buffers)


def load_checkpoint(path):
    """Read and validate the checkpoint at ``path``; return a ``Checkpoint``.

    (Whether it holds the model a caller expects is ``restore_model``'s
    check, made where the weights are copied.) Raises ``CheckpointError``
    naming the file for anything but a regular file, a missing, truncated or
    corrupt file, an object (pickle) array, a wrong format name, a newer
    version, missing or extra entries, shapes or dtypes that do not match the
    config, a model beyond ``checks.max_parameters()``, and NaN or impossible
    values.

    Nothing large comes from something small: the zip directory and each
    member's ``.npy`` header are read first, and every member must declare
    exactly the size the stored config implies, before any data is inflated.
    """
    return read_archive(path, _load)


def read_archive(path, load, kind="checkpoint"):
    """``load(path, archive)`` on the ``.npz`` archive at ``path``, opened safely.

    The file must be a regular file (``_open_file``) and a zip archive (not a
    lone ``.npy`` array); any read error while ``load`` reads it is a one-line
    ``CheckpointError`` naming ``path`` and what it should have been, an npvae
    ``kind`` (``checkpoint``; ``prior file`` for ``npvae.prior``).
    """
    path = Path(path)
    with _open_file(path) as f:
        start = f.read(6)
        if start == b"\x93NUMPY":
            raise CheckpointError(f"{path}: not an npvae {kind} (a single .npy array, "
                                  "not an .npz archive)")
        f.seek(0)
        try:
            archive = zipfile.ZipFile(f)
        except _READ_ERRORS as err:
            if start.startswith(b"PK"):  # a zip archive, cut short or damaged
                raise CheckpointError(f"{path}: truncated or corrupt {kind} ({err})") from err
            raise CheckpointError(f"{path}: not an npvae {kind} (not a zip archive)") from err
        with archive:
            try:
                return load(path, archive)
            except CheckpointError:
                raise
            except _READ_ERRORS as err:
                raise CheckpointError(f"{path}: truncated or corrupt {kind} ({err})") from err


def restore_model(checkpoint, model):
    """Copy a checkpoint's parameters into ``model``, in place.

    The one place where "the model config matches" is checked: a ``model``
    whose config differs from the checkpoint's is a ``CheckpointError`` naming
    every differing field.
    """
    diffs = config_differences(checkpoint.model_config, model.config)
    if diffs:
        raise CheckpointError(f"{checkpoint.path}: the checkpoint's model differs from the one "
                              "expected: " + "; ".join(diffs))
    for k, p in model.params.items():
        p[...] = model.xp.asarray(checkpoint.params[k])
    for k, b in getattr(model, "buffers", {}).items():   # a VQ-VAE's (``_check_buffers``)
        b[...] = model.xp.asarray(checkpoint.buffers[k])


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

    ``path`` is a checkpoint file or a run folder holding ``checkpoint.npz``
    (``npvae.runs.open_run``, which also gives the run folder).
    """
    from .runs import open_run

    model, checkpoint, _ = open_run(path, backend)
    return model, checkpoint
