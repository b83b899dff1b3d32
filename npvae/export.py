"""A run to safetensors and back: the bridge to PyTorch.

``export_run(run, path)`` writes a run's weights as a ``.safetensors`` file
(Hugging Face's format: an 8-byte little-endian header length, a JSON header
naming each tensor's dtype, shape and byte range, then the raw little-endian
data; no pickle), with the model's config in the header's metadata, under
the names and layouts PyTorch's ``load_state_dict`` expects. Writing needs
the ``safetensors`` package (``pip install "npvae[export]"``); npvae itself
keeps NumPy as its engine.

``import_run(path, run_dir)`` turns such a file, or the ``state_dict`` of
PyTorch's VAE example saved with ``safetensors.torch.save_file``, back into a
run folder that ``npvae evaluate``, ``sample``, ``plot`` and ``explore`` read.
It needs no package: npvae parses the file itself, header first.

Layouts (npvae computes ``x @ W + b`` with W (n_in, n_out); ``torch.nn.Linear``
computes ``x @ weight.T + bias`` with weight (n_out, n_in), so every dense W is
transposed; convolution weights are stored in PyTorch's layout already):

- ``pytorch-example``, for an mlp with one hidden layer each side and no
  labels (the ``pytorch-example`` preset): the names of PyTorch's
  ``examples/vae/main.py``::

      fc1.weight (H, D)   fc1.bias (H,)      encoder.0
      fc21.weight (Z, H)  fc21.bias (Z,)     encoder.2, columns :Z  (mu)
      fc22.weight (Z, H)  fc22.bias (Z,)     encoder.2, columns Z:  (logvar)
      fc3.weight (H, Z)   fc3.bias (H,)      decoder.0
      fc4.weight (D, H)   fc4.bias (D,)      decoder.2

- ``torch.nn``, every other model: npvae's ``encoder.{i}.W`` and ``.b`` are
  ``encoder.{i}.weight`` and ``.bias``, the ``state_dict`` names of an
  ``nn.Sequential`` holding the same layers at the same places (activations
  and reshapes keep their index, as ``nn.ReLU`` and ``nn.Flatten`` do); the
  encoder's last layer gives [mu | logvar]. A model with several stochastic
  layers (``npvae.hvae``) has an ``nn.Sequential`` per network, named as
  npvae's: ``q_h1.{i}.weight`` ... ``q_hL``, ``p_x``, ``p_h1`` ...
  ``p_h{L-1}``. ``benchmarks/torch_models.py`` holds these modules
  (``torch_module`` names each config's class).

Reading a file trusts nothing in it: the header length, then the JSON header
(each tensor's dtype, shape and byte range: contiguous, inside the file, and
exactly the size its shape implies), then the metadata's config (checked as
a checkpoint's is, within ``checks.max_parameters()``) and the names, shapes
and dtype that config implies, all before any tensor is read. Every failure
is a one-line ``CheckpointError`` naming the file.
"""

import json
import math
import os
import struct
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import atomic_write, atomic_write_text
from .checkpoint import (CHECKPOINT_NAME, _check_param_headers, _open_file, model_from_checkpoint,
                         save_checkpoint)
from .checks import is_int
from .cvae import model_from_config
from .errors import CheckpointError, ConfigError, NpvaeError
from .hvae import is_hierarchical
from .vae import parameter_shapes

FORMAT = "npvae-export"
VERSION = 1

# Bounds on what a file may make npvae read, checked before anything else is read.
MAX_HEADER_BYTES = 2**20    # npvae writes a few kilobytes
MAX_TENSORS = 1_000         # npvae's models have a few dozen
MAX_RANK = 8
MAX_JSON_DEPTH = 16
# safetensors' dtypes and their sizes in bytes (its spec); npvae's models are F32 or F64.
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
DTYPES = {"float32": "F32", "float64": "F64"}


# ---------------------------------------------------------------- names and layouts


