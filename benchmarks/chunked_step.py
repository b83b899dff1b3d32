"""A training step whole and in chunks of examples (``npvae.chunked``), side by side.

For the ``conv`` and ``pytorch-example`` presets, batch 128 of MNIST, float32:
milliseconds per ``train_step`` with the batch whole (one forward and
backward, the products and passes split across npvae's threads) and in
chunks of ``chunked.CHUNK`` examples (each chunk whole on a thread), with 1
and 2 threads. Rounds alternate the two ways, each round ``--steps`` steps
of the same model; medians over ``--rounds``. ``npvae`` itself takes the
chunks for the conv architecture only (``chunked.splits``); this script
times both ways for both models, which is why.

Usage: ``python benchmarks/chunked_step.py [--rounds 7] [--threads 1,2]``
"""

if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import statistics
import time

import numpy as np

from benchmarks import _common

STEPS = {"conv": 20, "pytorch-example": 200}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", default="1,2", help="npvae's thread counts, e.g. 1,2")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the steps per round (20 conv, 200 MLP)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from npvae import chunked, threads, train
    from npvae.config import TrainConfig
    from npvae.optim import Adam
    from npvae.vae import VAE

    x = _common.mnist_arrays()[0]
    rows, results = [], []
    for preset, base in STEPS.items():
        steps = max(1, round(base * args.scale))
        cfg = TrainConfig.from_preset(preset, seed=0, figures=False, progress=False)
        model = VAE(**cfg.model_kwargs(x.shape[1]))
        optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=1e-3)
        rng = np.random.default_rng(1)
        batches = [x[128 * i:128 * (i + 1)] for i in range(steps)]
        ways = {"whole": lambda model, batch, objective=None: False,
                "chunks": lambda model, batch, objective=None: batch > chunked.CHUNK}
        for n in (int(t) for t in args.threads.split(",")):
            threads.set_threads(n)
            ms = {way: [] for way in ways}
            for round_ in range(args.rounds + 1):
                for way, rule in ways.items():
                    train.splits = rule
                    start = time.perf_counter()
                    for batch in batches:
                        train.train_step(model, optimizer, batch, rng=rng, check=False)
                    if round_:            # the first round warms up
                        ms[way].append(1e3 * (time.perf_counter() - start) / steps)
            train.splits = chunked.splits
            median = {way: statistics.median(t) for way, t in ms.items()}
            rows.append([preset, n, median["whole"], median["chunks"],
                         median["chunks"] / median["whole"],
                         "chunks" if chunked.splits(model, 128) else "whole"])
            results.append({"preset": preset, "threads": n, "steps_per_round": steps,
                            "median_ms": median, "ms": ms})
    _common.print_table(rows, ["preset", "threads", "whole ms", "chunks ms", "chunks/whole",
                               "npvae takes"],
                        title=f"ms per training step, batch 128, medians of {args.rounds} rounds")
    _common.write_json("chunked_step", {"args": vars(args), "machine": _common.machine_info(),
                                        "results": results}, args.out)


if __name__ == "__main__":
    main()
