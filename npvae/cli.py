"""The ``npvae`` command line: every command's parser, its flags' checks and its exit code.

    npvae train                          # PyTorch's VAE example, 10 epochs
    npvae train --preset iwae --epochs 50
    npvae train --resume runs/iwae       # continue a run (after Ctrl-C, or for more epochs)
    npvae train --preset burda-iwae      # train on the importance-weighted bound, k = 5
    npvae train --preset cvae            # a conditional VAE; then: npvae sample RUN --digit 7
    npvae evaluate runs/pytorch-example --iw-samples 5000
    npvae sample runs/pytorch-example --n 64 --out samples.png
    npvae plot runs/pytorch-example
    npvae gradcheck --preset mlp-mse
    npvae explore runs/pytorch-example   # a window: move through the latent plane

Exit codes (``EXIT``): 0 success; 1 a gradient check failed (or stdout was
closed early, as by ``| head``); 2 an error, told in one line
``npvae: error: ...`` on stderr; 130 interrupted by Ctrl-C (a training run
saves a checkpoint first).

Adding a command: a ``cmd_NAME(args)`` that returns an exit code, and a block
in ``build_parser`` that adds its parser with checked flag types (``npvae.flags``).
Adding a training setting: a field of ``TrainConfig`` and a row of
``npvae.trainflags.TRAIN_FLAGS``.
"""

import argparse
import difflib
import os
import sys
from pathlib import Path

import numpy as np

from . import __version__, threads
from .activations import ACTIVATIONS
from .config import RESUMABLE, TrainConfig, check_resumable
from .atomic import check_picture_path
from .cvae import check_digit, is_conditional
from .errors import ConfigError, NpvaeError
from .flags import choice as _choice
from .flags import fraction, int_list as _int_list, integer as _integer, non_negative_int
from .flags import non_negative_number, positive_int, positive_number, text as _text
from .gradcheck import DEFAULT_H, DEFAULT_TOL
from .iwae import OBJECTIVES
from .losses import LIKELIHOODS
from .presets import DEFAULT_PRESET, PRESETS, describe_presets
from .progress import Interrupted, ProgressBar
from .runs import open_run, run_test_data
from .trainflags import TRAIN_FLAGS, add_train_flags, flag_name
from .vqvae import is_vq

EXIT = {"ok": 0, "failed": 1, "error": 2, "interrupted": 130}  # see the module docstring


# Upper bounds of the flags whose size is memory (a sample grid, a checked batch).
MAX_SAMPLES = 10_000
MAX_GRADCHECK_BATCH = 10_000


# ---------------------------------------------------------------- train


def cmd_train(args):
    from . import train as training

    settings = {field: getattr(args, field) for field, _ in TRAIN_FLAGS}
    if args.resume is not None:
        check_resumable({**settings, "run_dir": args.run_dir, "overwrite": args.overwrite or None},
                        name=flag_name)
        result = training.resume(args.resume, **settings)
    else:
        config = TrainConfig.from_preset(settings.pop("preset") or DEFAULT_PRESET, **settings)
        result = training.train(config, args.run_dir, overwrite=args.overwrite)
    if result.completed:
        print(f"done: {result.run_dir} ({result.state['epoch']} epochs, "
              f"{result.state['global_step']} steps)")
    else:
        print(f"paused: continue with: npvae train --resume {result.run_dir}")
    return EXIT["ok"]


def _position(checkpoint):
    state = checkpoint.state
    if "epoch" not in state:
        return ""
    return f" (epoch {state['epoch']}, global step {state.get('global_step', '?')})"


# ---------------------------------------------------------------- evaluate