def layout(config):
    """``"pytorch-example"`` for an unlabelled mlp with one stochastic layer and one hidden
    layer each side, else ``"torch.nn"`` (see the module docstring)."""
    if (config.get("architecture", "mlp") == "mlp" and config.get("n_classes") is None
            and not is_hierarchical(config)
            and len(config["hidden"]) == 1 and len(config["decoder_hidden"]) == 1):
        return "pytorch-example"
    return "torch.nn"


def torch_module(config):
    """The class in ``benchmarks/torch_models.py`` whose ``state_dict`` a ``VAE.config``'s file
    is: ``"ExampleVAE"`` (the ``pytorch-example`` layout; PyTorch's example class loads it
    too), ``"HVAE"`` (several stochastic layers), ``"ConvVAE"`` or ``"MLPVAE"``."""
    if layout(config) == "pytorch-example":
        return "ExampleVAE"
    if is_hierarchical(config):
        return "HVAE"
    return "ConvVAE" if config.get("architecture", "mlp") == "conv" else "MLPVAE"


def load_into(config):
    """Where the file of a ``VAE.config`` loads strictly, in words (what ``npvae export`` says)."""
    where = f"benchmarks/torch_models.py's {torch_module(config)}"
    return (f"PyTorch's examples/vae/main.py VAE, or {where}"
            if layout(config) == "pytorch-example" else where)


def tensor_map(config):
    """``[(torch_name, npvae_name, columns)]`` for a ``VAE.config``, in the file's order.

    ``columns`` is None (the whole array) or a slice of npvae's last axis (fc21
    and fc22 split the encoder's output layer into mu and logvar).
    """
    if layout(config) == "pytorch-example":
        Z = config["latent"]
        pieces = [("fc1", "encoder.0", None), ("fc21", "encoder.2", slice(0, Z)),
                  ("fc22", "encoder.2", slice(Z, 2 * Z)), ("fc3", "decoder.0", None),
                  ("fc4", "decoder.2", None)]
        return [(f"{torch}.{t}", f"{ours}.{k}", columns) for torch, ours, columns in pieces
                for t, k in (("weight", "W"), ("bias", "b"))]
    torch_key = {"W": "weight", "b": "bias"}
    return [(f"{name[:-1]}{torch_key[name[-1]]}", name, None) for name in parameter_shapes(config)]


def _torch_shape(shape, columns):
    """The PyTorch shape of npvae's ``shape`` (its last axis cut to ``columns``): a dense W
    (n_in, n_out) becomes (n_out, n_in); biases and convolution weights stay."""
    if columns is not None:
        shape = (*shape[:-1], len(range(shape[-1])[columns]))
    return tuple(shape[::-1]) if len(shape) == 2 else tuple(shape)


def torch_shapes(config):
    """``{torch_name: shape}`` the file of a ``VAE.config`` holds; nothing allocated."""
    shapes = parameter_shapes(config)
    return {name: _torch_shape(shapes[ours], columns) for name, ours, columns in tensor_map(config)}


def to_torch(params, config):
    """npvae's parameters (name -> array) as PyTorch's tensors (name -> C-contiguous array)."""
    out = {}
    for name, ours, columns in tensor_map(config):
        a = np.asarray(params[ours])
        a = a if columns is None else a[..., columns]
        out[name] = np.ascontiguousarray(a.T if a.ndim == 2 else a)
    return out


def from_torch(tensors, config):
    """PyTorch's tensors (name -> array) as npvae's parameters: the inverse of ``to_torch``.

    Transposes and a concatenation only, so a round trip is exact, bit for bit.
    """
    pieces = {}
    for name, ours, _ in tensor_map(config):
        a = np.asarray(tensors[name])
        pieces.setdefault(ours, []).append(a.T if a.ndim == 2 else a)
    return {ours: np.ascontiguousarray(np.concatenate(p, axis=-1) if len(p) > 1 else p[0])
            for ours, p in pieces.items()}


# ---------------------------------------------------------------- export


