"""The flags of ``npvae train``: one row per ``TrainConfig`` field, its argparse type and help.

``TRAIN_FLAGS`` is the table; ``add_train_flags`` puts it on a parser, and
``flag_name`` spells a field as its flag (``batch_size`` -> ``--batch-size``,
``figures`` -> ``--no-figures``). The types are ``npvae.flags``'; the choices
come from the modules that own them. Adding a training setting: a field of
``TrainConfig`` and a row here.
"""

from .activations import ACTIVATIONS
from .backend import BACKENDS
from .config import DTYPES, LR_SCHEDULES, TrainConfig
from .data import BINARIZE
from .flags import choice as _choice
from .flags import int_list as _int_list, non_negative_int, non_negative_number, positive_int
from .flags import positive_number, real, text as _text
from .iwae import OBJECTIVES
from .losses import LIKELIHOODS
from .presets import DEFAULT_PRESET, PRESETS
from .vq import UPDATES


def _flag(field, type, help, **options):
    return field, dict(type=type, help=help, **options)


# Every training setting's flag: (TrainConfig field, its argparse options). The choices come from
# the modules that own them; the defaults, shown in --help, from TrainConfig and the presets. An
# option left out (None) keeps the preset's value, so each flag overrides the preset.
TRAIN_FLAGS = (
    _flag("preset", _choice(PRESETS), "a starting point that the other flags override",
          metavar="PRESET"),
    _flag("epochs", positive_int, "number of epochs in all (with --resume: the new total)"),
    _flag("batch_size", positive_int, "examples per step"),
    _flag("lr", positive_number, "Adam's learning rate"),
    _flag("lr_schedule", _choice(LR_SCHEDULES), "constant, iwae (Burda et al.: 3^i epochs at "
          "lr*10^(-i/7), 3280 in all) or iwae-short (one epoch per stage)"),
    _flag("adam_eps", positive_number, "Adam's epsilon"),
    _flag("seed", non_negative_int, "seeds everything"),
    _flag("dtype", _choice(DTYPES), "float32 or float64"),
    _flag("backend", _choice(BACKENDS), "numpy or cupy"),
    _flag("beta", non_negative_number, "weight of the KL term (1 = the ELBO)"),
    _flag("warmup_epochs", non_negative_number, "raise beta linearly from 0 over this many "
          "epochs"),
    _flag("latent", positive_int, "latent dimensions"),
    _flag("hidden", _int_list, "encoder hidden sizes, e.g. 400 or 128,64 (the decoder mirrors "
          "them); with --preset conv or vqvae, the convolutions' channels"),
    _flag("activation", _choice(tuple(ACTIVATIONS)), ", ".join(ACTIVATIONS)),
    _flag("likelihood", _choice(LIKELIHOODS), " or ".join(LIKELIHOODS)),
    _flag("sigma", positive_number, "standard deviation of the gaussian likelihood"),
    _flag("binarize", _choice(BINARIZE), ", ".join(BINARIZE) + " (dynamic: a fresh Bernoulli "
          "sample of every training batch)"),
    _flag("objective", _choice(OBJECTIVES), "elbo (the k-sample ELBO, KL in closed form), "
          "elbo-sampled (KL sampled: Burda et al.'s VAE) or iwae (the importance-weighted bound)"),
    _flag("k", positive_int, "samples z per example in the objective"),
    _flag("conditional", None, "a conditional VAE: the digit label into encoder and decoder",
          action="store_const", const=True),
    _flag("embedding_dim", positive_int, "VQ-VAE: dimensions F of each code vector (default 16 "
          "in vqvae)", metavar="F"),
    _flag("n_codes", positive_int, "VQ-VAE: number N of codes (default 64 in vqvae)",
          metavar="N"),
    _flag("commitment", non_negative_number, "VQ-VAE: weight of the commitment loss (the "
          "paper's beta; default 0.25 in vqvae)"),
    _flag("codebook_update", _choice(UPDATES), "VQ-VAE: learn the codebook by the codebook "
          "loss's gradient or by moving averages (default gradient in vqvae)"),
    _flag("ema_decay", real(0, 1, what="a number in [0, 1)"), "VQ-VAE: decay of the moving "
          "averages (default 0.99 with --codebook-update ema)"),
    _flag("restart_every", non_negative_int, "VQ-VAE: every N steps, move the codes no "
          "position chose since the last restart onto encoder outputs; 0 = never (default 100 "
          "in vqvae)", metavar="N"),
    _flag("prior_epochs", non_negative_int, "VQ-VAE: epochs of the learned prior trained once "
          "the VQ-VAE is (default 10; 0 = none: train it later with npvae train-prior RUN)",
          metavar="N"),
    _flag("clip", positive_number, "clip the gradient's global norm to this"),
    _flag("validation", non_negative_int, "hold out this many training examples"),
    _flag("n_train", positive_int, "train on the first N training examples only", metavar="N"),
    _flag("n_test", positive_int, "evaluate on the first N test examples only", metavar="N"),
    _flag("data_dir", _text, "folder of the four MNIST-format files (default: the MNIST "
          "shipped with npvae)"),
    _flag("checkpoint_every", positive_int, "epochs between checkpoints", metavar="N"),
    _flag("max_steps", positive_int, "stop (with a checkpoint) after N steps in all",
          metavar="N"),
    _flag("progress", None, "no progress bar"),   # NEGATED: the flag is --no-progress
    _flag("figures", None, "no figures"),
)
NEGATED = ("progress", "figures")   # settings on by default: their flag is --no-NAME


def flag_name(field):
    """The command-line flag of a ``TrainConfig`` field (or of ``run_dir``, ``overwrite``)."""
    return f"--no-{field}" if field in NEGATED else f"--{field.replace('_', '-')}"


def _default(field, defaults):
    """``(default X)``, or ``(default: the preset's; X in pytorch-example)`` where presets set
    it; nothing for a setting that is off (None) by default."""
    value = getattr(defaults, field)
    value = ",".join(map(str, value)) if isinstance(value, tuple) else value
    if any(field in (*p["model"], *p["training"]) for p in PRESETS.values()):
        return f" (default: the preset's; {value} in {DEFAULT_PRESET})"
    return "" if value is None else f" (default {value})"


def add_train_flags(parser):
    """``TRAIN_FLAGS`` on ``parser``; a flag not given is None (the preset's value)."""
    defaults = TrainConfig.from_preset(DEFAULT_PRESET)
    for field, options in TRAIN_FLAGS:
        if field in NEGATED:
            parser.add_argument(flag_name(field), dest=field, action="store_false",
                                default=True, help=options["help"])
            continue
        options = {k: v for k, v in options.items() if v is not None}
        if "(default" not in options["help"]:
            options["help"] += _default(field, defaults)
        parser.add_argument(flag_name(field), dest=field, **options)