def cmd_evaluate(args):
    from . import evaluate

    model, checkpoint, _ = open_run(args.run)
    x, y = run_test_data(checkpoint, args.data_dir)
    if args.limit:
        x, y = x[:args.limit], y[:args.limit]
    y = y if is_conditional(model) else None  # a conditional model: log p(x | y)
    vq = is_vq(model.config)
    if args.iw_samples and vq:
        raise ConfigError(f"--iw-samples {args.iw_samples}: a VQ-VAE has no importance-weighted "
                          "bound on log p(x): its encoder picks each code, it samples no z, so "
                          "there is no ELBO to tighten (evaluate reports its loss terms)")
    if args.iw_samples:
        evaluate.check_iw_work(model, args.iw_samples, len(x))   # before any output
    rng = np.random.default_rng(args.seed)
    print(f"run: {checkpoint.path}{_position(checkpoint)}")
    print(f"model: {model!r}")
    print(f"test examples: {len(x)}")
    if vq:
        print(evaluate.vq_report(model, x, args.batch_size))
        return EXIT["ok"]
    terms = evaluate.evaluate_elbo(model, x, batch_size=args.batch_size, rng=rng, y=y)
    elbo = -(terms["recon"] + terms["kl"])  # beta = 1 whatever the model trained with
    print(f"test ELBO: {elbo:.4f} nats/example (recon {terms['recon']:.4f}, "
          f"kl {terms['kl']:.4f}; loss = -ELBO = {-elbo:.4f})")
    if args.iw_samples:
        desc = f"importance-weighted bound, k={args.iw_samples}"
        bar = None if args.no_progress else ProgressBar(desc)
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
    print("KL per latent dimension (nats/example; z_1 is the first, as on the figures):")
    print(f"  {'dim':>4}  {'KL':>9}")
    for k in np.argsort(-kl, kind="stable"):
        print(f"  {'z_' + str(k + 1):>4}  {kl[k]:9.4f}")
    return EXIT["ok"]


# ---------------------------------------------------------------- sample and plot


def cmd_sample(args):
    from . import plots

    model, checkpoint, run_dir = open_run(args.run)
    check_digit(model, args.digit)
    if is_vq(model.config):   # a VQ-VAE: samples come from its learned prior
        return sample_vq(args, model, run_dir)
    name = "samples" if args.digit is None else f"samples_digit{args.digit}"
    out = check_picture_path(Path(args.out) if args.out else run_dir / f"{name}_seed{args.seed}.png")
    plots.plot_samples(model, out, np.random.default_rng(args.seed), n=args.n, digit=args.digit)
    print(f"{args.n} samples{'' if args.digit is None else f' of digit {args.digit}'} "
          f"written to {out}")
    return EXIT["ok"]


def cmd_plot(args):
    from . import plots
    from .runs import read_metrics

    model, checkpoint, run_dir = open_run(args.run)
    x_test, y_test = run_test_data(checkpoint, args.data_dir)
    metrics_path = run_dir / "metrics.csv"
    metrics = (read_metrics(metrics_path) if metrics_path.is_file()
               else checkpoint.state.get("metrics", []))
    paths = plots.save_all_figures(model, run_dir, x_test, y_test, metrics,
                                   np.random.default_rng(args.seed))
    print(plots.written(paths, run_dir))
    if is_vq(model.config) and not any(Path(p).name == "samples.png" for p in paths):
        print(f"no samples.png: it needs the run's learned prior; train it with: npvae "
              f"train-prior {args.run}")
    return EXIT["ok"]


# ---------------------------------------------------------------- a VQ-VAE's learned prior and
# figures (npvae/prior.py, npvae/vqplots.py)


def cmd_train_prior(args):
    from . import prior

    made, metrics, path = prior.train_prior_for_run(
        args.run, data_dir=args.data_dir, hidden=args.hidden, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, seed=args.seed, show_progress=not args.no_progress)
    nll = metrics[-1]["test_nll"]
    print(f"prior written to {path} (test nll {nll:.2f} nats per grid, "
          f"{prior.bits_per_code(nll, made.n_positions):.3f} bits per code); draw digits with: "
          f"npvae sample {args.run}")
    return EXIT["ok"]


def sample_vq(args, model, run_dir):
    """``npvae sample`` on a VQ-VAE run: code grids from RUN/prior.npz, decoded."""
    from .prior import open_prior
    from .vqplots import plot_prior_samples

    out = check_picture_path(Path(args.out) if args.out
                             else run_dir / f"samples_seed{args.seed}.png")
    made, _ = open_prior(run_dir, model)
    plot_prior_samples(model, made, out, np.random.default_rng(args.seed), n=args.n)
    print(f"{args.n} samples written to {out} (code grids drawn from the prior in "
          f"{run_dir / 'prior.npz'}, decoded)")
    return EXIT["ok"]


