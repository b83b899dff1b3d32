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
from .checks import is_int, number, one_of, positive_int
from .data import BINARIZE
from .errors import CheckpointError, ConfigError
from .iwae import OBJECTIVES, check_decoder_rows
from . import hvae, vq, vqvae
from .presets import DEFAULT_PRESET, get_preset
from .randomness import derive_seed

DTYPES = ("float32", "float64")
LR_SCHEDULES = ("constant", "iwae", "iwae-short")
N_CLASSES = 10  # labels of a conditional run: MNIST's digits

# The fields of ``TrainConfig`` that the model's constructor takes.
MODEL_FIELDS = ("architecture", "hidden", "decoder_hidden", "latent", "activation", "likelihood",
                "sigma", "init", "beta", "dtype")

# The fields of a VQ-VAE (``architecture="vqvae"``, ``npvae.vqvae``) that no other model has.
VQ_FIELDS = ("embedding_dim", "n_codes", "commitment", "codebook_update", "ema_decay",
             "restart_every", "prior_epochs")
# What a VQ-VAE refuses of the other models' settings, and why (None and the default: accepted).
NOT_VQ = {"latent": (None, "its latents are the grid of embedding_dim-dimensional vectors; set "
                           "embedding_dim and n_codes"),
          "sigma": (None, "its likelihood is bernoulli, without a sigma"),
          "beta": (None, "it has no KL to weigh; its commitment weight is commitment"),
          "warmup_epochs": (0, "it has no KL to warm up"),
          "objective": ("elbo", "it is trained on its own loss (recon + codebook + commitment), "
                                "not on an ELBO"),
          "k": (1, "its codes are not sampled: there are no k samples to draw"),
          "conditional": (False, "it is not conditional")}
DEFAULT_EMA_DECAY = 0.99   # gamma of the moving averages (the paper's appendix; Sonnet's)
DEFAULT_PRIOR_EPOCHS = 10  # the learned prior's, as npvae.prior.DEFAULTS (a test checks they agree)

# The fields of ``TrainConfig`` that ``npvae.vqvae.VQVAE`` takes under the same names.
VQ_MODEL_FIELDS = ("hidden", "decoder_hidden", "embedding_dim", "n_codes", "activation",
                   "likelihood", "init", "dtype")

# The settings a resumed run may change, because none of them changes the numbers. Every
# other setting comes from the checkpoint: ``check_resumable`` is the one rule.
RESUMABLE = ("epochs", "figures", "progress", "max_steps", "data_dir", "checkpoint_every",
             "prior_epochs")


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

    A VQ-VAE (``architecture="vqvae"``, preset ``vqvae``; ``npvae.vqvae``)
    takes ``hidden`` as its convolutions' channels and the ``VQ_FIELDS``:
    ``embedding_dim`` (F) and ``n_codes`` (N) of the codebook, ``commitment``
    (the commitment loss's weight, the paper's beta), ``codebook_update``
    (``gradient`` or ``ema``), ``ema_decay`` (``ema`` only; default 0.99) and
    ``restart_every`` (every that many steps, the codes no position chose
    since the last restart move onto encoder outputs; 0: never) and
    ``prior_epochs`` (the learned prior's epochs once the VQ-VAE is trained,
    ``npvae.prior``; default 10; 0: no prior, ``npvae train-prior RUN``
    trains one later). Those are
    None for the other models, and a VQ-VAE refuses their settings (``NOT_VQ``).
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
    embedding_dim: int = None
    n_codes: int = None
    commitment: float = None
    codebook_update: str = None
    ema_decay: float = None
    restart_every: int = None
    prior_epochs: int = None

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
        model = check_vq_settings(self) or hvae.check_model_arguments(
            None, **{k: getattr(self, k) for k in MODEL_FIELDS})
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

    def is_vq(self):
        """Whether the run trains a VQ-VAE (``npvae.vqvae``)."""
        return self.architecture == "vqvae"

    def k_sample_objective(self):
        """``(objective, k)`` of a run; None when it is the model's own loss (elbo, k = 1)."""
        return None if (self.objective, self.k) == ("elbo", 1) else (self.objective, self.k)

    def model_kwargs(self, x_dim):
        """Arguments for ``npvae.VAE``: the model fields, ``x_dim``, the backend and the seed."""
        if self.is_vq():
            return dict(x_dim=x_dim, **{k: getattr(self, k) for k in VQ_MODEL_FIELDS},
                        beta=self.commitment, update=self.codebook_update,
                        **({} if self.ema_decay is None else {"decay": self.ema_decay}),
                        backend=self.backend, seed=derive_seed(self.seed, "init"))
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


def check_vq_settings(config):
    """A ``TrainConfig``'s settings as ``TrainConfig.validate`` checks them: the VQ-VAE's model
    arguments (``npvae.vqvae.check_arguments``) and the ``VQ_FIELDS``, normalised (``ema_decay``
    set to its default under EMA updates), or a one-line ConfigError. Without
    ``architecture="vqvae"``, a ConfigError for any VQ field that is set."""
    if not config.is_vq():
        for name in VQ_FIELDS:
            if getattr(config, name) is not None:
                raise ConfigError(f"{name}={getattr(config, name)!r} is a VQ-VAE setting (preset "
                                  f"vqvae); the {config.architecture} VAE has no codebook")
        return None
    for name, (accepted, why) in NOT_VQ.items():
        value = getattr(config, name)
        if value is not None and value != accepted:
            raise ConfigError(f"{name}={value!r} does not apply to a VQ-VAE: {why}")
    missing = [name for name in VQ_FIELDS if name not in ("ema_decay", "prior_epochs")
               and getattr(config, name) is None]
    if missing:
        raise ConfigError(f"a VQ-VAE needs {', '.join(missing)} (preset vqvae sets them)")
    number("commitment", config.commitment)
    one_of("codebook_update", config.codebook_update, vq.UPDATES)
    if config.ema_decay is not None and number("ema_decay", config.ema_decay) >= 1:
        raise ConfigError(f"ema_decay={config.ema_decay!r} must be in [0, 1)")
    if not is_int(config.restart_every) or config.restart_every < 0:
        raise ConfigError(f"restart_every={config.restart_every!r} must be a non-negative integer "
                          "(steps between dead-code restarts; 0 = never)")
    if config.prior_epochs is None:
        config.prior_epochs = DEFAULT_PRIOR_EPOCHS
    elif not is_int(config.prior_epochs) or config.prior_epochs < 0:
        raise ConfigError(f"prior_epochs={config.prior_epochs!r} must be a non-negative integer "
                          "(epochs of the learned prior after the VQ-VAE; 0 = none)")
    if config.codebook_update == "ema" and config.ema_decay is None:
        config.ema_decay = DEFAULT_EMA_DECAY
    elif config.codebook_update != "ema" and config.ema_decay is not None:
        raise ConfigError(f"ema_decay={config.ema_decay!r} applies to codebook_update='ema' only "
                          f"(this run's is {config.codebook_update!r})")
    return vqvae.check_arguments(
        None, config.hidden, decoder_hidden=config.decoder_hidden,
        embedding_dim=config.embedding_dim, n_codes=config.n_codes, beta=config.commitment,
        update=config.codebook_update, decay=DEFAULT_EMA_DECAY if config.ema_decay is None
        else config.ema_decay, activation=config.activation, likelihood=config.likelihood,
        init=config.init, dtype=config.dtype)
