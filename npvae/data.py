"""Data: an IDX file reader, the MNIST loader, and pixel preprocessing.

MNIST ships inside the package (``npvae/datasets/mnist``), so training works
offline. Any folder holding the four standard IDX files, gzipped or raw, loads
the same way, so Fashion-MNIST and other drop-ins work unchanged.

Shapes: images are ``(N, H, W)`` uint8 as stored, and ``(N, D)`` floats in
[0, 1] with ``D = H * W`` once preprocessed; labels are ``(N,)`` uint8.
Randomness comes only from a ``numpy.random.Generator`` passed in.
"""

import hashlib
import math
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backend import xp_of
from .checks import MAX_DEFLATE_RATIO, is_int
from .errors import ConfigError, DataError
from .randomness import stream

MNIST_DIR = Path(__file__).resolve().parent / "datasets" / "mnist"

MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# SHA-256 of the decompressed IDX files (table in datasets/mnist/README.md).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

CHECKSUMS_FILE = "checksums.sha256"

# IDX type code -> big-endian element type.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

GZIP_MAGIC = b"\x1f\x8b"

# How training pixels are binarized: not at all (in [0, 1]), afresh for every training batch
# (``binarize_dynamic``; held-out sets once, with a fixed seed), or at 0.5 (``binarize_threshold``).
BINARIZE = ("none", "dynamic", "threshold")


# ---------------------------------------------------------------- IDX files

INFLATE_CHUNK = 1 << 20       # bytes of output per step of the streaming inflate