def add_prior_parser(sub):
    """``npvae train-prior RUN``: the learned prior of a VQ-VAE run (npvae/prior.py)."""
    from .prior import DEFAULTS

    p = sub.add_parser("train-prior", help="train the learned prior over a VQ-VAE run's codes",
                       description="Fit a MADE to the code grids of the run's images, "
                       "printing -log p(codes) per epoch; RUN/prior.npz is written once "
                       "training ends, and npvae sample RUN then draws new digits.")
    p.add_argument("run", type=_text, metavar="RUN", help="VQ-VAE run folder or checkpoint file")
    p.add_argument("--epochs", type=positive_int, default=DEFAULTS["epochs"],
                   help=f"passes over the training codes (default {DEFAULTS['epochs']})")
    p.add_argument("--hidden", type=_int_list, default=DEFAULTS["hidden"],
                   help="the masked hidden layers' widths, each at least the grid's positions "
                   f"- 1 (default {','.join(map(str, DEFAULTS['hidden']))})")
    p.add_argument("--lr", type=positive_number, default=DEFAULTS["lr"],
                   help=f"Adam's learning rate (default {DEFAULTS['lr']:g})")
    p.add_argument("--batch-size", type=positive_int, help="code grids per step (default "
                   f"{DEFAULTS['batch_size']}, or all of them if fewer)")
    p.add_argument("--seed", type=non_negative_int, default=DEFAULTS["seed"],
                   help="seeds the prior's weights and shuffles")
    p.add_argument("--data-dir", type=_text, help="the data folder, if not the run's")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (on stderr)")
    p.set_defaults(func=cmd_train_prior)
    threads.add_threads_flag(sub, ("train-prior",))


# ---------------------------------------------------------------- gradcheck


def cmd_gradcheck(args):
    from .gradcheck import (check_architecture, format_results, preset_architecture, quiet_until,
                            shrink_architecture, shrunk_sizes)

    if args.run is not None:
        _, checkpoint, _ = open_run(args.run)
        base = dict(checkpoint.model_config)
        source = str(checkpoint.path)
        training = checkpoint.state.get("train_config") or {}
    else:
        base, objective, k = preset_architecture(args.preset)
        training = {"objective": objective, "k": k}
        source = f"preset {args.preset}"
    objective = args.objective if args.objective is not None else training.get("objective", "elbo")
    k = args.k if args.k is not None else training.get("k", 1)
    for name in ("hidden", "latent", "activation", "likelihood"):
        if getattr(args, name) is not None:
            base[name] = getattr(args, name)
            if name == "hidden":
                base["decoder_hidden"] = None
    config = shrink_architecture(base, args.x_dim)
    h, tol = args.h, args.tol
    bar = ProgressBar("gradient check", unit="entry")   # shown only if the check takes a while
    try:
        model, results = check_architecture(config, batch=args.batch, seed=args.seed, h=h, tol=tol,
                                            objective=objective, k=k, progress=quiet_until(bar))
    finally:
        bar.close()
    if args.x_dim < base["x_dim"]:
        print(f"gradient check of a shrunk copy of {source} (pass --x-dim {base['x_dim']} for "
              f"full size, slowly): {shrunk_sizes(base, config)}")
    print(f"model: {model!r}, {model.theta.size} parameters; float64, batch {args.batch}, "
          f"h={h:g}, tol={tol:g}" + ("" if (objective, k) == ("elbo", 1)
                                     else f"; objective {objective}, k={k}"))
    print(format_results(results))
    return EXIT["ok"] if all(r.ok for r in results) else EXIT["failed"]


# ---------------------------------------------------------------- explore


