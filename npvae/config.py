"""The configuration of a training run: ``TrainConfig`` and what a resume may change.

A run is defined by one ``TrainConfig``: the model (``npvae.VAE``'s
arguments), the data preprocessing, the optimiser and the loop. It is stored
in the run's ``config.json`` and in every checkpoint, so a run can be resumed
or evaluated from its folder alone.

Every random number of a run comes from its one ``seed``: see
``npvae.randomness``.
"""

from dataclasses import dataclass, fields

from .backend import get_xp
from .checks import is_int, number, positive_int
from .data import BINARIZE
from .errors import CheckpointError, ConfigError
from .iwae import OBJECTIVES, check_decoder_rows
from . import hvae
from .presets import DEFAULT_PRESET, get_preset
from .randomness import derive_seed

DTYPES = ("float32", "float64")
LR_SCHEDULES = ("constant", "iwae", "iwae-short")
N_CLASSES = 10  # labels of a conditional run: MNIST's digits

# The fields of ``TrainConfig`` that the model's constructor takes.
MODEL_FIELDS = ("architecture", "hidden", "decoder_hidden", "latent", "activation", "likelihood",
                "sigma", "init", "beta", "dtype")

# The settings a resumed run may change, because none of them changes the numbers. Every
# other setting comes from the checkpoint: ``check_resumable`` is the one rule.
RESUMABLE = ("epochs", "figures", "progress", "max_steps", "data_dir", "checkpoint_every")


