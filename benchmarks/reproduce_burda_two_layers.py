"""Burda et al.'s Table 1, both halves: one and two stochastic layers, VAE and IWAE, at equal k.

The two-layer rows beside the one-layer ones of ``reproduce_burda.py`` (whose
evaluation this uses: the bound with ``--eval-k`` samples per digit, its
standard error, every digit's bound kept in ``RUN/iw_bounds_k{K}.npy``). For
each k of ``--ks`` it trains ``burda-vae``, ``burda-iwae`` (784-200-200-50)
and ``burda2-vae``, ``burda2-iwae`` (784-200-200-100 / 100-100-50,
``npvae.hvae``) with the same seed and schedule, and prints the table with
the paper's numbers, the active units of each stochastic layer, and the
paper's orderings as paired differences over the same test digits (their
standard errors are the evaluation's noise only):

- two layers against one, for each objective: 2-layer minus 1-layer;
- IWAE against VAE with two layers.

    python benchmarks/reproduce_burda_two_layers.py                        # k = 5, 8 epochs, all test digits
    python benchmarks/reproduce_burda_two_layers.py --eval-k 1000 --limit 1000   # a quicker look

Runs go to ``runs/repro/{preset}-k{k}``; a finished run there with the same
settings is evaluated, not trained again. Results go to
``benchmarks/results/reproduce_burda_two_layers.json``.
"""

if __name__ == "__main__":  # threads first, as in every script here
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import threads_from_argv

    threads_from_argv()

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks import _common
from benchmarks.reproduce_burda import PAPER, evaluate_run

PAPER_TWO_LAYERS = {("elbo", 1): 85.33, ("elbo", 5): 85.01, ("elbo", 50): 84.78,
                    ("iwae", 1): 85.33, ("iwae", 5): 83.89, ("iwae", 50): 82.90}
"""Burda, Grosse and Salakhutdinov (2016), Table 1, MNIST, two stochastic layers: -log p(x)."""

PRESETS = {(1, "elbo"): "burda-vae", (1, "iwae"): "burda-iwae",
           (2, "elbo"): "burda2-vae", (2, "iwae"): "burda2-iwae"}
NAME = {"elbo": "VAE", "iwae": "IWAE"}


def train_preset(preset, k, seed, run_dir, epochs, lr_schedule):
    """Train ``preset`` with ``k`` samples into ``run_dir``: wall seconds, or None when a
    finished run with these settings is there already."""
    from dataclasses import asdict

    from npvae.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from npvae.config import TrainConfig
    from npvae.train import train

    config = TrainConfig.from_preset(preset, k=k, seed=seed, epochs=epochs,
                                     lr_schedule=lr_schedule, progress=False, figures=False)
    done = run_dir / CHECKPOINT_NAME
    if done.is_file():
        state = load_checkpoint(done).state
        if (state.get("train_config") == json.loads(json.dumps(asdict(config)))
                and state.get("epoch") == epochs):
            print(f"  {run_dir} is finished: evaluating it as it is", flush=True)
            return None
    started = time.perf_counter()
    train(config, run_dir, overwrite=True, log=lambda line: print(f"  {line}", flush=True))
    return time.perf_counter() - started


def units_per_layer(run_dir, limit):
    """Active units (activity > 0.01) of each stochastic layer on the evaluated test digits."""
    from npvae import evaluate
    from npvae.checkpoint import model_from_checkpoint
    from npvae.hvae import HVAE, active_units_per_layer
    from npvae.runs import run_test_data

    model, checkpoint = model_from_checkpoint(run_dir)
    x = run_test_data(checkpoint, None)[0][:limit]
    if isinstance(model, HVAE):
        return list(zip(active_units_per_layer(model, x), model.latents))
    return [(evaluate.active_units(model, x), model.latent)]


def epoch_seconds(run_dir):
    """The run's training time, the sum of its epochs' seconds (``metrics.csv``): known also
    for a run trained earlier, or by another invocation (``--layers``)."""
    from npvae.runs import read_metrics

    return sum(float(row["seconds"]) for row in read_metrics(run_dir / "metrics.csv"))