def cmd_explore(args):
    from .explore import open_explorer

    if args.out:
        check_picture_path(args.out)   # before the work: never over a run's files or a folder
    model, checkpoint, _ = open_run(args.run)
    if is_vq(model.config):
        raise ConfigError(f"{args.run}: a VQ-VAE run; npvae explore moves through a continuous "
                          "latent space, and a VQ-VAE's codes are discrete")
    x_test, y_test = run_test_data(checkpoint, args.data_dir)
    message = open_explorer(model, x_test[:args.n], y_test[:args.n], n_sliders=args.sliders,
                            digit=args.digit, out=args.out)
    if message:
        print(message)
    return EXIT["ok"]


# ---------------------------------------------------------------- export and import (npvae/export.py)


def cmd_export(args):
    from .export import export_run, layout, load_into

    config = export_run(args.run, args.file, overwrite=args.overwrite)
    print(f"{args.run} exported to {args.file} ({layout(config)} layout: "
          "safetensors.torch.load_file, "
          f"then load_state_dict(..., strict=True) into {load_into(config)})")
    return 0


def cmd_import(args):
    from .export import import_run

    run_dir = import_run(args.file, args.run_dir, overwrite=args.overwrite)
    print(f"{args.file} imported into {run_dir} (npvae evaluate, sample, plot and explore read it)")
    return 0


