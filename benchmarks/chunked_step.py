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

import numpy as np

from benchmarks import _common

STEPS = {"conv": 20, "pytorch-example": 200}
HEADERS = ["preset", "threads", "whole ms", "chunks ms", "chunks/whole", "npvae takes"]


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
    results = []
    for preset, base in STEPS.items():
        steps = max(1, round(base * args.scale))
        cfg = TrainConfig.from_preset(preset, seed=0, figures=False, progress=False)
        model = VAE(**cfg.model_kwargs(x.shape[1]))
        optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=1e-3)
        rng = np.random.default_rng(1)
        batches = [x[128 * i:128 * (i + 1)] for i in range(steps)]
        rules = {"whole": lambda model, batch, objective=None: False,
                 "chunks": lambda model, batch, objective=None: batch > chunked.CHUNK}

        def steps_with(rule):
            def run():
                train.splits = rule
                for batch in batches:
                    train.train_step(model, optimizer, batch, rng=rng, check=False)
            return run
        for n in (int(t) for t in args.threads.split(",")):
            threads.set_threads(n)
            ms = {way: [t / steps for t in times] for way, times in _common.alternating_ms(
                {way: steps_with(rule) for way, rule in rules.items()}, args.rounds).items()}
            train.splits = chunked.splits
            results.append({"preset": preset, "threads": n, "steps_per_round": steps,
                            "median_ms": {way: statistics.median(t) for way, t in ms.items()},
                            "ms": ms, "npvae_takes": "chunks" if chunked.splits(model, 128)
                            else "whole"})
    rows = [[r["preset"], r["threads"], *r["median_ms"].values(),
             r["median_ms"]["chunks"] / r["median_ms"]["whole"], r["npvae_takes"]]
            for r in results]
    title = f"ms per training step, batch 128, medians of {args.rounds} rounds"
    _common.report("chunked_step", rows, HEADERS, title, args, results=results)


if __name__ == "__main__":
    main()
