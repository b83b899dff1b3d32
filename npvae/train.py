"""Training: the loop, its run folder, resuming, divergence and Ctrl-C.

One step, for a minibatch x of B examples::

    terms = model.forward(x, rng=noise, beta=beta_now)    # loss, recon, kl (nats/example)
    model.backward()                                       # fills model.dtheta
    clip_grad_norm({"theta": model.dtheta}, clip)          # optional
    optimizer.step()                                       # Adam on the flat buffer theta

A run folder holds ``config.json``, ``metrics.csv`` (one row per epoch,
rewritten atomically), ``checkpoint.npz`` (the latest, written atomically)
and the figures. ``train`` starts a run; ``resume`` continues one from its
checkpoint so that 5 + 5 epochs give exactly the numbers of 10 epochs, bit
for bit, even when the first run was stopped in the middle of an epoch.

Randomness. Every random number comes from a generator derived from the one
``seed`` (``np.random.SeedSequence(seed, spawn_key=(stream, ...))``), one
stream each for the initial weights, the validation split, the shuffle, the
reparameterization noise, the dynamic binarization and the evaluation noise.
The shuffle, noise and binarization generators are derived afresh for every
epoch, so an epoch's random numbers depend on (seed, epoch) only; a
checkpoint taken mid-epoch stores their states (and the step reached), and
resuming restores them. The global RNG is never used.

Host and device. The data is moved to the backend once. Inside an epoch the
loop reads nothing back but the per-step loss terms (and, with ``clip``, the
gradient norm), in groups (every step on NumPy, where reading is free; every
``FLUSH_EVERY_DEVICE`` steps otherwise), to check that they are finite, sum
them and show them in the progress bar. Without ``clip`` the gradient norm is
not taken (it would cost 3% of an epoch): a gradient that is not finite makes
the parameters and so the next step's loss NaN, which stops training there.

Interrupts. Ctrl-C (SIGINT) during training is deferred to the end of the
current step; the trainer then saves a checkpoint of that position (epoch,
step, partial sums, generator states) and raises ``Interrupted`` (a
``KeyboardInterrupt``). A second Ctrl-C interrupts at once, without saving.
"""

import csv
import io
import json
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from . import __version__
from .activations import ACTIVATIONS
from .backend import default_rng, get_xp, to_numpy
from .checks import is_int, number, positive_int
from .atomic import atomic_write_text
from .checkpoint import (CHECKPOINT_NAME, load_checkpoint, restore_model,
                         restore_optimizer, save_checkpoint, config_differences)
from .data import (binarize_dynamic, binarize_threshold, check_pixels, load_mnist,
                   to_unit_interval, train_validation_split)
from .errors import CheckpointError, ConfigError, DivergenceError
from .evaluate import evaluate_elbo
from .losses import LIKELIHOODS
from .layers import INITS
from .optim import Adam, clip_grad_norm
from .presets import DEFAULT_PRESET, PRESETS, get_preset
from .vae import VAE

BINARIZE = ("none", "dynamic", "threshold")
FLUSH_EVERY_DEVICE = 20
FIGURE_EXAMPLES = 32

# One independent random stream per use; see the module docstring.
STREAMS = {"init": 0, "split": 1, "shuffle": 2, "noise": 3, "binarize": 4, "eval": 5,
           "test_binarize": 6, "figures": 7}


def derive_seed(seed, stream, *index):
    """An integer seed for ``stream`` (and e.g. the epoch ``index``) derived from ``seed``."""
    ss = np.random.SeedSequence(seed, spawn_key=(STREAMS[stream], *index))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