def add_export_parsers(sub):
    """``npvae export RUN FILE`` and ``npvae import FILE [--run-dir DIR]``."""
    p = sub.add_parser("export", help="write a run's weights as safetensors for PyTorch",
                       description="Write RUN's weights to FILE (.safetensors) under PyTorch's "
                       "state_dict names, the model's config in its metadata. A pytorch-example "
                       "run loads into PyTorch's examples/vae/main.py VAE as published; other "
                       "models into the modules of benchmarks/torch_models.py. Needs the "
                       "safetensors package (pip install \"npvae[export]\").")
    p.add_argument("run", type=_text, metavar="RUN", help="run folder or checkpoint file")
    p.add_argument("file", type=_text, metavar="FILE", help="the .safetensors file to write")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("import", help="make a run folder from a safetensors file",
                       description="Read FILE (an npvae export, or the state_dict of PyTorch's "
                       "VAE example saved with safetensors), checking its header and sizes "
                       "before any data, and write a run folder that evaluate, sample, plot "
                       "and explore read.")
    p.add_argument("file", type=_text, metavar="FILE", help="the .safetensors file to read")
    p.add_argument("--run-dir", type=_text, help="a new or empty folder (default runs/NAME, "
                   "NAME the file's, or runs/NAME-2, ... if taken)")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --run-dir (only "
                   "once FILE has been read and checked whole)")
    p.set_defaults(func=cmd_import)


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
    add_train_flags(p)
    p.add_argument("--run-dir", type=_text, help="run folder (default runs/PRESET, or runs/PRESET-2, ... "
                   "if taken)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    p.add_argument("--resume", type=_text, metavar="RUN", help="continue the run in folder RUN "
                   f"(which may change only {', '.join(map(flag_name, RESUMABLE))})")
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
                       description="Draw z ~ N(0, I) and show the decoder's means (a VQ-VAE "
                       "run: code grids drawn from its learned prior, RUN/prior.npz, decoded).")
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
                       "metrics.csv, into the run folder. A VQ-VAE run: reconstructions with "
                       "their codes, samples from its prior, codebook usage, codes in context.")
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
    p.add_argument("--preset", default=DEFAULT_PRESET, type=_choice(PRESETS), metavar="PRESET",
                   help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--hidden", type=_int_list, help="hidden sizes before shrinking, e.g. 128,64")
    p.add_argument("--latent", type=positive_int, help="latent dimensions before shrinking")
    p.add_argument("--activation", type=_choice(tuple(ACTIVATIONS)), help=", ".join(ACTIVATIONS))
    p.add_argument("--likelihood", type=_choice(LIKELIHOODS), help=" or ".join(LIKELIHOODS))
    p.add_argument("--objective", type=_choice(OBJECTIVES),
                   help=f"{' or '.join(OBJECTIVES)} (default: the preset's or run's)")
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

    from .explore import N_DIGITS, N_SLIDERS
    p = sub.add_parser(
        "explore", help="move through a trained model's latent space and watch the decoded digit",
        description="Open a window: the encoder means of test digits on the latent plane of "
        "latents.png (click or drag to move z), decode(z) beside it, and sliders for the most "
        "active latent dimensions (by KL per dimension). Without a screen, --out writes a still.")
    p.add_argument("run", type=_text, metavar="RUN", help="run folder or checkpoint file")
    p.add_argument("--n", type=positive_int, default=N_DIGITS,
                   help="draw the first N test digits (default: all of the run's, as latents.png)")
    p.add_argument("--sliders", type=non_negative_int, default=N_SLIDERS,
                   help=f"sliders for the most active dimensions (default {N_SLIDERS})")
    p.add_argument("--data-dir", type=_text, help="the data folder, if not the run's")
    p.add_argument("--out", type=_text, help="write the explorer as a PNG instead of opening "
                   "a window")
    p.add_argument("--digit", type=non_negative_int,
                   help="the digit decoded (conditional runs only; default 0)")
    p.set_defaults(func=cmd_explore)


    add_exercises_parser(sub)
    add_export_parsers(sub)
    add_prior_parser(sub)
    threads.add_threads_flag(sub)  # --threads N on train, evaluate, gradcheck: npvae/threads.py
    return parser


# ---------------------------------------------------------------- exercises


def cmd_exercises(args):
    from .exercises import grading

    if args.exercises_command == "list":
        return grading.list_exercises()
    return grading.check(args.names, folder=args.dir, file=args.file,
                         show_solution=args.show_solution, timeout=args.timeout)


def add_exercises_parser(sub):
    """``npvae exercises list`` and ``npvae exercises check``: the grader (npvae/exercises/)."""
    from .exercises import DEFAULT_TIMEOUT

    top = sub.add_parser("exercises", help="write a backward yourself; have it graded",
                         description="Exercises: write each hand-derived piece yourself in "
                         "tutorials/exercises/, and have it graded against npvae and finite "
                         "differences.")
    top.set_defaults(func=cmd_exercises)
    commands = top.add_subparsers(dest="exercises_command", metavar="{list,check}", required=True)
    commands.add_parser("list", help="the exercises, in the order of the tutorials")
    p = commands.add_parser(
        "check", help="grade your exercise files",
        description="Grade the exercise files (default: every file in tutorials/exercises/): a "
        "line per tensor, 'ok' with its relative error, 'not implemented yet', or what is wrong. "
        "Your code runs in a process of its own, with a time limit; your files are only read. "
        "Exit 0 if all are right, 1 if not, 2 on a usage error.")
    p.add_argument("names", nargs="*", metavar="NAME", help="exercises to grade (default: all)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--dir", type=_text, help="folder of exercise files (default tutorials/exercises)")
    where.add_argument("--file", type=_text,
                       help="grade this one file (its exercise from its name, or NAME)")
    p.add_argument("--timeout", type=positive_number, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"time limit for each exercise file (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--show-solution", action="store_true",
                   help="print a solution of NAME that passes, instead of grading")


def _one_line(err):
    """An error's message on one line (its whitespace runs made single spaces)."""
    return " ".join(str(err).split()) or type(err).__name__


def main(argv=None):
    """Run the command line; return its exit code (``EXIT``, see the module docstring)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version
        return exit.code if isinstance(exit.code, int) else (
            EXIT["ok"] if exit.code is None else EXIT["error"])
    except ConfigError as err:
        print(f"npvae: error: {_one_line(err)}{_suggestion(parser, argv, str(err))} "
              f"(see npvae {' '.join(a for a in argv[:1] if not a.startswith('-'))} --help)"
              .replace("  --help", " --help"), file=sys.stderr)
        return EXIT["error"]
    try:
        return args.func(args)
    except NpvaeError as err:
        print(f"npvae: error: {_one_line(err)}", file=sys.stderr)
        return EXIT["error"]
    except BrokenPipeError:  # e.g. `npvae evaluate RUN | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT["failed"]
    except KeyboardInterrupt as err:
        sys.stdout.flush()
        if isinstance(err, Interrupted):
            print(f"npvae: {err}; continue with: npvae train --resume {err.run_dir}",
                  file=sys.stderr)
        else:
            print("npvae: interrupted", file=sys.stderr)
        return EXIT["interrupted"]