def export_run(run, path, overwrite=False):
    """Write run ``run``'s weights (a run folder or checkpoint) to ``path`` as safetensors.

    Names and layouts: the module docstring. The metadata (strings, as the
    format requires) holds ``format: pt`` (what Hugging Face's loaders look
    for), ``npvae.format``, ``npvae.version``, ``npvae.layout``, ``npvae.model``
    (the model's config, JSON) and, for a trained run, ``npvae.train`` (its
    ``TrainConfig``, with no data folder and the numpy backend). An existing ``path``
    is an error unless ``overwrite``; the write is atomic. Returns the model's config
    (``layout(config)`` and ``load_into(config)`` say where the file loads).
    """
    try:
        from safetensors.numpy import save
    except ImportError as err:
        raise ConfigError("exporting needs the safetensors package: "
                          "python -m pip install \"npvae[export]\"") from err
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; pass --overwrite to replace it")
    model, checkpoint = model_from_checkpoint(run)
    config = model.config
    if "n_codes" in config:   # (npvae.vqvae)
        raise ConfigError(f"{run}: a VQ-VAE run; npvae export writes the layouts of the Gaussian "
                          "VAEs only")
    metadata = {"format": "pt", "npvae.format": FORMAT, "npvae.version": str(VERSION),
                "npvae.npvae_version": __version__, "npvae.layout": layout(config),
                "npvae.model": json.dumps(config)}
    train = checkpoint.state.get("train_config")
    if isinstance(train, dict):
        # The file is machine-neutral: no data folder of this machine, host arrays.
        metadata["npvae.train"] = json.dumps({**train, "data_dir": None, "backend": "numpy"})
    data = save(to_torch(model.params, config), metadata=metadata)
    atomic_write(path, lambda f: f.write(data))
    return config


# ---------------------------------------------------------------- reading a file


def _unique_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"the key {next(k for k in keys if keys.count(k) > 1)!r} appears twice")
    return dict(pairs)