# ---------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Everything that defines a training run. Build one with ``from_preset``.

    The model fields (``hidden`` ... ``init``) are ``npvae.VAE``'s arguments;
    ``x_dim`` comes from the data. ``beta`` weighs the KL; with
    ``warmup_epochs`` > 0 it rises linearly from 0, step by step, over that
    many epochs. ``binarize``: ``none`` (pixels in [0, 1]), ``dynamic`` (a
    fresh Bernoulli sample of each training batch; validation and test sets
    binarized once, with a fixed seed) or ``threshold`` (pixel > 0.5).
    ``validation`` > 0 holds out that many training examples. ``n_train`` and
    ``n_test`` keep only the first N training and test examples (None: all),
    for quick runs. ``clip`` is a
    maximum global gradient norm. ``max_steps`` stops after that many steps
    in all (a checkpoint is saved there; ``resume`` continues).
    """

    preset: str = DEFAULT_PRESET
    hidden: tuple = (400,)
    decoder_hidden: tuple = None
    latent: int = 20
    activation: str = "relu"
    likelihood: str = "bernoulli"
    sigma: float = 1.0
    init: str = "pytorch"
    beta: float = 1.0
    warmup_epochs: float = 0.0
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    dtype: str = "float32"
    backend: str = "numpy"
    binarize: str = "none"
    validation: int = 0
    n_train: int = None
    n_test: int = None
    clip: float = None
    data_dir: str = None
    checkpoint_every: int = 1
    eval_batch_size: int = 1000
    figures: bool = True
    progress: bool = True
    max_steps: int = None

    @classmethod
    def from_preset(cls, name=DEFAULT_PRESET, **overrides):
        """The preset's model and training settings, then ``overrides`` (None ignored)."""
        preset = get_preset(name)
        values = {**preset["model"], **preset["training"], "preset": name}
        known = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in known:
                raise ConfigError(f"{key}={value!r} is not a training setting")
            if value is not None:
                values[key] = value
        return cls(**values)

    @classmethod
    def from_dict(cls, values):
        """A config from ``asdict`` output (as stored in a checkpoint)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training settings {unknown}")
        return cls(**values)

    def validate(self):
        """Raise a one-line ``ConfigError`` naming the first bad setting; return self."""
        if not isinstance(self.preset, str) or self.preset not in PRESETS:
            raise ConfigError(f"preset={self.preset!r} is unknown; choose one of "
                              f"{', '.join(PRESETS)}")
        self.hidden = _sizes("hidden", self.hidden)
        if self.decoder_hidden is not None:
            self.decoder_hidden = _sizes("decoder_hidden", self.decoder_hidden)
        for name in ("latent", "epochs", "batch_size", "checkpoint_every", "eval_batch_size"):
            positive_int(name, getattr(self, name))
        for name in ("max_steps", "n_train", "n_test"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        if not is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r} must be a non-negative integer")
        if not is_int(self.validation) or self.validation < 0:
            raise ConfigError(f"validation={self.validation!r} must be a non-negative integer "
                              "(0 = no validation set)")
        number("lr", self.lr, positive=True)
        number("sigma", self.sigma, positive=True)
        number("beta", self.beta)
        number("warmup_epochs", self.warmup_epochs)
        if self.clip is not None:
            number("clip", self.clip, positive=True)
        for name, choices in (("activation", ACTIVATIONS), ("likelihood", LIKELIHOODS),
                              ("binarize", BINARIZE), ("dtype", ("float32", "float64"))):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ConfigError(f"{name}={getattr(self, name)!r} is unknown; choose one of "
                                  f"{', '.join(choices)}")
        if self.init is not None and (not isinstance(self.init, str) or self.init not in INITS):
            raise ConfigError(f"init={self.init!r} is unknown; choose one of {', '.join(INITS)}")
        get_xp(self.backend)  # unknown name, or CuPy missing: a ConfigError naming the fix
        return self

    def model_kwargs(self, x_dim):
        """Arguments for ``npvae.VAE``."""
        return dict(x_dim=x_dim, hidden=tuple(self.hidden), latent=self.latent,
                    decoder_hidden=self.decoder_hidden, activation=self.activation,
                    likelihood=self.likelihood, sigma=float(self.sigma), beta=float(self.beta),
                    init=self.init, dtype=self.dtype, backend=self.backend,
                    seed=derive_seed(self.seed, "init"))


# Settings a resumed run may change: none of them changes the numbers.
RESUMABLE = ("epochs", "figures", "progress", "max_steps", "data_dir", "checkpoint_every")


def _sizes(name, value):
    try:
        sizes = tuple(value)
    except TypeError:
        sizes = (value,)
    if not sizes or not all(is_int(n) and n > 0 for n in sizes):
        raise ConfigError(f"{name}={value!r} must be one or more positive integers")
    return tuple(int(n) for n in sizes)


# ---------------------------------------------------------------- data


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
    """Load, scale, split, binarize and check the data of ``config``; a ``Data``."""
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
        split_rng = np.random.default_rng(derive_seed(config.seed, "split"))
        x_train, y_train, x_val, y_val = train_validation_split(
            x_train, y_train, config.validation, split_rng)
    if config.binarize == "threshold":
        x_train, x_test = binarize_threshold(x_train), binarize_threshold(x_test)
        x_val = None if x_val is None else binarize_threshold(x_val)
    elif config.binarize == "dynamic":
        rng = np.random.default_rng(derive_seed(config.seed, "test_binarize"))
        x_test = binarize_dynamic(x_test, rng)
        x_val = None if x_val is None else binarize_dynamic(x_val, rng)
    for x in (x_train, x_test) + (() if x_val is None else (x_val,)):
        check_pixels(x, config.likelihood)
    if config.batch_size > len(x_train):
        raise ConfigError(f"batch_size={config.batch_size} is larger than the "
                          f"{len(x_train)} training examples")
    return Data(x_train, y_train, x_test, y_test, x_val, y_val)


# ---------------------------------------------------------------- run folder


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


def _write_config(run_dir, config, model, data):
    info = {"npvae_version": __version__, "train": asdict(config), "model": model.config,
            "data": data.summary()}
    atomic_write_text(run_dir / "config.json", json.dumps(info, indent=2) + "\n")


# ---------------------------------------------------------------- results


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C after saving a checkpoint of its position."""

    def __init__(self, run_dir, epoch, step):
        super().__init__(f"interrupted at epoch {epoch}, step {step}; checkpoint saved in "
                         f"{run_dir}")
        self.run_dir, self.epoch, self.step = run_dir, epoch, step


