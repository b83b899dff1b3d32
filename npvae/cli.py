"""The ``npvae`` command line: train, evaluate, sample, plot, gradcheck.

    npvae train                          # PyTorch's VAE example, 10 epochs
    npvae train --preset iwae --epochs 50
    npvae train --resume runs/iwae       # continue a run (after Ctrl-C, or for more epochs)
    npvae train --preset burda-iwae      # train on the importance-weighted bound, k = 5
    npvae train --preset cvae            # a conditional VAE; then: npvae sample RUN --digit 7
    npvae evaluate runs/pytorch-example --iw-samples 5000
    npvae sample runs/pytorch-example --n 64 --out samples.png
    npvae plot runs/pytorch-example
    npvae gradcheck --preset mlp-mse

Every error npvae can explain is one line, ``npvae: error: ...``, with exit
code 2; an interrupted training run exits with 130 after saving a checkpoint.
"""

import argparse
import difflib
import math
import os
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

from . import __version__, exercises
from .cvae import check_digit, is_conditional
from .errors import ConfigError, NpvaeError
from .gradcheck import DEFAULT_H, DEFAULT_TOL
from .presets import DEFAULT_PRESET, PRESETS, describe_presets

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


# Upper bounds of the flags whose size is memory (a sample grid, a checked batch).
MAX_SAMPLES = 10_000
MAX_GRADCHECK_BATCH = 10_000


# ---------------------------------------------------------------- every flag's check
#
# Each numeric and path flag is checked here, once, by its argparse type; a bad value is the
# one-line error ``npvae: error: argument --seed: -1 is not a non-negative integer``.