def _read_file(path):
    """Return ``(on_disk, idx)``: the file's bytes and its IDX bytes (gunzipped if gzip).

    Only a regular file is opened (a FIFO would hang). Gzip data is inflated
    in a stream that stops as soon as it passes the size its IDX header
    declares, so a small file cannot make npvae hold a large one.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise DataError(f"{path}: not a regular file")
        on_disk = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from e
    if not on_disk.startswith(GZIP_MAGIC):
        return on_disk, on_disk
    try:
        return on_disk, _inflate(on_disk, path)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data ({e})") from e


def _inflate(data, path):
    """The bytes of gzip ``data`` (one or more members), inflated no further than the IDX
    header at their start declares (plus one chunk, to see that more follows)."""
    out, limit = bytearray(), None
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
        while not inflater.eof:
            chunk = inflater.decompress(data, INFLATE_CHUNK)
            data = inflater.unconsumed_tail
            out += chunk
            if limit is None and len(out) >= 4 and len(out) >= 4 + 4 * out[3]:
                _, shape, header, expected = _idx_header(out, path)
                if expected > MAX_DEFLATE_RATIO * len(data) + len(out) + INFLATE_CHUNK:
                    raise DataError(f"{path}: dims {shape} need {expected} data bytes, more than "
                                    f"its compressed data can hold")
                limit = header + expected
            if limit is not None and len(out) > limit:
                raise DataError(f"{path}: trailing bytes after the data of dims {shape} "
                                f"(inflating stopped at {len(out)} bytes; the dims imply {limit})")
            if not chunk and not data:
                raise EOFError("compressed data ended before the end of the stream")
        data = inflater.unused_data
    return out


def _idx_header(data, path):
    """``(dtype, shape, header_size, data_bytes)`` of IDX bytes, checked; ``path`` names the
    file in errors. Sizes are Python integers, so no dims can overflow them."""
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path}: bad IDX magic number {bytes(data[:4]).hex()} (must start with two zero bytes)"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(
            f"{path}: unknown IDX type code 0x{code:02X} "
            f"(known: {', '.join(f'0x{c:02X}' for c in IDX_DTYPES)})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    return dtype, shape, header, math.prod(shape) * dtype.itemsize


def _parse_idx(data, path):
    """Parse IDX bytes into a native-endian array; ``path`` only names the file in errors."""
    dtype, shape, header, expected = _idx_header(data, path)
    actual = len(data) - header
    if actual < expected:
        raise DataError(
            f"{path}: truncated: dims {shape} need {expected} data bytes, found {actual}"
        )
    if actual > expected:
        raise DataError(
            f"{path}: {actual - expected} trailing bytes after the data of dims {shape}"
        )
    raw = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return raw.astype(dtype.newbyteorder("="))


def read_idx(path):
    """Read an IDX file, gzipped (detected by its magic bytes) or raw.

    Returns a new, writable, native-endian array of the file's dims and type
    (uint8, int8, int16, int32, float32 or float64). Raises ``DataError``
    naming the file for a bad magic number, unknown type code, truncated
    data, trailing bytes or corrupt gzip data.
    """
    return _parse_idx(_read_file(path)[1], path)


# ---------------------------------------------------------------- MNIST


@dataclass(frozen=True)
class Dataset:
    """Train and test splits: ``x_*`` uint8 ``(N, H, W)``, ``y_*`` uint8 ``(N,)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _find(folder, name):
    """Path of ``name.gz`` or raw ``name`` in ``folder`` (gzip preferred)."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: missing {name}.gz or {name}")


def _read_checksums(path):
    """Parse a ``sha256sum``-format file into ``{filename: hex digest}``."""
    sums = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read it as a text file of checksums "
                        f"({getattr(e, 'strerror', None) or e})") from e
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{path}: line {number} is not '<sha256>  <filename>': {line!r}")
        sums[parts[1].strip().lstrip("*")] = parts[0].lower()
    return sums


def _expected_checksums(folder):
    """Known SHA-256 digests for files in ``folder``: shipped table or ``checksums.sha256``."""
    if folder.resolve() == MNIST_DIR:
        return MNIST_SHA256
    if (folder / CHECKSUMS_FILE).is_file():
        return _read_checksums(folder / CHECKSUMS_FILE)
    return {}


def _verify(path, name, on_disk, idx, sums):
    """Check the digest listed for the file as stored, or for ``name`` (its IDX bytes)."""
    for key, data in ((path.name, on_disk), (name, idx)):
        if key in sums:
            actual = hashlib.sha256(data).hexdigest()
            if actual != sums[key]:
                raise DataError(
                    f"{path}: SHA-256 mismatch for {key}: expected {sums[key]}, got {actual}"
                )


def load_mnist(data_dir=None, verify=True):
    """Load MNIST, or any folder laid out like it, as a ``Dataset``.

    ``data_dir`` holds the four standard files, each as ``NAME.gz`` or raw
    ``NAME``; ``None`` means the shipped MNIST. With ``verify``, SHA-256
    digests are checked where known: always for the shipped folder, and for
    another folder when it holds ``checksums.sha256`` in ``sha256sum``
    format (a line for ``NAME`` checks the decompressed IDX bytes, a line
    for ``NAME.gz`` the file as stored).

    Raises ``DataError`` naming the file for a missing or unreadable file, a
    checksum mismatch, images that are not 3-D uint8, labels that are not
    1-D uint8, image and label counts that differ, or train and test images
    of different shapes.
    """
    folder = MNIST_DIR if data_dir is None else Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: data directory not found")
    sums = _expected_checksums(folder) if verify else {}
    arrays, paths = {}, {}
    for key, name in MNIST_FILES.items():
        path = _find(folder, name)
        on_disk, idx = _read_file(path)
        _verify(path, name, on_disk, idx, sums)
        arrays[key], paths[key] = _parse_idx(idx, path), path

    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        x_path, y_path = paths[f"x_{split}"], paths[f"y_{split}"]
        if x.ndim != 3 or x.dtype != np.uint8:
            raise DataError(f"{x_path}: images must be 3-D uint8, got {x.ndim}-D {x.dtype}")
        if 0 in x.shape:
            raise DataError(f"{x_path}: no images to learn from (dims {x.shape})")
        if y.ndim != 1 or y.dtype != np.uint8:
            raise DataError(f"{y_path}: labels must be 1-D uint8, got {y.ndim}-D {y.dtype}")
        if len(x) != len(y):
            raise DataError(
                f"{y_path}: {len(y)} labels but {x_path.name} has {len(x)} images"
            )
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(
            f"{paths['x_test']}: image shape {arrays['x_test'].shape[1:]} differs from "
            f"{paths['x_train'].name}'s {arrays['x_train'].shape[1:]}"
        )
    return Dataset(**arrays)


# ---------------------------------------------------------------- preprocessing


def _check_generator(rng):
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def to_unit_interval(images, dtype=np.float32):
    """Scale uint8 images ``(N, H, W)`` to ``(N, H*W)`` floats ``pixels / 255`` in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim < 2:
        raise DataError(
            f"images must be uint8 of shape (N, H, W), got {images.dtype} {images.shape}"
        )
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise ConfigError(f"dtype must be a floating type, got {np.dtype(dtype)}")
    return images.reshape(len(images), -1).astype(dtype) / np.asarray(255, dtype=dtype)


def binarize_threshold(x, threshold=0.5):
    """Fixed binarization: 1 where ``x > threshold``, else 0; same shape and dtype as ``x``."""
    x = np.asarray(x)
    return (x > threshold).astype(x.dtype)


def binarize_dynamic(x, rng):
    """Dynamic binarization: a Bernoulli(p = x) sample, same shape and dtype as ``x``.

    ``x`` holds probabilities in [0, 1], float32 or float64. The trainer draws
    a fresh sample for each batch from its seeded ``rng``. On the host ``rng``
    is a ``numpy.random.Generator``; for an array on a device (CuPy), the
    backend's own Generator, so the sample is drawn where ``x`` lives.
    """
    if xp_of(x) is np:
        _check_generator(rng)
        x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise DataError(f"x must be float32 or float64 probabilities, got {x.dtype}")
    return (rng.random(x.shape, dtype=x.dtype) < x).astype(x.dtype)


