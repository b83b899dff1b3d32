"""The learned prior of a VQ-VAE run: a MADE (``npvae.made``) fitted to the codes of its data.

A VQ-VAE alone cannot draw new images: its codes have no distribution. The
prior is learned afterwards, with the VQ-VAE frozen::

    c      = model.encode(x)            (N, 7, 7) codes of the training images, as (N, G), G = 49
    prior  = MADE(G, K, hidden)         p(c) = prod_t p(c_t | c_<t), raster order
    loss   = -log p(c)                  nats per grid (summed over the G positions), batch mean
    sample: c ~ p(c), G passes   ->   x = model.decode(c)

Training is the plain loop, Adam on shuffled minibatches (``train_prior``).
Its numbers are in nats per grid, and in bits per code, nats / (G ln 2):
a prior that knows nothing (uniform over the K codes) scores log2 K bits
per code (6 for K = 64), and one that only learned the codes' frequencies
scores log2 of the codebook's perplexity.

The prior lives beside the run's checkpoint, as ``RUN/prior.npz``, written
atomically (a failed write leaves the previous prior whole) in the
checkpoint's layout: ``param/<name>`` arrays and a ``meta`` JSON string::

    {"format": "npvae-prior", "version": 1, "model": MADE.config,
     "state": {"epochs", "steps", "metrics", "settings", "vqvae"}}

``state["vqvae"]`` holds the grid, the number of codes and a fingerprint
of the VQ-VAE's weights the codes came from: a prior is only used with that
VQ-VAE (trained further, its codes mean other things). ``load_prior`` reads
the file with ``allow_pickle=False`` and checks every entry's header before
reading it (``npvae.checkpoint``'s readers).

Randomness: the prior's weights, the shuffles and (for a run trained on
dynamically binarized data) the one binarization of the training images
come from the ``prior`` stream of its ``seed`` (``npvae.randomness``).
"""

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from . import progress
from .atomic import atomic_write
from .backend import to_numpy
from .checkpoint import (MAX_JSON_DEPTH, MAX_META_BYTES, _depth, _header, _members, _read,
                         read_archive)
from .checks import positive_int
from .data import batches, binarize_dynamic, prepare_data
from .errors import CheckpointError, ConfigError, DivergenceError, NpvaeError
from .made import MADE, parameter_shapes
from .optim import Adam
from .randomness import derive_seed
from .vqvae import is_vq

PRIOR_NAME = "prior.npz"
FORMAT = "npvae-prior"
VERSION = 1
DEFAULTS = dict(hidden=(512,), epochs=10, lr=1e-3, batch_size=128, seed=0)
"""The prior's default settings: ``npvae train-prior``'s flags and ``fit_run_prior``'s.

Sized to draw recognisable digits in minutes on a CPU. Measured after
``npvae train --preset vqvae --epochs 3 --threads 1`` (which ends with this
prior) on this project's 2-core development machine, shared with other jobs:
3,214,912 parameters, 17 to 35 s an epoch by the machine's load (``npvae
train-prior RUN --threads 1`` took 182 s in all); test NLL 58.07 nats per grid,
1.710 bits per code (uniform: 6; the codes' frequencies alone, the test
perplexity 23.2: log2 23.2 = 4.54), and most samples are legible digits.
"""


# ---------------------------------------------------------------- codes and their likelihood


def dataset_codes(model, x, batch_size=1000):
    """The codes of every example of x (N, D), encoded in batches: (N, G) int64 on the host."""
    x = model.check_input(model.xp.asarray(x))
    out = [to_numpy(model.encode(x[i:i + batch_size])).reshape(min(batch_size, len(x) - i), -1)
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.int64)


def mean_nll(prior, codes, batch_size=1000):
    """-log p(c) of the grids ``codes`` (N, G) under ``prior``: the mean, in nats per grid."""
    total = sum(float(-prior.log_prob(codes[i:i + batch_size]).sum())
                for i in range(0, len(codes), batch_size))
    return total / len(codes)


def bits_per_code(nats_per_grid, n_positions):
    """Nats per grid of G positions as bits per code: nats / (G ln 2)."""
    return nats_per_grid / (n_positions * math.log(2))