def _integer(low, high=None, what="a positive integer"):
    def check(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {what}" + (f" up to {high:,}" if high is not None else ""))
        return value
    check.__name__ = what  # (argparse names the type in some messages)
    return check


def _real(low, high=None, low_open=False, what="a positive number"):
    def check(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = (math.isfinite(value) and (value > low if low_open else value >= low)
              and (high is None or value < high))
        if not ok:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value
    check.__name__ = what
    return check


def _text(text):
    """A non-empty string (a path or a name)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value; name it")
    return text


def _int_list(text):
    """``"400"`` or ``"128,64"`` -> a tuple of ints (argparse type)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers, e.g. 400 or 128,64") from None


positive_int = _integer(1)
non_negative_int = _integer(0, what="a non-negative integer")
positive_number = _real(0, low_open=True, what="a positive finite number")
non_negative_number = _real(0, what="a non-negative finite number")
fraction = _real(0, 1, low_open=True, what="a number between 0 and 1 (exclusive)")


# ---------------------------------------------------------------- train


def cmd_train(args):
    from . import train as training
    from .config import RESUMABLE, TrainConfig

    settings = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                if hasattr(args, f.name)}
    settings.update(progress=not args.no_progress, figures=not args.no_figures)
    if args.resume is not None:
        given = _flags([name for name, value in settings.items()
                        if value is not None and name not in RESUMABLE])
        given += [flag for flag, value in (("--run-dir", args.run_dir),
                                           ("--overwrite", args.overwrite)) if value]
        if given:
            raise ConfigError(
                f"{', '.join(given)} cannot be combined with --resume: a resumed run keeps the "
                f"settings in its checkpoint (allowed: {', '.join(_flags(RESUMABLE))})")
        result = training.resume(args.resume, **settings)
    else:
        config = TrainConfig.from_preset(settings.pop("preset") or DEFAULT_PRESET, **settings)
        result = training.train(config, args.run_dir, overwrite=args.overwrite)
    if result.completed:
        print(f"done: {result.run_dir} ({result.state['epoch']} epochs, "
              f"{result.state['global_step']} steps)")
    else:
        print(f"paused: continue with: npvae train --resume {result.run_dir}")
    return 0


def _flags(names):
    """The command-line flags of ``TrainConfig`` fields."""
    negated = {"progress": "--no-progress", "figures": "--no-figures"}
    return [negated.get(name, f"--{name.replace('_', '-')}") for name in names]


# ---------------------------------------------------------------- loading a run


def _load_run(run, backend="numpy"):
    """``(model, checkpoint, run_dir)`` of a run folder or checkpoint file."""
    from .checkpoint import CHECKPOINT_NAME, model_from_checkpoint

    path = Path(run)
    if not path.exists():
        raise ConfigError(f"RUN={run!r}: no such run folder or checkpoint file")
    if path.is_dir() and not (path / CHECKPOINT_NAME).is_file():
        raise ConfigError(f"RUN={run!r}: the folder holds no {CHECKPOINT_NAME}")
    model, checkpoint = model_from_checkpoint(path, backend=backend)
    return model, checkpoint, path if path.is_dir() else path.parent


def _position(checkpoint):
    state = checkpoint.state
    if "epoch" not in state:
        return ""
    return f" (epoch {state['epoch']}, global step {state.get('global_step', '?')})"


# ---------------------------------------------------------------- evaluate


def cmd_evaluate(args):
    from . import evaluate
    from .data import run_test_data

    model, checkpoint, _ = _load_run(args.run)
    x, y = run_test_data(checkpoint, args.data_dir)
    if args.limit:
        x, y = x[:args.limit], y[:args.limit]
    y = y if is_conditional(model) else None  # a conditional model: log p(x | y)
    rng = np.random.default_rng(args.seed)
    print(f"run: {checkpoint.path}{_position(checkpoint)}")
    print(f"model: {model!r}")
    print(f"test examples: {len(x)}")
    terms = evaluate.evaluate_elbo(model, x, batch_size=args.batch_size, rng=rng, y=y)
    elbo = -(terms["recon"] + terms["kl"])  # beta = 1 whatever the model trained with
    print(f"test ELBO: {elbo:.4f} nats/example (recon {terms['recon']:.4f}, "
          f"kl {terms['kl']:.4f}; loss = -ELBO = {-elbo:.4f})")
    if args.iw_samples:
        desc = f"importance-weighted bound, k={args.iw_samples}"
        bar = None if args.no_progress else evaluate.ProgressBar(desc)
        try:
            bounds = evaluate.iw_bounds(model, x, args.iw_samples, rng, progress=bar,
                                        batch_size=max(1, min(args.batch_size, 100)), y=y)
        finally:
            if bar is not None:
                bar.close()
        bound = bounds.mean()
        print(f"{desc}: log p(x) >= {bound:.4f} nats/example (-log p(x) <= {-bound:.4f})")
        if args.limit and len(bounds) > 1:
            print(f"  standard error {bounds.std(ddof=1) / np.sqrt(len(bounds)):.4f} nats "
                  f"(the {len(bounds)} examples' bounds: standard deviation / sqrt({len(bounds)}))")
    kl = np.asarray(evaluate.kl_per_dim(model, x, batch_size=args.batch_size, y=y))
    active = evaluate.active_units(model, x, threshold=args.threshold,
                                   batch_size=args.batch_size, y=y)
    print(f"active units: {active} of {model.latent} (variance of mu over the data > "
          f"{args.threshold})")
    if hasattr(model, "latents"):   # several stochastic layers (npvae.hvae): each one's
        from .hvae import active_units_per_layer

        per_layer = active_units_per_layer(model, x, args.threshold, args.batch_size)
        print("active units per stochastic layer (h1 at the bottom): " + ", ".join(
            f"h{l + 1} {n} of {z}" for l, (n, z) in enumerate(zip(per_layer, model.latents))))
    print("KL per latent dimension (nats/example):")
    print(f"  {'dim':>4}  {'KL':>9}")
    for k in np.argsort(-kl, kind="stable"):
        print(f"  {k:>4}  {kl[k]:9.4f}")
    return 0


# ---------------------------------------------------------------- sample and plot


def cmd_sample(args):
    from . import plots

    model, checkpoint, run_dir = _load_run(args.run)
    check_digit(model, args.digit)
    name = "samples" if args.digit is None else f"samples_digit{args.digit}"
    out = Path(args.out) if args.out else run_dir / f"{name}_seed{args.seed}.png"
    plots.plot_samples(model, out, np.random.default_rng(args.seed), n=args.n, digit=args.digit)
    print(f"{args.n} samples{'' if args.digit is None else f' of digit {args.digit}'} "
          f"written to {out}")
    return 0


def cmd_plot(args):
    from . import plots
    from .data import run_test_data
    from .runs import read_metrics

    model, checkpoint, run_dir = _load_run(args.run)
    x_test, y_test = run_test_data(checkpoint, args.data_dir)
    metrics_path = run_dir / "metrics.csv"
    metrics = (read_metrics(metrics_path) if metrics_path.is_file()
               else checkpoint.state.get("metrics", []))
    plots.save_all_figures(model, run_dir, x_test, y_test, metrics,
                           np.random.default_rng(args.seed))
    print(f"figures written to {run_dir}")
    return 0


# ---------------------------------------------------------------- gradcheck


def cmd_gradcheck(args):
    from .config import N_CLASSES
    from .gradcheck import check_architecture, format_results, shrink_architecture
    from .presets import get_preset

    if args.run is not None:
        _, checkpoint, _ = _load_run(args.run)
        base = dict(checkpoint.model_config)
        source = str(checkpoint.path)
        training = checkpoint.state.get("train_config") or {}
    else:
        preset = get_preset(args.preset)
        base = {"x_dim": 784, **preset["model"]}
        training = preset["training"]
        if training.get("conditional"):
            base["n_classes"] = N_CLASSES
        source = f"preset {args.preset}"
    objective = args.objective or training.get("objective", "elbo")
    k = args.k or training.get("k", 1)
    for name in ("hidden", "latent", "activation", "likelihood"):
        if getattr(args, name) is not None:
            base[name] = getattr(args, name)
            if name == "hidden":
                base["decoder_hidden"] = None
    config = shrink_architecture(base, args.x_dim)
    h, tol = args.h, args.tol
    model, results = check_architecture(config, batch=args.batch, seed=args.seed, h=h, tol=tol,
                                        objective=objective, k=k)
    if args.x_dim < base["x_dim"]:
        sizes = ("channels" if config.get("architecture") == "conv" else
                 f"x_dim {base['x_dim']} -> {config['x_dim']}, hidden")
        print(f"gradient check of a shrunk copy of {source} (pass --x-dim {base['x_dim']} for "
              f"full size, slowly): {sizes} {list(base['hidden'])} -> {config['hidden']}, "
              f"latent {base['latent']} -> {config['latent']}")
    print(f"model: {model!r}, {model.theta.size} parameters; float64, batch {args.batch}, "
          f"h={h:g}, tol={tol:g}" + ("" if (objective, k) == ("elbo", 1)
                                     else f"; objective {objective}, k={k}"))
    print(format_results(results))
    return 0 if all(r.ok for r in results) else 1


# ---------------------------------------------------------------- the parser


class Parser(argparse.ArgumentParser):
    """argparse without prefix matching (``--epoch`` is not ``--epochs``), whose errors are
    ``ConfigError``s: one line, exit code 2, like every other error of npvae."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise ConfigError(message)


def _suggestion(parser, argv, message):
    """``"; did you mean --latent?"`` for an unrecognised flag close to one of the command's."""
    if "unrecognized arguments" not in message:
        return ""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = next((arg for arg in argv if arg in sub.choices), None)
    known = [flag for flag in (sub.choices[command] if command else parser)._option_string_actions
             if flag.startswith("--")]
    hints = []
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in known:
            close = difflib.get_close_matches(flag[2:], [k[2:] for k in known], n=1, cutoff=0.7)
            if close:
                hints.append(f"did you mean --{close[0]}?")
    return "; " + "; ".join(hints) if hints else ""


def build_parser():
    parser = Parser(
        prog="npvae", description="Variational autoencoders from scratch in NumPy: every "
        "gradient by hand. Losses are in nats per example (summed over pixels and latents).")
    parser.add_argument("--version", action="version", version=f"npvae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=Parser)

    p = sub.add_parser(
        "train", help="train a VAE (default: PyTorch's VAE example)",
        description="Train a VAE on MNIST (or any folder of MNIST-format IDX files). Flags "
        "override the preset. A run folder holds config.json, metrics.csv, checkpoint.npz and "
        "the figures; Ctrl-C saves a checkpoint, and --resume continues exactly.",
        epilog="presets:\n" + describe_presets(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=PRESETS, metavar="PRESET",
                   help=f"one of {', '.join(PRESETS)} (default {DEFAULT_PRESET})")
    p.add_argument("--epochs", type=positive_int,
                   help="number of epochs in all (with --resume: the new total)")
    p.add_argument("--batch-size", type=positive_int, help="examples per step")
    p.add_argument("--lr", type=positive_number, help="Adam's learning rate")
    p.add_argument("--seed", type=non_negative_int, help="seeds everything (default 0)")
    p.add_argument("--dtype", type=_text, help="float32 (default) or float64")
    p.add_argument("--backend", type=_text, help="numpy (default) or cupy")
    p.add_argument("--beta", type=non_negative_number,
                   help="weight of the KL term (1 = the ELBO)")
    p.add_argument("--warmup-epochs", type=non_negative_number,
                   help="raise beta linearly from 0 over this many epochs (default 0)")
    p.add_argument("--latent", type=positive_int, help="latent dimensions")
    p.add_argument("--hidden", type=_int_list, help="encoder hidden sizes, e.g. 400 or 128,64 "
                   "(the decoder mirrors them); with --preset conv, the convolutions' channels")
    p.add_argument("--activation", help="relu, leaky_relu, tanh, sigmoid or softplus")
    p.add_argument("--likelihood", help="bernoulli or gaussian")
    p.add_argument("--sigma", type=positive_number,
                   help="standard deviation of the gaussian likelihood")
    p.add_argument("--binarize", help="none, dynamic or threshold")
    p.add_argument("--validation", type=non_negative_int,
                   help="hold out this many training examples")
    p.add_argument("--n-train", type=positive_int, metavar="N",
                   help="train on the first N training examples only (default: all)")
    p.add_argument("--n-test", type=positive_int, metavar="N",
                   help="evaluate on the first N test examples only (default: all)")
    p.add_argument("--clip", type=positive_number,
                   help="clip the gradient's global norm to this")
    p.add_argument("--objective", help="elbo (default; the k-sample ELBO) or iwae (the "
                   "importance-weighted bound)")
    p.add_argument("--k", type=positive_int, help="samples z per example in the objective "
                   "(default 1)")
    p.add_argument("--conditional", action="store_const", const=True,
                   help="a conditional VAE: the digit label into encoder and decoder")
    p.add_argument("--lr-schedule", help="constant (default), iwae (Burda et al.: 3^i epochs "
                   "at lr*10^(-i/7), 3280 in all) or iwae-short (one epoch per stage)")
    p.add_argument("--adam-eps", type=positive_number, help="Adam's epsilon (default 1e-8)")
    p.add_argument("--data-dir", type=_text, help="folder of the four MNIST-format files "
                   "(default: the "
                   "MNIST shipped with npvae)")
    p.add_argument("--run-dir", type=_text, help="run folder (default runs/PRESET, or runs/PRESET-2, ... "
                   "if taken)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    p.add_argument("--resume", type=_text, metavar="RUN", help="continue the run in folder RUN")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                   help="epochs between checkpoints (default 1)")
    p.add_argument("--max-steps", type=positive_int, metavar="N",
                   help="stop (with a checkpoint) after N steps in all")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-figures", action="store_true", help="no figures")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test-set ELBO, IW bound, active units, KL per dimension",
                       description="Evaluate a trained run on its test set, preprocessed as "
                       "in training.")
    p.add_argument("run", type=_text, metavar="RUN", help="run folder or checkpoint file")
    p.add_argument("--iw-samples", type=non_negative_int, default=0, metavar="K",
                   help="importance samples for the IWAE bound on log p(x) (e.g. 5000; "
                   "default 0 = skip)")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="examples per batch")
    p.add_argument("--limit", type=positive_int,
                   help="evaluate only the first N test examples")
    p.add_argument("--threshold", type=non_negative_number, default=0.01,
                   help="a latent dimension is active when the variance of its encoder "
                   "mean over the test set exceeds this (Burda et al.; default 0.01)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seeds the evaluation noise")
    p.add_argument("--data-dir", type=_text, help="the data folder, if not the run's")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (on stderr) during the importance-weighted bound")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sample", help="decode samples from the prior into a PNG grid",
                       description="Draw z ~ N(0, I) and show the decoder's means.")
    p.add_argument("run", type=_text, metavar="RUN", help="run folder or checkpoint file")
    p.add_argument("--n", type=_integer(1, MAX_SAMPLES), default=64,
                   help=f"number of samples (default 64, at most {MAX_SAMPLES:,})")
    p.add_argument("--out", type=_text, help="PNG to write (default RUN/samples_seedSEED.png)")
    p.add_argument("--digit", type=non_negative_int,
                   help="draw this digit (conditional runs only)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seeds the samples")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("plot", help="draw every figure of a run",
                       description="Reconstructions, samples, learning curves, latent means, "
                       "manifold (2-D latents) and interpolations, from the checkpoint and "
                       "metrics.csv, into the run folder.")
    p.add_argument("run", type=_text, metavar="RUN", help="run folder or checkpoint file")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seeds the figures' randomness")
    p.add_argument("--data-dir", type=_text, help="the data folder, if not the run's")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("gradcheck", help="check every gradient against finite differences",
                       description="Build a float64 copy of an architecture (a preset's, or "
                       "RUN's) and compare every parameter gradient with central differences. "
                       "By default the copy is shrunk to --x-dim 20 pixels, its hidden sizes "
                       "scaled alike (at least 8) and its latents capped at 4, so it runs in "
                       "seconds; the depth, activation and likelihood are kept. Biases get small "
                       "random values, so no ReLU sits exactly at its kink. A conv model keeps its "
                       "28x28 pixels and scales its channels instead (at least 2). Exit 1 if a check "
                       "fails.")
    p.add_argument("run", type=_text, metavar="RUN", nargs="?",
                   help="run folder or checkpoint file")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=PRESETS, metavar="PRESET",
                   help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--hidden", type=_int_list, help="hidden sizes before shrinking, e.g. 128,64")
    p.add_argument("--latent", type=positive_int, help="latent dimensions before shrinking")
    p.add_argument("--activation", help="relu, leaky_relu, tanh, sigmoid or softplus")
    p.add_argument("--likelihood", help="bernoulli or gaussian")
    p.add_argument("--objective", help="elbo or iwae (default: the preset's or run's)")
    p.add_argument("--k", type=positive_int,
                   help="samples per example (default: the preset's or run's)")
    p.add_argument("--x-dim", type=positive_int, default=20,
                   help="pixels of the copy (default 20; the full size is slow)")
    p.add_argument("--batch", type=_integer(1, MAX_GRADCHECK_BATCH), default=3,
                   help="examples in the checked batch")
    p.add_argument("--h", type=fraction, default=DEFAULT_H,
                   help=f"finite-difference step, in (0, 1) (default {DEFAULT_H:g})")
    p.add_argument("--tol", type=fraction, default=DEFAULT_TOL,
                   help=f"largest relative error that passes, in (0, 1): a relative error is "
                   f"at most 1, so 1 or more could not fail (default {DEFAULT_TOL:g})")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seeds the weights, data and noise")
    p.set_defaults(func=cmd_gradcheck)
    from .explore import add_parser as add_explore_parser  # npvae explore RUN: npvae/explore.py
    add_explore_parser(sub)

    exercises.add_parser(sub)
    return parser


def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


def main(argv=None):
    """Run the command line; return its exit code.

    0 success, 1 a gradient check failed, 2 an error (one line on stderr),
    130 interrupted by Ctrl-C (a training run saves a checkpoint first).
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 2)
    except ConfigError as err:
        print(f"npvae: error: {_one_line(err)}{_suggestion(parser, argv, str(err))} "
              f"(see npvae {' '.join(a for a in argv[:1] if not a.startswith('-'))} --help)"
              .replace("  --help", " --help"), file=sys.stderr)
        return EXIT_ERROR
    try:
        return args.func(args)
    except NpvaeError as err:
        print(f"npvae: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. `npvae evaluate RUN | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt as err:
        from .train import Interrupted

        sys.stdout.flush()
        if isinstance(err, Interrupted):
            print(f"npvae: {err}; continue with: npvae train --resume {err.run_dir}",
                  file=sys.stderr)
        else:
            print("npvae: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