@dataclass
class TrainResult:
    """What a call to ``train`` or ``resume`` ended with."""

    run_dir: Path
    model: VAE
    optimizer: Adam
    metrics: list
    state: dict
    completed: bool            # every epoch done (False: stopped at max_steps)
    log: list = field(default_factory=list)


# ---------------------------------------------------------------- public API


def train(config=None, run_dir=None, *, overwrite=False, log=print, on_step=None):
    """Train a VAE as ``config`` (a ``TrainConfig``; default: the default preset) says.

    ``run_dir``: the run folder (see ``claim_run_dir``). ``log`` receives each
    line of output. ``on_step(epoch, step, global_step)`` is called after every
    completed step (a test hook; raising ``KeyboardInterrupt`` in it acts as
    Ctrl-C). Returns a ``TrainResult``; raises ``DivergenceError`` when a loss
    term or the gradient turns NaN or infinite, ``Interrupted`` after Ctrl-C.
    """
    config = (config or TrainConfig()).validate()
    data = prepare_data(config)
    run_dir, note = claim_run_dir(run_dir, config.preset, overwrite)
    log(f"run folder: {run_dir}{note}")
    model = VAE(**config.model_kwargs(data.x_train.shape[1]))
    optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=config.lr)
    _write_config(run_dir, config, model, data)
    log(f"model: {model!r}, {model.theta.size} parameters; {len(data.x_train)} training "
        f"examples, batch {config.batch_size}, {config.epochs} epochs, Adam lr {config.lr:g}")
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "partial": None, "rng": None,
             "metrics": [], "train_config": asdict(config), "data": data.summary()}
    return _Trainer(config, run_dir, data, model, optimizer, state, log, on_step).run()