def fingerprint(model):
    """A SHA-256 of a VQ-VAE's weights and codebook: which VQ-VAE a prior's codes came from."""
    digest = hashlib.sha256()
    for name, p in sorted(model.params.items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(to_numpy(p)).tobytes())
    digest.update(np.ascontiguousarray(to_numpy(model.quantizer.codebook)).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- training


def format_row(row, epochs, n_positions):
    """The one-line summary of an epoch of the prior's training."""
    line = (f"prior epoch {row['epoch']}/{epochs}  train nll {row['train_nll']:.2f} nats/grid "
            f"({bits_per_code(row['train_nll'], n_positions):.3f} bits/code)")
    if row.get("test_nll") is not None:
        line += (f"  test nll {row['test_nll']:.2f} nats/grid "
                 f"({bits_per_code(row['test_nll'], n_positions):.3f} bits/code)")
    return line + f"  {row['seconds']:.1f} s"


def train_prior(codes, n_codes, *, test_codes=None, hidden=DEFAULTS["hidden"],
                epochs=DEFAULTS["epochs"], lr=DEFAULTS["lr"], batch_size=DEFAULTS["batch_size"],
                seed=DEFAULTS["seed"], show_progress=False, describe=False, log=print):
    """Fit a MADE prior to the grids ``codes`` (N, G) of ``n_codes`` codes: ``(prior, metrics)``.

    Adam at ``lr`` on -log p(c) (nats per grid, the batch mean), ``epochs``
    passes over ``codes`` in minibatches of ``batch_size``, each epoch
    shuffled by its own generator from ``seed``. After each epoch one row of
    ``metrics``: ``epoch``, ``steps``, ``train_nll`` (the mean over the
    epoch's batches), ``test_nll`` (of ``test_codes`` by the prior at the
    epoch's end; None without them) and ``seconds``; ``log`` gets its line.
    ``describe``: ``log`` first gets a line naming the prior and its size.
    A loss that is not finite stops training with a ``DivergenceError``.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or len(codes) == 0:
        raise ConfigError(f"codes must be a non-empty (grids, positions) array; got shape "
                          f"{codes.shape}")
    epochs, batch_size = positive_int("epochs", epochs), positive_int("batch_size", batch_size)
    if batch_size > len(codes):
        raise ConfigError(f"batch_size={batch_size} must be between 1 and the {len(codes)} "
                          "training grids")
    prior = MADE(codes.shape[1], n_codes, hidden, seed=derive_seed(seed, "prior", 0))
    if describe:
        log(f"prior: {prior!r}, {prior.theta.size:,} parameters; Adam lr {lr:g}, batches of "
            f"{batch_size}, {epochs} epochs")
    prior.check_codes(codes)
    if test_codes is not None:
        prior.check_codes(test_codes)
    optimizer = Adam({"theta": prior.theta}, {"theta": prior.dtheta}, lr=lr)
    metrics, steps_per_epoch = [], -(-len(codes) // batch_size)
    for epoch in range(epochs):
        shuffle = np.random.default_rng(derive_seed(seed, "prior", 1, epoch))
        bar = (progress.bar(f"prior epoch {epoch + 1}/{epochs}", steps_per_epoch, unit="step",
                            leave=False) if show_progress else None)
        start, total = time.perf_counter(), 0.0
        for index in batches(len(codes), batch_size, shuffle):
            loss = float(prior.forward(codes[index]))
            if not math.isfinite(loss):
                raise DivergenceError(f"the prior's loss is {loss} at epoch {epoch + 1}; try a "
                                      f"smaller --lr than {lr:g}")
            prior.backward()
            optimizer.step()
            total += loss * len(index)
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        metrics.append({"epoch": epoch + 1, "steps": (epoch + 1) * steps_per_epoch,
                        "train_nll": total / len(codes),
                        "test_nll": None if test_codes is None else mean_nll(prior, test_codes),
                        "seconds": round(time.perf_counter() - start, 3)})
        log(format_row(metrics[-1], epochs, prior.n_positions))
    return prior, metrics


# ---------------------------------------------------------------- the prior of a run


def prior_path(run_dir):
    """Where a run's prior lives: ``RUN/prior.npz``."""
    return Path(run_dir) / PRIOR_NAME


def check_vqvae(model, run):
    """A ConfigError unless ``model`` (of run ``run``) is a VQ-VAE, whose codes a prior models."""
    if not is_vq(model.config):
        raise ConfigError(f"{run} is not a VQ-VAE run ({type(model).__name__}); a learned prior "
                          "over codes is for VQ-VAE runs (npvae train --preset vqvae)")


def run_images(checkpoint, data_dir=None):
    """A run's training and test images, preprocessed as in its training: ``(x_train,
    x_test, binarize)``, ``binarize`` the run's setting (``none``, ``threshold``, ``dynamic``)."""
    from .config import TrainConfig

    config = TrainConfig.from_checkpoint(checkpoint)
    if config is None:
        raise ConfigError(f"{checkpoint.path}: holds no training config (written outside "
                          "npvae train), so its training images are unknown")
    if data_dir is not None:
        config.data_dir = data_dir
    data = prepare_data(config.validate())
    return data.x_train, data.x_test, config.binarize


def fit_run_prior(model, run_dir, x_train, x_test, *, binarize="none", hidden=DEFAULTS["hidden"],
                  epochs=DEFAULTS["epochs"], lr=DEFAULTS["lr"], batch_size=None,
                  seed=DEFAULTS["seed"], show_progress=False, log=print):
    """Fit the prior of the VQ-VAE ``model`` to the codes of its run's images and save it as
    ``run_dir/prior.npz``: ``(prior, metrics, path)``.

    ``x_train``, ``x_test`` (N, D): the run's images as its data preparation
    gives them; under ``binarize="dynamic"`` the training images (grey) are
    binarized once (the ``prior`` stream of ``seed``), as the test images
    were. ``batch_size`` None: the default, or every grid when there are
    fewer. The file is written only once training has ended, atomically: a
    failure leaves the previous prior as it was. The trainer calls this at
    the end of a VQ-VAE run (``npvae.train``), ``train_prior_for_run`` for a
    run on disk (``npvae train-prior``).
    """
    grid, K = model.grid, model.config["n_codes"]
    parameter_shapes(grid[0] * grid[1], K, hidden)   # a bad --hidden, before any work
    if binarize == "dynamic":
        x_train = binarize_dynamic(x_train, np.random.default_rng(derive_seed(seed, "prior", 2)))
    train_codes, test_codes = dataset_codes(model, x_train), dataset_codes(model, x_test)
    if batch_size is None:
        batch_size = min(DEFAULTS["batch_size"], len(train_codes))
    log(f"codes: {len(train_codes)} training and {len(test_codes)} test grids of "
        f"{grid[0]}x{grid[1]} positions, {K} codes (uniform: log {K} = {math.log(K):.4f} "
        f"nats = {math.log2(K):.3f} bits per code)")
    prior, metrics = train_prior(train_codes, K, test_codes=test_codes, hidden=hidden,
                                 epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                                 show_progress=show_progress, describe=True, log=log)
    state = {"epochs": epochs, "steps": metrics[-1]["steps"], "metrics": metrics,
             "settings": dict(hidden=list(hidden), epochs=epochs, lr=lr,
                              batch_size=batch_size, seed=seed),
             "vqvae": {"grid": list(grid), "n_codes": K, "fingerprint": fingerprint(model)}}
    return prior, metrics, save_prior(prior_path(run_dir), prior, state)


def train_prior_for_run(run, *, data_dir=None, **settings):
    """``fit_run_prior`` for the VQ-VAE run ``run`` on disk (a folder or its checkpoint),
    on its data (or the images in ``data_dir``), its folder locked meanwhile
    (``npvae.runs.RunLock``). ``settings``: ``fit_run_prior``'s."""
    from .runs import RunLock, open_run

    model, checkpoint, run_dir = open_run(run)
    check_vqvae(model, run)
    with RunLock(run_dir):
        x_train, x_test, binarize = run_images(checkpoint, data_dir)
        return fit_run_prior(model, run_dir, x_train, x_test, binarize=binarize, **settings)


# ---------------------------------------------------------------- the file


def save_prior(path, prior, state):
    """Write ``prior``'s weights, config and the JSON-able ``state`` to ``path``, atomically."""
    arrays = {f"param/{k}": to_numpy(v) for k, v in prior.params.items()}
    meta = {"format": FORMAT, "version": VERSION, "model": prior.config, "state": state}
    arrays["meta"] = np.array(json.dumps(meta, allow_nan=False))
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return Path(path)


def _decode_meta(path, archive, members):
    """The checked JSON of the file's ``meta`` entry."""
    if "meta" not in members:
        raise CheckpointError(f"{path}: missing the 'meta' entry; not an npvae prior file")
    shape, dtype = _header(path, archive, "meta", members["meta"])
    if shape != () or dtype.kind != "U" or members["meta"].file_size > MAX_META_BYTES:
        raise CheckpointError(f"{path}: 'meta' must be a 0-d unicode array of at most "
                              f"{MAX_META_BYTES} bytes; not an npvae prior file")
    try:
        meta = json.loads(_read(archive, "meta", members["meta"]).item())
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: 'meta' is not valid JSON ({err})") from err
    if _depth(meta) > MAX_JSON_DEPTH or not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: format is {found!r}, not {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: prior file version {meta.get('version')!r}; this npvae "
                              f"reads version {VERSION}")
    if not isinstance(meta.get("model"), dict) or not isinstance(meta.get("state"), dict):
        raise CheckpointError(f"{path}: 'meta' lacks its 'model' or 'state' object")
    return meta


def _load(path, archive):
    members = _members(path, archive)
    meta = _decode_meta(path, archive, members)
    config = meta["model"]
    expected = {"n_positions", "n_codes", "hidden", "activation", "init", "dtype"}
    if set(config) != expected:
        raise CheckpointError(f"{path}: the prior's config has the fields {sorted(config)}, "
                              f"not {sorted(expected)}")
    try:
        shapes = parameter_shapes(config["n_positions"], config["n_codes"], config["hidden"])
        dtype = np.dtype(config["dtype"]) if config["dtype"] in ("float32", "float64") else None
    except (TypeError, NpvaeError) as err:
        raise CheckpointError(f"{path}: the prior's config is invalid ({err})") from err
    if dtype is None:
        raise CheckpointError(f"{path}: the prior's dtype {config['dtype']!r} is not float32 "
                              "or float64")
    found = {key.removeprefix("param/"): key for key in members if key != "meta"}
    if set(found) != set(shapes) or any(not key.startswith("param/") for key in found.values()):
        raise CheckpointError(f"{path}: entries {sorted(found.values())} do not match the "
                              f"prior's config (param/ of {sorted(shapes)})")
    for name, key in found.items():
        shape, found_dtype = _header(path, archive, key, members[key])
        if shape != shapes[name] or found_dtype != dtype:
            raise CheckpointError(f"{path}: {key!r} is {found_dtype}{list(shape)}; the prior's "
                                  f"config needs {dtype}{list(shapes[name])}")
    params = {name: _read(archive, key, members[key]) for name, key in found.items()}
    if not all(np.isfinite(a).all() for a in params.values()):
        raise CheckpointError(f"{path}: the prior's weights hold NaN or infinite values")
    try:
        prior = MADE(**config)
    except (TypeError, NpvaeError) as err:
        raise CheckpointError(f"{path}: the prior's config is invalid ({err})") from err
    for name, p in prior.params.items():
        p[...] = params[name]
    return prior, meta["state"]


def load_prior(path):
    """Read and check the prior file at ``path``: ``(prior, state)``.

    A missing, truncated, corrupt or foreign file, an object (pickle)
    array, entries that do not match the stored config, or weights that are
    not finite: a one-line ``CheckpointError`` naming the file.
    """
    return read_archive(path, _load, "prior file")


def open_prior(run_dir, model):
    """The prior of a run whose VQ-VAE is ``model``: ``(prior, state)``, checked to be that
    VQ-VAE's (its grid, its number of codes, the weights its codes came from)."""
    path = prior_path(run_dir)
    if not path.exists():
        raise ConfigError(f"{run_dir} has no {PRIOR_NAME} (the learned prior that samples "
                          f"need); train it with: npvae train-prior {run_dir}")
    prior, state = load_prior(path)
    grid, K = model.grid, model.config["n_codes"]
    if prior.n_positions != grid[0] * grid[1] or prior.n_codes != K:
        raise CheckpointError(f"{path}: a prior of {prior.n_positions} positions x "
                              f"{prior.n_codes} codes, but the run's VQ-VAE has a {grid[0]}x"
                              f"{grid[1]} grid of {K} codes; retrain it with: npvae "
                              f"train-prior {run_dir}")
    vqvae = state.get("vqvae")
    if not isinstance(vqvae, dict) or vqvae.get("fingerprint") != fingerprint(model):
        raise CheckpointError(f"{path}: trained on the codes of another VQ-VAE than the run's "
                              f"(trained further since?); retrain it with: npvae train-prior "
                              f"{run_dir}")
    return prior, state


def run_prior(run_dir, model):
    """The prior of the run in ``run_dir`` whose VQ-VAE is ``model`` (``open_prior``), or None
    while the run has none."""
    return open_prior(run_dir, model)[0] if prior_path(run_dir).exists() else None


def sample_images(model, prior, n, rng):
    """``n`` new images: code grids drawn from ``prior`` (``MADE.sample``, from ``rng``),
    decoded by ``model``: ``(codes (n, rows, cols), images (n, D))``, images as decoder means."""
    codes = prior.sample(n, rng).reshape(n, *model.grid)
    return codes, to_numpy(model.decode(model.xp.asarray(codes)))
