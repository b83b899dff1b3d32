"""Burda et al.'s Table 1 (MNIST, one and two stochastic layers): VAE against IWAE at equal k.

For each k of ``--ks`` (default 1, 5, 50) this trains the presets ``burda-vae``
(the k-sample ELBO, its KL in closed form) and ``burda-iwae`` (the
importance-weighted bound) with the same seed and learning-rate schedule, and
for each k of ``--sampled-ks`` (default 1) ``burda-vae`` with ``--objective
elbo-sampled``: the paper's own VAE estimator, the KL sampled at each z (their
update is the gradient of 1/k sum_l log w_l; at k = 1 it is the IWAE's, and the
two runs' weights are compared bit for bit). Then it evaluates every run as ``npvae
evaluate RUN --iw-samples 5000`` does (the same noise, so the same numbers):
the test ELBO, the bound on log p(x) with k = ``--eval-k`` samples per digit
and its standard error, and the active units (variance of the encoder mean
over the test digits > 0.01, the paper's measure). The table puts them next to
the paper's numbers and says how far the shortened schedule falls short.

Is IWAE better than VAE at equal k? Two yardsticks of the noise: the paired
standard error of the difference over the test digits (both models bound the
same digits; this is the evaluation's noise only), and ``--seeds`` (default
0): more training seeds for the ``--seed-ks`` (default 5), whose spread is the
training's noise. Each digit's bound is kept in ``RUN/iw_bounds_k5000.npy``.

``--layers 1,2`` adds Table 1's second half: ``burda2-vae`` and ``burda2-iwae``
(784-200-200-100 / 100-100-50, ``npvae.hvae``) for the same k and seeds, the
active units of each stochastic layer, and the paper's orderings as paired
differences over the same digits: 2 layers - 1 layer for each objective,
IWAE - VAE for 2 layers (``--layers 2`` trains only the two-layer models).

    python benchmarks/reproduce_burda.py                       # 8 epochs, k = 1, 5, 50, all 10,000 test digits
    python benchmarks/reproduce_burda.py --ks 5 --limit 1000   # a quicker look
    python benchmarks/reproduce_burda.py --seeds 0,1,2         # k = 5 with three training seeds
    python benchmarks/reproduce_burda.py --ks 1 --out benchmarks/results/reproduce_burda_k1.json
    python benchmarks/reproduce_burda.py --layers 1,2 --ks 5 --sampled-ks none --eval-k 1000 --limit 1000

Runs go to ``runs/repro/burda{,2}-{vae,iwae}-k{k}`` and ``burda-vae-sampled-k{k}``
(``-seed{s}`` for other seeds); a finished run there with the same settings is
evaluated, not trained again, and so is a digit's bound already computed. Results
go to ``benchmarks/results/reproduce_burda.json``, or ``reproduce_burda_two_layers.json``
when ``--layers`` has 2. The paper trains for 3,280
epochs (``--lr-schedule iwae --epochs 3280``); the presets' default is its
eight learning rates one epoch each.
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

PAPER = {("elbo", 1): 86.76, ("elbo", 5): 86.47, ("elbo", 50): 86.35,
         ("iwae", 1): 86.76, ("iwae", 5): 85.54, ("iwae", 50): 84.78}
"""Burda, Grosse and Salakhutdinov (2016), Table 1, MNIST, one stochastic layer: -log p(x)."""
PAPER.update({("elbo-sampled", k): v for (o, k), v in list(PAPER.items()) if o == "elbo"})
# the paper's VAE is, exactly, our elbo-sampled; the closed-form elbo rows are compared with it too
PAPER_TWO_LAYERS = {("elbo", 1): 85.33, ("elbo", 5): 85.01, ("elbo", 50): 84.78,
                    ("iwae", 1): 85.33, ("iwae", 5): 83.89, ("iwae", 50): 82.90}
"""Burda, Grosse and Salakhutdinov (2016), Table 1, MNIST, two stochastic layers: -log p(x)."""
PAPERS = {1: PAPER, 2: PAPER_TWO_LAYERS}

PRESET = {(1, "elbo"): "burda-vae", (1, "elbo-sampled"): "burda-vae", (1, "iwae"): "burda-iwae",
          (2, "elbo"): "burda2-vae", (2, "iwae"): "burda2-iwae"}
NAME = {"elbo": "VAE", "elbo-sampled": "VAE (sampled KL)", "iwae": "IWAE"}
PAIRS = [("elbo", "iwae"), ("elbo", "elbo-sampled"), ("elbo-sampled", "iwae")]
"""Paired differences (a, b): b's bound minus a's, digit by digit, in -log p(x)."""
LAYER_PAIRS = [("2 layers - 1 layer, VAE", (2, "elbo"), (1, "elbo")),
               ("2 layers - 1 layer, IWAE", (2, "iwae"), (1, "iwae")),
               ("IWAE - VAE, 2 layers", (2, "iwae"), (2, "elbo"))]
"""The two-layer orderings (what, minuend, subtrahend), each as (layers, objective)."""
FOLDER = {(1, "elbo"): "burda-vae", (1, "elbo-sampled"): "burda-vae-sampled",
          (1, "iwae"): "burda-iwae", (2, "elbo"): "burda2-vae", (2, "iwae"): "burda2-iwae"}


def train_run(layers, objective, k, seed, run_dir, epochs, lr_schedule):
    """Train the ``layers``-layer preset of ``objective`` with ``k`` samples into ``run_dir``:
    wall seconds, or None when a finished run with these settings is there already (then it
    is kept)."""
    from dataclasses import asdict

    from npvae.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from npvae.config import TrainConfig
    from npvae.train import train

    config = TrainConfig.from_preset(PRESET[layers, objective], k=k, seed=seed, epochs=epochs,
                                     lr_schedule=lr_schedule, objective=objective,
                                     progress=False, figures=False)
    if (run_dir / CHECKPOINT_NAME).is_file():
        state = load_checkpoint(run_dir / CHECKPOINT_NAME).state
        stored = json.loads(json.dumps(asdict(config)))   # as the checkpoint holds it: lists
        if state.get("train_config") == stored and state.get("epoch") == epochs:
            print(f"  {run_dir} is finished: evaluating it as it is", flush=True)
            return None
    started = time.perf_counter()
    train(config, run_dir, overwrite=True, log=lambda line: print(f"  {line}", flush=True))
    return time.perf_counter() - started


def epoch_seconds(run_dir):
    """The run's training time as its ``metrics.csv`` records it: the sum of its epochs' seconds
    (known for a finished run too, where ``train_run`` returns None)."""
    import csv

    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return sum(float(row["seconds"]) for row in csv.DictReader(f))


def paired_difference(bounds, minuend, subtrahend):
    """minuend's -log p(x) bound minus subtrahend's, digit by digit: (mean, standard error).

    ``bounds`` are log p(x) bounds (N,) on the same digits, so the difference in
    -log p(x) is subtrahend's minus minuend's."""
    paired = bounds[subtrahend] - bounds[minuend]
    return float(paired.mean()), float(paired.std(ddof=1) / np.sqrt(len(paired)))


def same_weights(run_a, run_b):
    """Whether two finished runs hold the same parameters, bit for bit."""
    from npvae.checkpoint import CHECKPOINT_NAME, load_checkpoint

    a, b = (load_checkpoint(Path(r) / CHECKPOINT_NAME).params for r in (run_a, run_b))
    return a.keys() == b.keys() and all(np.array_equal(a[n], b[n]) for n in a)


def evaluate_run(run_dir, eval_k, limit, seed=0):
    """What ``npvae evaluate RUN --iw-samples eval_k [--limit]`` prints, as a dict (with
    ``units_per_layer``: (active, of) for each stochastic layer), and each digit's bound
    (host float64 (N,)), kept in ``RUN/iw_bounds_k{eval_k}.npy``."""
    from npvae import evaluate
    from npvae.checkpoint import model_from_checkpoint
    from npvae.hvae import HVAE, active_units_per_layer
    from npvae.progress import ProgressBar
    from npvae.runs import run_test_data

    model, checkpoint = model_from_checkpoint(run_dir)
    x, _ = run_test_data(checkpoint, None)
    x = x[:limit] if limit else x
    rng = np.random.default_rng(seed)       # the CLI's order: the ELBO, then the bound
    terms = evaluate.evaluate_elbo(model, x, batch_size=1000, rng=rng)
    saved = run_dir / f"iw_bounds_k{eval_k}.npy"
    started = time.perf_counter()
    if saved.is_file() and len(np.load(saved)) >= len(x):
        bounds = np.load(saved)[:len(x)]
    else:
        bar = ProgressBar(f"{run_dir.name}: importance-weighted bound, k={eval_k}")
        try:
            bounds = evaluate.iw_bounds(model, x, eval_k, rng, batch_size=100, progress=bar)
        finally:
            bar.close()
        np.save(saved, bounds)
    active = evaluate.active_units(model, x, threshold=0.01)
    units = (list(zip(active_units_per_layer(model, x), model.latents)) if isinstance(model, HVAE)
             else [(active, model.latent)])
    return dict(test_elbo=-(terms["recon"] + terms["kl"]), nll=-float(bounds.mean()),
                standard_error=float(bounds.std(ddof=1) / np.sqrt(len(bounds))),
                active_units=active, units_per_layer=units, latent=model.latent, digits=len(x),
                eval_seconds=time.perf_counter() - started, epochs=checkpoint.state.get("epoch")), bounds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0],
                                     epilog=__doc__.partition("\n")[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="1,5,50", help="samples per example in training")
    parser.add_argument("--sampled-ks", default="1",
                        help="the k whose VAE is also trained with the paper's sampled KL "
                             "(objective elbo-sampled; default 1; 'none' for none)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs (default 8: the presets')")
    parser.add_argument("--lr-schedule", default="iwae-short",
                        help="iwae-short (default) or iwae (the paper's 3^i epochs per rate)")
    parser.add_argument("--eval-k", type=int, default=5000, help="samples of the bound")
    parser.add_argument("--limit", type=int, help="evaluate on the first N test digits only")
    parser.add_argument("--runs", default="runs/repro", help="folder of the run folders")
    parser.add_argument("--seeds", default="0", help="training seeds (default 0)")
    parser.add_argument("--seed-ks", default="5",
                        help="the k whose models are trained with every seed (default 5)")
    parser.add_argument("--layers", default="1",
                        help="stochastic layers of the models to train: 1 (default), 2 or 1,2 "
                             "(the two-layer comparisons need both)")
    parser.add_argument("--threads", type=int, help="BLAS threads (read before NumPy loads)")
    parser.add_argument("--out", help="JSON to write (default benchmarks/results/reproduce_burda.json"
                                      ", or reproduce_burda_two_layers.json when --layers has 2)")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    layer_counts = [int(n) for n in args.layers.split(",")]
    if not set(layer_counts) <= {1, 2}:
        parser.error(f"--layers must be 1, 2 or 1,2, got {args.layers!r}")
    sampled_ks = [] if args.sampled_ks == "none" else [int(k) for k in args.sampled_ks.split(",")]
    seeds, seed_ks = [int(s) for s in args.seeds.split(",")], [int(k) for k in args.seed_ks.split(",")]
    # the first seed's runs for every k first, then the other seeds' (a table as soon as possible)
    runs = [(k, seed) for seed in seeds for k in ks if seed == seeds[0] or k in seed_ks]
    rows, bounds = [], {}
    for k, seed in runs:
        for layers, objective in [(n, o) for n in layer_counts for o in ("elbo", "iwae")
                                  + (("elbo-sampled",) if n == 1 and k in sampled_ks else ())]:
            run_dir = Path(args.runs) / (f"{FOLDER[layers, objective]}-k{k}"
                                         + (f"-seed{seed}" if seed else ""))
            load = os.getloadavg()[0]
            print(f"{NAME[objective]}, {layers} layer(s), k = {k}, seed {seed}: {run_dir} "
                  f"(load {load:.1f})", flush=True)
            seconds = train_run(layers, objective, k, seed, run_dir, args.epochs, args.lr_schedule)
            result, bounds[layers, objective, k, seed] = evaluate_run(run_dir, args.eval_k, args.limit)
            row = dict(preset=PRESET[layers, objective], layers=layers, objective=objective, k=k,
                       seed=seed, run_dir=str(run_dir), train_seconds=seconds, load_at_start=load,
                       epoch_seconds=epoch_seconds(run_dir),
                       paper=PAPERS[layers].get((objective, k)), **result)
            rows.append(row)
            print(f"  -log p(x) <= {row['nll']:.2f} +/- {row['standard_error']:.2f}, "
                  f"test -ELBO {-row['test_elbo']:.2f}, active units "
                  + ", ".join(f"{n} of {z}" for n, z in row["units_per_layer"]), flush=True)
        for a, b in PAIRS:
            if (1, a, k, seed) in bounds and (1, b, k, seed) in bounds:   # elbo-sampled: some k
                mean, se = paired_difference(bounds, (1, b, k, seed), (1, a, k, seed))
                print(f"  {NAME[b]} - {NAME[a]} = {mean:+.2f} +/- {se:.2f} nats", flush=True)
    table = [[f"{NAME[r['objective']]}, "
              + (f"{r['layers']} layer{'s' if r['layers'] > 1 else ''}, " if 2 in layer_counts else "")
              + f"k = {r['k']}" + (f", seed {r['seed']}" if r["seed"] else ""),
              f"{r['paper']:.2f}" if r["paper"] else "",
              f"{r['nll']:.2f} ± {r['standard_error']:.2f}", f"{-r['test_elbo']:.2f}",
              ", ".join(f"{n} of {z}" for n, z in r["units_per_layer"]),
              f"{(r['train_seconds'] or r['epoch_seconds']) / 60:.1f} min",
              f"{r['eval_seconds'] / 60:.1f} min"] for r in rows]
    _common.print_table(table, ["objective", "paper -log p(x)",
                                f"-log p(x) <= (k={args.eval_k}, {rows[0]['digits']} digits)",
                                "test -ELBO", "active units per layer", "training", "evaluation"],
                        title=f"Burda et al. Table 1, {args.epochs} epochs ({args.lr_schedule})")
    differences = []
    for k, seed in runs:
        for what, a, b in LAYER_PAIRS:
            if (*a, k, seed) not in bounds or (*b, k, seed) not in bounds:
                continue
            mean, se = paired_difference(bounds, (*a, k, seed), (*b, k, seed))
            paper = PAPERS[a[0]][a[1], k] - PAPERS[b[0]][b[1], k]
            differences.append(dict(k=k, seed=seed, comparison=what, difference=mean,
                                    paired_standard_error=se, paper=paper))
            print(f"k = {k}, seed {seed}: {what} = {mean:+.2f} +/- {se:.2f} nats in -log p(x) "
                  f"(paired over the digits; paper {paper:+.2f})")
        if 1 not in layer_counts:
            continue
        vae, iwae = (next(r for r in rows if (r["layers"], r["objective"], r["k"], r["seed"])
                          == (1, o, k, seed)) for o in ("elbo", "iwae"))
        mean, se = paired_difference(bounds, (1, "iwae", k, seed), (1, "elbo", k, seed))
        differences.append(dict(k=k, seed=seed, iwae_minus_vae=mean, paired_standard_error=se))
        print(f"k = {k}, seed {seed}: IWAE - VAE = {mean:+.2f} +/- "
              f"{differences[-1]['paired_standard_error']:.2f} nats (paired over the digits; paper "
              f"{PAPER[('iwae', k)] - PAPER[('elbo', k)]:+.2f}); short of the paper by "
              f"{vae['nll'] - PAPER[('elbo', k)]:.2f} (VAE) and "
              f"{iwae['nll'] - PAPER[('iwae', k)]:.2f} (IWAE) nats")
        if (1, "elbo-sampled", k, seed) in bounds:   # the paper's VAE against ours and the IWAE
            sampled, iwae_run = (next(r["run_dir"] for r in rows if (r["layers"], r["objective"],
                                      r["k"], r["seed"]) == (1, o, k, seed))
                                 for o in ("elbo-sampled", "iwae"))
            identical = same_weights(sampled, iwae_run)
            for a, b in PAIRS[1:]:
                mean, se = paired_difference(bounds, (1, b, k, seed), (1, a, k, seed))
                differences.append(dict(k=k, seed=seed, minuend=b, subtrahend=a, difference=mean,
                                        paired_standard_error=se,
                                        same_weights=identical if a == "elbo-sampled" else None))
                print(f"k = {k}, seed {seed}: {NAME[b]} - {NAME[a]} = {mean:+.2f} +/- {se:.2f} "
                      "nats (paired over the digits)")
            print(f"k = {k}, seed {seed}: the sampled-KL VAE's and the IWAE's weights are "
                  f"{'the same, bit for bit' if identical else 'not the same'}")
    _common.write_json("reproduce_burda_two_layers" if 2 in layer_counts else "reproduce_burda", dict(
        machine=_common.machine_info(), epochs=args.epochs, lr_schedule=args.lr_schedule,
        eval_k=args.eval_k, limit=args.limit, layers=layer_counts, rows=rows,
        differences=differences), args.out)


if __name__ == "__main__":
    main()