def check_resumable(changes, name=str):
    """A ConfigError naming every setting in ``changes`` (None: not given) that a resumed run
    may not change; ``name`` spells a field for the message (the CLI passes its flags')."""
    refused = [name(k) for k, v in changes.items() if v is not None and k not in RESUMABLE]
    if refused:
        raise ConfigError(f"{', '.join(refused)} cannot be changed when resuming: a resumed "
                          f"run keeps the settings in its checkpoint (allowed: "
                          f"{', '.join(name(k) for k in RESUMABLE)})")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Build one with ``from_preset``.

    The model fields (``architecture`` ... ``init``) are ``npvae.VAE``'s arguments;
    ``x_dim`` comes from the data. ``beta`` weighs the KL; with
    ``warmup_epochs`` > 0 it rises linearly from 0, step by step, over that
    many epochs. ``binarize``: ``none`` (pixels in [0, 1]), ``dynamic`` (a
    fresh Bernoulli sample of each training batch; validation and test sets
    binarized once, with a fixed seed) or ``threshold`` (pixel > 0.5).
    ``validation`` > 0 holds out that many training examples. ``n_train`` and
    ``n_test`` keep only the first N training and test examples (None: all),
    for quick runs. ``clip`` is a maximum global gradient norm. ``max_steps``
    stops after that many steps in all (a checkpoint is saved there;
    ``resume`` continues).

    ``objective`` and ``k``: the k-sample ELBO ("elbo", k = 1 is the usual
    training; "elbo-sampled" with the KL sampled, Burda et al.'s VAE) or the
    importance-weighted bound ("iwae"; needs beta = 1 and no warm-up), see
    ``npvae.iwae``. ``conditional``: a conditional VAE on the
    digit labels (``npvae.cvae``). ``lr_schedule``: ``constant`` (``lr``
    throughout), ``iwae`` (Burda et al.: stage i = 0..7 lasts 3^i epochs at
    lr 10^(-i/7), 3,280 epochs in all) or ``iwae-short`` (the same eight
    learning rates, one epoch each). ``adam_eps``: Adam's epsilon.
    """

    preset: str = DEFAULT_PRESET
    architecture: str = "mlp"
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
    objective: str = "elbo"
    k: int = 1
    conditional: bool = False
    lr_schedule: str = "constant"
    adam_eps: float = 1e-8

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

    @classmethod
    def from_checkpoint(cls, checkpoint):
        """The training config stored in a ``Checkpoint``; None for one written outside the
        trainer. A stored config that is not one is a ``CheckpointError`` naming the file."""
        stored = checkpoint.state.get("train_config")
        if stored is None:
            return None
        try:
            return cls.from_dict(stored)
        except (TypeError, ConfigError) as err:
            raise CheckpointError(f"{checkpoint.path}: no usable training config in the "
                                  f"checkpoint ({err})") from err

    def validate(self):
        """Raise a one-line ``ConfigError`` naming the first bad setting; return self.

        The model's settings are checked by the model's own rules
        (``npvae.hvae.check_model_arguments``); the rest here.
        """
        get_preset(self.preset)
        if self.dtype not in DTYPES:  # (the model also takes NumPy types)
            raise ConfigError(f"dtype={self.dtype!r} is unknown; choose one of {', '.join(DTYPES)}")
        model = hvae.check_model_arguments(None, **{k: getattr(self, k) for k in MODEL_FIELDS})
        if hvae.is_hierarchical(self) and self.conditional:
            raise ConfigError("conditional=True needs one stochastic layer: a model with "
                              "several is not conditional")
        self.hidden, self.decoder_hidden = tuple(model["hidden"]), (
            None if self.decoder_hidden is None else tuple(model["decoder_hidden"]))
        for name in ("epochs", "batch_size", "checkpoint_every", "eval_batch_size"):
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
        number("warmup_epochs", self.warmup_epochs)
        if self.clip is not None:
            number("clip", self.clip, positive=True)
        if not isinstance(self.binarize, str) or self.binarize not in BINARIZE:
            raise ConfigError(f"binarize={self.binarize!r} is unknown; choose one of "
                              f"{', '.join(BINARIZE)}")
        get_xp(self.backend)  # unknown name, or CuPy missing: a ConfigError naming the fix
        for name, value, choices in (("objective", self.objective, OBJECTIVES),
                                     ("lr_schedule", self.lr_schedule, LR_SCHEDULES)):
            if not isinstance(value, str) or value not in choices:
                raise ConfigError(f"{name}={value!r} is unknown; choose one of {', '.join(choices)}")
        check_decoder_rows(positive_int("k", self.k), self.batch_size)
        if self.objective == "iwae" and (self.beta != 1 or self.warmup_epochs):
            raise ConfigError(f"the iwae objective has no KL weight: it needs beta=1 and "
                              f"warmup_epochs=0 (got beta={self.beta}, warmup_epochs="
                              f"{self.warmup_epochs})")
        if not isinstance(self.conditional, bool):
            raise ConfigError(f"conditional={self.conditional!r} must be true or false")
        number("adam_eps", self.adam_eps, positive=True)
        return self

    def lr_at(self, epoch):
        """The learning rate of ``epoch`` (from 0) under ``lr_schedule``.

        ``iwae``: stage i (i = 0, ..., 7) lasts 3^i epochs at lr 10^(-i/7),
        and the last rate continues after the 3,280 epochs; ``iwae-short``:
        stage i lasts one epoch.
        """
        if self.lr_schedule == "constant":
            return self.lr
        stage, end = 0, 1
        while epoch >= end and stage < 7:
            stage += 1
            end += 3**stage if self.lr_schedule == "iwae" else 1
        return self.lr * 10 ** (-stage / 7)

    def k_sample_objective(self):
        """``(objective, k)`` of a run; None when it is the model's own loss (elbo, k = 1)."""
        return None if (self.objective, self.k) == ("elbo", 1) else (self.objective, self.k)

    def model_kwargs(self, x_dim):
        """Arguments for ``npvae.VAE``: the model fields, ``x_dim``, the backend and the seed."""
        conditional = {"n_classes": N_CLASSES} if self.conditional else {}
        return dict(x_dim=x_dim, **{k: getattr(self, k) for k in MODEL_FIELDS}, **conditional,
                    backend=self.backend, seed=derive_seed(self.seed, "init"))

    def with_changes(self, **changes):
        """This config with some of the ``RESUMABLE`` settings changed (None: unchanged).

        Any other setting is a ConfigError (``check_resumable``): a resumed run
        keeps the settings that shape its numbers.
        """
        check_resumable(changes)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({k: v for k, v in changes.items() if v is not None})
        return TrainConfig(**values)