def resume(run_dir, *, epochs=None, max_steps=None, progress=True, figures=True, data_dir=None,
           checkpoint_every=None, log=print, on_step=None):
    """Continue the run in ``run_dir`` from its ``checkpoint.npz``.

    Everything that shapes the numbers (model, optimizer, seeds, data
    preprocessing) comes from the checkpoint; ``epochs`` may raise the total
    number of epochs. The result equals that of one uninterrupted run.
    """
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_NAME
    if not run_dir.is_dir():
        raise ConfigError(f"resume={str(run_dir)!r}: no such run folder")
    if not path.is_file():
        raise ConfigError(f"resume={str(run_dir)!r}: the folder holds no {CHECKPOINT_NAME}")
    checkpoint = load_checkpoint(path)
    state = _check_state(path, checkpoint.state)
    try:
        config = TrainConfig.from_dict(state["train_config"])
    except (TypeError, ConfigError) as err:
        raise CheckpointError(f"{path}: no usable training config in the checkpoint ({err})") \
            from err
    config.max_steps, config.progress, config.figures = max_steps, progress, figures
    for name, value in (("epochs", epochs), ("data_dir", data_dir),
                        ("checkpoint_every", checkpoint_every)):
        if value is not None:
            setattr(config, name, value)
    config.validate()
    started = state["epoch"] + (1 if state["step_in_epoch"] else 0)
    if config.epochs < started:
        done = "begun" if state["step_in_epoch"] else "trained"
        raise ConfigError(f"epochs={config.epochs} is fewer than the {started} epochs "
                          f"{run_dir} has already {done}")
    data = prepare_data(config)
    if data.summary() != state.get("data"):
        raise CheckpointError(f"{path}: the data differs from the run's: {data.summary()} now, "
                              f"{state.get('data')} then")
    model = VAE(**config.model_kwargs(data.x_train.shape[1]))
    diffs = config_differences(checkpoint.model_config, model.config)
    if diffs:
        raise CheckpointError(f"{path}: the checkpoint's model differs from its config: "
                              + "; ".join(diffs))
    restore_model(checkpoint, model)
    optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=config.lr)
    restore_optimizer(checkpoint, optimizer)
    state["train_config"] = asdict(config)
    _write_config(run_dir, config, model, data)
    log(f"resuming {run_dir} at epoch {state['epoch'] + 1}, step {state['step_in_epoch']} "
        f"(global step {state['global_step']}) of {config.epochs} epochs")
    return _Trainer(config, run_dir, data, model, optimizer, state, log, on_step).run()


def _check_state(path, state):
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


# ---------------------------------------------------------------- the loop