def _json(path, text, what):
    """``text`` decoded as JSON, duplicate keys and deep nesting refused."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError as err:
        raise CheckpointError(f"{path}: {what} nests too deeply to read") from err
    except ValueError as err:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({err})") from err
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, dict)):
            if depth > MAX_JSON_DEPTH:
                raise CheckpointError(f"{path}: {what} nests more than {MAX_JSON_DEPTH} levels")
            stack += [(u, depth + 1) for u in (v.values() if isinstance(v, dict) else v)]
    return value


def read_header(path, f, size):
    """``(tensors, metadata, start)`` of the open safetensors file ``f`` of ``size`` bytes.

    ``tensors``: name -> (dtype, shape, begin, end), byte offsets from
    ``start``, the first data byte. Checked: the length against
    MAX_HEADER_BYTES and the file; the JSON; each entry's dtype, shape
    (non-negative integers, at most MAX_RANK axes) and offsets; each range
    exactly its shape's size; the ranges contiguous from 0 to the file's end.
    """
    if size < 8:
        raise CheckpointError(f"{path}: {size} bytes, truncated (a safetensors file starts "
                              "with an 8-byte header length)")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: header length {n} bytes, more than {MAX_HEADER_BYTES}; "
                              "not an npvae export")
    if 8 + n > size:
        raise CheckpointError(f"{path}: header length {n} bytes but only {size - 8} follow; "
                              "truncated, or the length lies")
    raw = f.read(n)
    if len(raw) != n:
        raise CheckpointError(f"{path}: truncated while reading the header")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path}: the header is not UTF-8 ({err})") from err
    header = _json(path, text, "the header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the header is not a JSON object; not a safetensors file")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise CheckpointError(f"{path}: {len(header)} tensors, more than {MAX_TENSORS}")
    tensors = {name: _entry(path, name, info) for name, info in header.items()}
    data_size, end = size - 8 - n, 0
    for name, (_, _, begin, stop) in sorted(tensors.items(), key=lambda t: t[1][2:]):
        if begin != end:
            what = "overlaps the tensor before it" if begin < end else "leaves a gap before it"
            raise CheckpointError(f"{path}: tensor {name!r} starts at byte {begin}, which {what} "
                                  f"(ends at {end})")
        end = stop
    if end != data_size:
        raise CheckpointError(f"{path}: the tensors hold {end} bytes but the file has {data_size} "
                              "after its header; truncated, or the header lies")
    return tensors, metadata, 8 + n


def _entry(path, name, info):
    """One header entry as ``(dtype, shape, begin, end)``, checked; see ``read_header``."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"{path}: tensor {name!r} needs exactly dtype, shape and "
                              "data_offsets in the header")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise CheckpointError(f"{path}: tensor {name!r} has an unknown dtype {dtype!r}")
    if (not isinstance(shape, list) or len(shape) > MAX_RANK
            or not all(is_int(s) and s >= 0 for s in shape)):
        raise CheckpointError(f"{path}: tensor {name!r} has a bad shape {shape!r} (at most "
                              f"{MAX_RANK} non-negative integers)")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(is_int(o) and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
        raise CheckpointError(f"{path}: tensor {name!r} has bad data_offsets {offsets!r}")
    implied = math.prod(shape) * DTYPE_SIZES[dtype]  # Python ints: a huge shape cannot overflow
    if offsets[1] - offsets[0] != implied:
        raise CheckpointError(f"{path}: tensor {name!r} is {dtype}{shape}, {implied} bytes, but "
                              f"its data_offsets hold {offsets[1] - offsets[0]}")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _example_config(tensors):
    """The model config of PyTorch's example, read off its tensors' shapes (no metadata)."""
    fc1, fc21, fc3 = (tensors[f"{n}.weight"][1] for n in ("fc1", "fc21", "fc3"))
    dtype = {v: k for k, v in DTYPES.items()}.get(tensors["fc1.weight"][0], "float32")
    if len(fc1) != 2 or len(fc21) != 2 or len(fc3) != 2:
        return None
    return dict(x_dim=fc1[1], hidden=[fc1[0]], latent=fc21[0], decoder_hidden=[fc3[0]],
                activation="relu", likelihood="bernoulli", sigma=1.0, beta=1.0, init="pytorch",
                dtype=dtype, architecture="mlp")


def _model_config(path, tensors, metadata):
    """The checked model config the file claims; and which layout it claims."""
    if "npvae.model" not in metadata:
        names = {f"{n}.{t}" for n in ("fc1", "fc21", "fc22", "fc3", "fc4")
                 for t in ("weight", "bias")}
        config = _example_config(tensors) if set(tensors) == names else None
        if config is None:
            raise CheckpointError(f"{path}: no npvae model config in its metadata (npvae.model), "
                                  "and not the tensors of PyTorch's VAE example (fc1 ... fc4)")
        claimed = "pytorch-example"
    else:
        if metadata.get("npvae.format") != FORMAT:
            raise CheckpointError(f"{path}: npvae.format is {metadata.get('npvae.format')!r}, "
                                  f"not {FORMAT!r}")
        version = metadata.get("npvae.version", "")
        if not version.isdigit() or not 1 <= int(version) <= VERSION:
            raise CheckpointError(f"{path}: npvae.version {version!r} is not one this npvae reads "
                                  f"(1 to {VERSION})")
        config = _json(path, metadata["npvae.model"], "npvae.model")
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: npvae.model is not a JSON object")
        claimed = metadata.get("npvae.layout")
    try:
        if config.get("dtype") not in DTYPES:
            raise ConfigError(f"dtype={config.get('dtype')!r} is not float32 or float64")
        parameter_shapes(config)   # sizes, and the parameter limit, before anything is built
        reference = model_from_config(**config).config
    except (KeyError, TypeError, AttributeError, NpvaeError) as err:
        raise CheckpointError(f"{path}: the model config in its metadata is invalid "
                              f"({err})") from err
    if set(config) != set(reference):
        raise CheckpointError(f"{path}: npvae.model has the fields {sorted(config)}, not "
                              f"{sorted(reference)}")
    if claimed != layout(reference):
        raise CheckpointError(f"{path}: npvae.layout is {claimed!r} but its model is stored "
                              f"as {layout(reference)!r}")
    return reference  # (normalised: e.g. decoder_hidden null is hidden reversed)


def _train_config(path, metadata, config):
    """The checked ``npvae.train`` entry (a ``TrainConfig`` as a dict), or None."""
    from .config import TrainConfig

    if "npvae.train" not in metadata:
        return None
    train = _json(path, metadata["npvae.train"], "npvae.train")
    try:
        if not isinstance(train, dict):
            raise ConfigError("not a JSON object")
        checked = TrainConfig.from_dict(train).validate()
    except (TypeError, NpvaeError) as err:
        raise CheckpointError(f"{path}: npvae.train is not a valid training config "
                              f"({err})") from err
    if checked.conditional != (config.get("n_classes") is not None):
        raise CheckpointError(f"{path}: npvae.train says conditional={checked.conditional}, "
                              "which its model is not")
    return asdict(checked)


def read_export(path):
    """``(config, params, train)`` of a safetensors file: the model config, npvae's
    parameters (name -> array, the config's dtype) and the training config (or None).

    Everything is checked before the data is read (module docstring); then
    the tensors are read from the same open file, each exactly its checked
    size, and refused if NaN or infinite.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    with _open_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        tensors, metadata, start = read_header(path, f, size)
        config = _model_config(path, tensors, metadata)
        train = _train_config(path, metadata, config)
        dtype = DTYPES[config["dtype"]]
        _check_param_headers(path, {f"param/{name}": (shape, dtype_) for name, (dtype_, shape, *_)
                                    in tensors.items()}, torch_shapes(config), dtype)
        arrays = {}
        for name, (_, shape, begin, end) in tensors.items():
            f.seek(start + begin)
            data = f.read(end - begin)
            if len(data) != end - begin:
                raise CheckpointError(f"{path}: truncated while reading tensor {name!r}")
            a = np.frombuffer(data, dtype=np.dtype(config["dtype"]).newbyteorder("<"))
            arrays[name] = a.reshape(shape).astype(config["dtype"])
            if not np.isfinite(arrays[name]).all():
                raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values")
    return config, from_torch(arrays, config), train


# ---------------------------------------------------------------- import


def import_run(path, run_dir=None, overwrite=False):
    """Make a run folder from the safetensors file ``path``; return the folder.

    The file is read and checked whole first (``read_export``); then the
    folder is claimed as ``npvae train`` claims one (``runs.claim_run_dir``: a
    new or empty folder, locked; default ``runs/<file name>``, or ``-2``,
    ``-3``, ... when taken), so a refused file creates nothing and touches no
    folder; an existing run folder is replaced only with ``overwrite`` (its
    npvae files only, as ``npvae train --overwrite`` does). The folder gets ``checkpoint.npz`` (the
    weights, no optimizer) and ``config.json``; ``npvae evaluate``, ``sample``,
    ``plot`` and ``explore`` read it. A file with ``npvae.train`` keeps its
    test data's preprocessing (binarization); otherwise pixels in [0, 1].
    """
    from .runs import LOCK_NAME, claim_run_dir

    path = Path(path)
    config, params, train = read_export(path)
    taken = run_dir is not None and Path(run_dir).is_dir() and any(
        p.name != LOCK_NAME for p in Path(run_dir).iterdir())
    if taken and not overwrite:  # (claim_run_dir would also refuse, suggesting train's --resume)
        raise ConfigError(f"run_dir={str(run_dir)!r} already exists; pass --overwrite to replace "
                          "the run in it, or choose another --run-dir")
    model = model_from_config(**config)
    for name, p in model.params.items():
        p[...] = params[name]
    state = {"imported_from": str(path)}
    if train is not None:
        state["train_config"] = train
    run_dir, _, lock = claim_run_dir(run_dir, path.name.split(".")[0] or "imported", overwrite)
    with lock:
        save_checkpoint(Path(run_dir) / CHECKPOINT_NAME, model, None, state)
        info = {"npvae_version": __version__, "train": train, "model": model.config,
                "data": None, "imported_from": str(path)}
        atomic_write_text(Path(run_dir) / "config.json", json.dumps(info, indent=2) + "\n")
    return Path(run_dir)