def paired(bounds, a, b):
    """-log p(x) of ``a`` minus that of ``b``, digit by digit: (mean, standard error)."""
    d = bounds[b] - bounds[a]
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0],
                                     epilog=__doc__.partition("\n")[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="5", help="samples per example in training (default 5)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs (default 8: the presets')")
    parser.add_argument("--lr-schedule", default="iwae-short",
                        help="iwae-short (default) or iwae (the paper's 3^i epochs per rate)")
    parser.add_argument("--eval-k", type=int, default=5000, help="samples of the bound")
    parser.add_argument("--limit", type=int, help="evaluate on the first N test digits only")
    parser.add_argument("--runs", default="runs/repro", help="folder of the run folders")
    parser.add_argument("--layers", default="1,2",
                        help="stochastic layers of the models to train (default 1,2; the "
                             "comparisons need both)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--threads", type=int, help="BLAS threads (read before NumPy loads)")
    parser.add_argument("--out", help="JSON to write (default "
                                      "benchmarks/results/reproduce_burda_two_layers.json)")
    args = parser.parse_args(argv)
    rows, bounds = [], {}
    wanted = [int(n) for n in args.layers.split(",")]
    for k in [int(k) for k in args.ks.split(",")]:
        for (layers, objective), preset in PRESETS.items():
            if layers not in wanted:
                continue
            run_dir = Path(args.runs) / (f"{preset}-k{k}" + (f"-seed{args.seed}" if args.seed else ""))
            load = os.getloadavg()[0]
            print(f"{preset}, k = {k}: {run_dir} (load {load:.1f})", flush=True)
            seconds = train_preset(preset, k, args.seed, run_dir, args.epochs, args.lr_schedule)
            result, bounds[layers, objective, k] = evaluate_run(run_dir, args.eval_k, args.limit)
            paper = (PAPER if layers == 1 else PAPER_TWO_LAYERS).get((objective, k))
            rows.append(dict(preset=preset, layers=layers, objective=objective, k=k, seed=args.seed,
                             run_dir=str(run_dir), train_seconds=seconds, load_at_start=load,
                             epoch_seconds=epoch_seconds(run_dir),
                             paper=paper, units_per_layer=units_per_layer(run_dir, args.limit),
                             **result))
            print(f"  -log p(x) <= {result['nll']:.2f} +/- {result['standard_error']:.2f}, "
                  f"test -ELBO {-result['test_elbo']:.2f}", flush=True)
    table = [[f"{NAME[r['objective']]}, {r['layers']} layer{'s' if r['layers'] > 1 else ''}, k = {r['k']}",
              f"{r['paper']:.2f}" if r["paper"] else "",
              f"{r['nll']:.2f} ± {r['standard_error']:.2f}", f"{-r['test_elbo']:.2f}",
              ", ".join(f"{n} of {z}" for n, z in r["units_per_layer"]),
              f"{r['epoch_seconds'] / 60:.1f} min",
              f"{r['eval_seconds'] / 60:.1f} min"] for r in rows]
    _common.print_table(table, ["model", "paper -log p(x)",
                                f"-log p(x) <= (k={args.eval_k}, {rows[0]['digits']} digits)",
                                "test -ELBO", "active units per layer", "training (its epochs)",
                                "evaluation"],
                        title=f"Burda et al. Table 1, {args.epochs} epochs ({args.lr_schedule})")
    differences = []
    for k in sorted({r["k"] for r in rows}):
        comparisons = [("2 layers - 1 layer, VAE", (2, "elbo", k), (1, "elbo", k)),
                       ("2 layers - 1 layer, IWAE", (2, "iwae", k), (1, "iwae", k)),
                       ("IWAE - VAE, 2 layers", (2, "iwae", k), (2, "elbo", k))]
        for what, a, b in comparisons:
            if a not in bounds or b not in bounds:
                continue
            mean, se = paired(bounds, a, b)
            papers = [(PAPER if m[0] == 1 else PAPER_TWO_LAYERS)[m[1], k] for m in (a, b)]
            differences.append(dict(k=k, comparison=what, difference=mean, paired_standard_error=se,
                                    paper=papers[0] - papers[1]))
            print(f"k = {k}: {what} = {mean:+.2f} +/- {se:.2f} nats in -log p(x) (paired over "
                  f"the digits; paper {papers[0] - papers[1]:+.2f})")
    _common.write_json("reproduce_burda_two_layers", dict(
        machine=_common.machine_info(), epochs=args.epochs, lr_schedule=args.lr_schedule,
        eval_k=args.eval_k, limit=args.limit, rows=rows, differences=differences), args.out)


if __name__ == "__main__":
    main()