class _Trainer:
    def __init__(self, config, run_dir, data, model, optimizer, state, log, on_step):
        self.config, self.run_dir, self.data = config, Path(run_dir), data
        self.model, self.optimizer, self.state = model, optimizer, state
        self.log, self.on_step = log, on_step
        self.xp = model.xp
        self.n = len(data.x_train)
        self.steps_per_epoch = math.ceil(self.n / config.batch_size)
        self.warmup_steps = config.warmup_epochs * self.steps_per_epoch
        self.flush_every = 1 if self.xp is np else FLUSH_EVERY_DEVICE
        self.stop_requested = False
        # (epoch, global_step) of the checkpoint on disk, if any: divergence keeps it.
        self.saved_at = ((state["epoch"], state["global_step"])
                         if (self.run_dir / CHECKPOINT_NAME).is_file() else None)

    # -- the pieces of a step

    def beta_at(self, global_step):
        """KL weight of the step after ``global_step`` completed ones (linear warm-up)."""
        if self.warmup_steps <= 0:
            return self.config.beta
        return self.config.beta * min(1.0, global_step / self.warmup_steps)

    def batch_slices(self):
        B = self.config.batch_size
        return [slice(start, min(start + B, self.n)) for start in range(0, self.n, B)]

    def generators(self, epoch):
        """(shuffle, noise, binarize) generators of ``epoch``; binarize None unless dynamic."""
        seed, xp = self.config.seed, self.xp
        shuffle = np.random.default_rng(derive_seed(seed, "shuffle", epoch))
        noise = default_rng(derive_seed(seed, "noise", epoch), xp)
        binarize = (default_rng(derive_seed(seed, "binarize", epoch), xp)
                    if self.config.binarize == "dynamic" else None)
        return shuffle, noise, binarize

    def restore_generators(self, noise, binarize, steps):
        """Bring the epoch's generators to where they were after ``steps`` steps.

        NumPy generators take their stored state; others (CuPy's cannot be
        serialised) replay the draws of those steps, which gives the same state.
        """
        stored = self.state.get("rng") or {}
        pairs = [(noise, stored.get("noise")), (binarize, stored.get("binarize"))]
        if all(rng is None or state is not None for rng, state in pairs) and self.xp is np:
            for rng, state in pairs:
                if rng is not None:
                    rng.bit_generator.state = state
            return
        self.replay_draws(noise, binarize, steps)

    def replay_draws(self, noise, binarize, steps):
        dtype, Z, D = self.model.dtype, self.model.latent, self.model.x_dim
        for sl in self.batch_slices()[:steps]:
            b = sl.stop - sl.start
            if binarize is not None:
                binarize.random((b, D), dtype=dtype)
            noise.standard_normal((b, Z), dtype=dtype)

    # -- bookkeeping

    def flush(self, pending, sums, bar):
        """Read the pending steps' numbers, check them, add them to ``sums``."""
        if not pending:
            return
        xp = self.xp
        host = to_numpy(xp.stack([values for *_, values in pending])).astype(np.float64)
        for (b, epoch, step, global_step, _), row in zip(pending, host):
            # row: recon, kl, loss and, with clipping, the gradient norm
            for name, value in zip(("recon", "kl", "loss", "gradient norm"), row):
                if not math.isfinite(value):
                    self.diverged(epoch, step, global_step, name, value)
            sums["n"] += b
            sums["recon"] += b * float(row[0])
            sums["kl"] += b * float(row[1])
            sums["loss"] += b * float(row[2])
        if bar is not None:
            bar.update(len(pending))
            bar.set_postfix(loss=f"{sums['loss'] / sums['n']:.3f}", refresh=False)
        pending.clear()

    def diverged(self, epoch, step, global_step, term, value):
        path = self.run_dir / CHECKPOINT_NAME
        if self.saved_at is not None:
            kept = (f"the last good checkpoint {path} (global step {self.saved_at[1]}) is kept "
                    "untouched")
        else:
            kept = "no checkpoint had been written yet"
        clip = (f"a smaller --clip (now {self.config.clip})" if self.config.clip
                else "--clip (e.g. --clip 10)")
        raise DivergenceError(
            f"training diverged at epoch {epoch + 1}, step {step} of {self.steps_per_epoch} "
            f"(global step {global_step}): the {term} is {value}; {kept}; try a lower --lr "
            f"(now {self.config.lr:g}) or {clip}")

    def save(self):
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.model, self.optimizer, self.state)
        self.saved_at = (self.state["epoch"], self.state["global_step"])

    # -- the loop

    def run(self):
        cfg, state = self.config, self.state
        if state["epoch"] >= cfg.epochs and state["step_in_epoch"] == 0:
            self.log(f"nothing to do: {self.run_dir} has trained {state['epoch']} of "
                     f"{cfg.epochs} epochs")
            return self.result(completed=True)
        xp = self.xp
        self.x_train = xp.asarray(self.data.x_train)
        self.x_test = xp.asarray(self.data.x_test)
        self.x_val = None if self.data.x_val is None else xp.asarray(self.data.x_val)
        previous = self.install_sigint()
        try:
            # NaN and inf are caught by flush(), which names the step and the term.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                for epoch in range(state["epoch"], cfg.epochs):
                    if not self.run_epoch(epoch):
                        return self.result(completed=False)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self.final_figures()
        return self.result(completed=True)

    def install_sigint(self):
        """Defer Ctrl-C to the end of the current step (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None

        def handler(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
            self.stop_requested = True

        return signal.signal(signal.SIGINT, handler)

    def run_epoch(self, epoch):
        """Train one epoch (or its rest); False if stopped early (max_steps)."""
        cfg, state, model, xp = self.config, self.state, self.model, self.xp
        shuffle, noise, binarize = self.generators(epoch)
        first = state["step_in_epoch"] if state["epoch"] == epoch else 0
        if first:
            try:
                shuffle.bit_generator.state = state["rng"]["shuffle_epoch_start"]
                self.restore_generators(noise, binarize, first)
            except (TypeError, ValueError, KeyError) as err:
                raise CheckpointError(f"{self.run_dir / CHECKPOINT_NAME}: bad generator state "
                                      f"({err!r})") from err
            sums = dict(state["partial"])
        else:
            sums = {"n": 0, "loss": 0.0, "recon": 0.0, "kl": 0.0, "seconds": 0.0}
        shuffle_start = shuffle.bit_generator.state
        order = xp.asarray(shuffle.permutation(self.n))
        slices = self.batch_slices()
        grads = {"theta": model.dtheta}
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(slices), initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="batch", leave=False, file=sys.stderr, dynamic_ncols=True)
        pending = []
        started = time.perf_counter()

        def checkpoint_position(step):
            self.flush(pending, sums, bar)
            sums["seconds"] += time.perf_counter() - started
            state.update(epoch=epoch, step_in_epoch=step, partial=dict(sums), rng={
                "shuffle_epoch_start": shuffle_start,
                "noise": noise.bit_generator.state if xp is np else None,
                "binarize": (binarize.bit_generator.state
                             if xp is np and binarize is not None else None)})
            self.save()

        try:
            for step in range(first, len(slices)):
                xb = self.x_train[order[slices[step]]]
                if binarize is not None:
                    xb = binarize_dynamic(xb, binarize)
                # check=False: prepare_data checked every pixel once already.
                terms = model.forward(xb, rng=noise, beta=self.beta_at(state["global_step"]),
                                      check=False)
                model.backward()
                checked = [terms.recon, terms.kl, terms.loss]
                if cfg.clip:
                    checked.append(clip_grad_norm(grads, cfg.clip))
                self.optimizer.step()
                state["global_step"] += 1
                pending.append((len(xb), epoch, step + 1, state["global_step"],
                                xp.stack(checked)))
                if len(pending) >= self.flush_every:
                    self.flush(pending, sums, bar)
                if self.on_step is not None:
                    try:
                        self.on_step(epoch, step + 1, state["global_step"])
                    except KeyboardInterrupt:
                        self.stop_requested = True
                if self.stop_requested:
                    checkpoint_position(step + 1)
                    raise Interrupted(self.run_dir, epoch + 1, step + 1)
                if cfg.max_steps is not None and state["global_step"] >= cfg.max_steps \
                        and step + 1 < len(slices):
                    checkpoint_position(step + 1)
                    self.log(f"stopped at max_steps={cfg.max_steps} (epoch {epoch + 1}, step "
                             f"{step + 1}); checkpoint saved")
                    return False
            self.flush(pending, sums, bar)
        finally:
            if bar is not None:
                bar.close()
        sums["seconds"] += time.perf_counter() - started
        self.end_epoch(epoch, sums)
        if self.stop_requested:
            if self.saved_at != (state["epoch"], state["global_step"]):
                self.save()
            raise Interrupted(self.run_dir, epoch + 1, len(slices))
        if cfg.max_steps is not None and state["global_step"] >= cfg.max_steps \
                and epoch + 1 < cfg.epochs:
            if self.saved_at != (state["epoch"], state["global_step"]):
                self.save()
            self.log(f"stopped at max_steps={cfg.max_steps} (end of epoch {epoch + 1}); "
                     "checkpoint saved")
            return False
        return True

    def end_epoch(self, epoch, sums):
        cfg, state = self.config, self.state
        seed = derive_seed(cfg.seed, "eval")
        test = evaluate_elbo(self.model, self.x_test, cfg.eval_batch_size,
                             default_rng(seed, self.xp), beta=1.0)
        val = (None if self.x_val is None
               else evaluate_elbo(self.model, self.x_val, cfg.eval_batch_size,
                                  default_rng(seed, self.xp), beta=1.0))
        for name, values in (("test", test), ("validation", val)):
            for term, value in (values or {}).items():
                if not math.isfinite(value):
                    self.diverged(epoch, len(self.batch_slices()), state["global_step"],
                                  f"{name} {term}", value)
        n = sums["n"]
        row = {"epoch": epoch + 1, "step": state["global_step"],
               "beta": self.beta_at(state["global_step"] - 1),
               "train_loss": sums["loss"] / n, "train_recon": sums["recon"] / n,
               "train_kl": sums["kl"] / n,
               "test_loss": test["loss"], "test_recon": test["recon"], "test_kl": test["kl"]}
        if val is not None:
            row.update(val_loss=val["loss"], val_recon=val["recon"], val_kl=val["kl"])
        row.update(seconds=round(sums["seconds"], 3),
                   examples_per_s=round(n / max(sums["seconds"], 1e-9), 1))
        state["metrics"].append(row)
        state.update(epoch=epoch + 1, step_in_epoch=0, partial=None, rng=None)
        write_metrics(self.run_dir / "metrics.csv", state["metrics"])
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            self.save()
        self.log(format_row(row, cfg.epochs))
        if cfg.figures:
            self.epoch_figures(epoch)

    # -- figures (npvae.plots is imported lazily: training works without it)

    def _plots(self):
        try:
            from . import plots
        except ImportError as err:
            if not getattr(self, "_warned_plots", False):
                self.log(f"figures skipped: npvae.plots is not available ({err})")
                self._warned_plots = True
            return None
        return plots

    def epoch_figures(self, epoch):
        plots = self._plots()
        if plots is None:
            return
        folder = self.run_dir / "figures"
        folder.mkdir(exist_ok=True)
        try:
            plots.plot_reconstructions(self.model, self.data.x_test[:FIGURE_EXAMPLES],
                                       folder / f"reconstructions_epoch{epoch + 1:03d}.png")
            rng = np.random.default_rng(derive_seed(self.config.seed, "figures"))
            plots.plot_samples(self.model, folder / f"samples_epoch{epoch + 1:03d}.png", rng)
        except Exception as err:  # a figure must never cost the run
            self.log(f"warning: epoch figures failed: {err!r}")

    def final_figures(self):
        if not self.config.figures:
            return
        plots = self._plots()
        if plots is None:
            return
        rng = np.random.default_rng(derive_seed(self.config.seed, "figures"))
        try:
            plots.save_all_figures(self.model, self.run_dir, self.data.x_test, self.data.y_test,
                                   self.state["metrics"], rng)
            self.log(f"figures written to {self.run_dir}")
        except Exception as err:  # a figure must never cost the run
            self.log(f"warning: figures failed: {err!r}")

    def result(self, completed):
        return TrainResult(self.run_dir, self.model, self.optimizer, self.state["metrics"],
                           self.state, completed)


def format_row(row, epochs):
    """The one-line summary of an epoch's metrics row."""
    line = (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
            f"(recon {row['train_recon']:.4f}, kl {row['train_kl']:.4f})  "
            f"test loss {row['test_loss']:.4f} (recon {row['test_recon']:.4f}, "
            f"kl {row['test_kl']:.4f})")
    if "val_loss" in row:
        line += f"  val loss {row['val_loss']:.4f}"
    return line + f"  {row['seconds']:.1f} s, {row['examples_per_s']:.0f} examples/s"