def train_validation_split(x, y, n_validation, rng):
    """Split ``(N, ...)`` inputs and ``(N,)`` labels at random, seeded by ``rng``.

    Returns ``(x_train, y_train, x_val, y_val)`` with ``n_validation`` examples
    in the validation part and ``N - n_validation`` in the training part, each
    keeping the original order. ``0 < n_validation < N`` is required.
    """
    _check_generator(rng)
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise DataError(f"x has {len(x)} examples but y has {len(y)}")
    if not is_int(n_validation) or not 0 < n_validation < len(x):
        raise ConfigError(
            f"n_validation must be an int with 0 < n_validation < {len(x)}, got {n_validation!r}"
        )
    order = rng.permutation(len(x))
    val, train = np.sort(order[:n_validation]), np.sort(order[n_validation:])
    return x[train], y[train], x[val], y[val]


def check_pixels(x, likelihood):
    """Raise ``DataError`` unless ``x`` is fit to train on.

    ``x`` must be 2-D ``(N, D)`` floating, free of NaN and inf, and, when
    ``likelihood == "bernoulli"``, within [0, 1].
    """
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"x must be 2-D (N, D) floating, got {x.ndim}-D {x.dtype} {x.shape}")
    n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    if n_nan or n_inf:
        raise DataError(f"x contains {n_nan} NaN and {n_inf} inf values")
    if likelihood == "bernoulli" and x.size and (x.min() < 0 or x.max() > 1):
        raise DataError(
            f"bernoulli likelihood needs pixels in [0, 1], got min {x.min()} max {x.max()}"
        )


def batches(n, batch_size, rng=None):
    """Return an iterator of index arrays ``(batch_size,)`` covering ``range(n)`` once.

    Shuffled by a fresh ``rng.permutation(n)`` per call when ``rng`` is given,
    in order otherwise. The last batch is shorter when ``batch_size`` does not
    divide ``n`` (it is kept, as with PyTorch's ``drop_last=False``).
    """
    if not is_int(n) or n < 1:
        raise ConfigError(f"n must be a positive int, got {n!r}")
    if not is_int(batch_size) or not 0 < batch_size <= n:
        raise ConfigError(
            f"batch_size must be a positive int no larger than n={n}, got {batch_size!r}"
        )
    if rng is not None:
        _check_generator(rng)
    # Checked above, not inside the generator, so a bad call fails where it is made.
    order = np.arange(n) if rng is None else rng.permutation(n)
    return (order[start:start + batch_size] for start in range(0, n, batch_size))


# ---------------------------------------------------------------- a run's data


@dataclass
class Data:
    """Host arrays: ``x_*`` (N, D) floats, ``y_*`` (N,) labels; ``x_val`` None without validation.

    ``x_train`` holds probabilities when binarization is dynamic (each batch is
    sampled in the loop); the other sets are final.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray = None
    y_val: np.ndarray = None

    def summary(self):
        return {"x_dim": int(self.x_train.shape[1]), "n_train": len(self.x_train),
                "n_validation": 0 if self.x_val is None else len(self.x_val),
                "n_test": len(self.x_test)}


def prepare_data(config):
    """Load, scale, split, binarize and check the data of a ``TrainConfig``; a ``Data``.

    The validation split and the one-off binarization of the held-out sets
    draw on the config's own seeded streams (``npvae.randomness``).
    """
    dataset = load_mnist(config.data_dir)
    for name, n, available in (("n_train", config.n_train, len(dataset.x_train)),
                               ("n_test", config.n_test, len(dataset.x_test))):
        if n is not None and n > available:
            raise ConfigError(f"{name}={n} is more than the {available} examples in the data")
    dtype = np.dtype(config.dtype)
    x_train = to_unit_interval(dataset.x_train[:config.n_train], dtype)
    y_train = dataset.y_train[:config.n_train]
    x_test = to_unit_interval(dataset.x_test[:config.n_test], dtype)
    y_test = dataset.y_test[:config.n_test]
    x_val = y_val = None
    if config.validation:
        if config.validation >= len(x_train):
            raise ConfigError(f"validation={config.validation} must be smaller than the "
                              f"{len(x_train)} training examples")
        split_rng = stream(config.seed, "split")
        x_train, y_train, x_val, y_val = train_validation_split(
            x_train, y_train, config.validation, split_rng)
    if config.binarize == "threshold":
        x_train, x_test = binarize_threshold(x_train), binarize_threshold(x_test)
        x_val = None if x_val is None else binarize_threshold(x_val)
    elif config.binarize == "dynamic":
        rng = stream(config.seed, "test_binarize")
        x_test = binarize_dynamic(x_test, rng)
        x_val = None if x_val is None else binarize_dynamic(x_val, rng)
    for x in (x_train, x_test) + (() if x_val is None else (x_val,)):
        check_pixels(x, config.likelihood)
    if config.batch_size > len(x_train):
        raise ConfigError(f"batch_size={config.batch_size} is larger than the "
                          f"{len(x_train)} training examples")
    return Data(x_train, y_train, x_test, y_test, x_val, y_val)
