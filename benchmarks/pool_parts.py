"""How npvae's pool should share out work on many cores: part sizes and the cap on passes.

For each thread count in ``--threads-axis`` (up to the machine's CPUs), the
MLP (784-400-20, batch 128) and the ``conv`` preset (batch 128) take
training steps (``npvae.train.train_step``) under each of these settings of
``npvae.parallel``, interleaved over ``--repeats`` rounds, wall clock:

- ``passes on all threads``: elementwise passes split into as many parts
  as there are threads (the rule before ``MAX_PASS_PARTS``);
- ``passes at most 4`` (npvae's rule): at most ``MAX_PASS_PARTS`` parts;
- ``larger parts x4``, ``x16``: ``MIN_FLOPS`` and ``MIN_SIZE`` 4 and 16 times
  larger, passes at most 4 parts.

Every setting computes the same numbers (``tests/test_parallel.py``); only
the time differs. On 2 cores the settings hardly differ; the question is
what 8 or 16 threads do. Prints ms per step (median, and each round) and
writes ``results/pool_parts.json``.

Usage: ``python benchmarks/pool_parts.py [--threads-axis 1,2,4,8,16] [--repeats 3]
[--mlp-steps 32] [--conv-steps 10]``
"""

if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ["NPVAE_THREADS"] = "1"   # BLAS at one thread; the pool is sized below

import argparse
import os
import statistics
import time

import numpy as np

from benchmarks import _common
from benchmarks.scaling import conv_setup, npvae_setup, npvae_steps

# setting: (MIN_FLOPS and MIN_SIZE times npvae's, the most parts of a pass; None: the threads)
SETTINGS = {"passes on all threads": (1, None), "passes at most 4": (1, 4),
            "larger parts x4": (4, 4), "larger parts x16": (16, 4)}


def apply_setting(parallel, defaults, setting):
    """Set ``npvae.parallel``'s part sizes and cap on passes to ``SETTINGS[setting]``, the
    sizes as multiples of ``defaults`` (npvae's MIN_FLOPS, MIN_SIZE)."""
    scale, most = SETTINGS[setting]
    parallel.MIN_FLOPS, parallel.MIN_SIZE = defaults[0] * scale, defaults[1] * scale
    parallel.MAX_PASS_PARTS = 1 << 30 if most is None else most


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads-axis", default="1,2,4,8,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mlp-steps", type=int, default=32)
    parser.add_argument("--conv-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from npvae import parallel
    from npvae.threads import set_threads

    defaults = (parallel.MIN_FLOPS, parallel.MIN_SIZE, parallel.MAX_PASS_PARTS)  # restored last
    x_train, _ = _common.mnist_arrays()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(x_train))
    steps = max(args.mlp_steps, args.conv_steps)
    batches = [x_train[order[i:i + 128]] for i in range(0, steps * 128, 128)]
    mlp = npvae_setup(400, args.seed)
    conv_model, conv_optimizer, _ = conv_setup(x_train, args.seed)
    models = {"mlp": (mlp[0], mlp[1], batches[:args.mlp_steps]),
              "conv": (conv_model, conv_optimizer, batches[:args.conv_steps])}
    counts = [t for t in (int(n) for n in args.threads_axis.split(","))
              if t <= (os.cpu_count() or 1)]
    points = []
    print("load average at start:", os.getloadavg(), flush=True)
    for threads in counts:
        set_threads(threads)
        settings = ["passes at most 4"] if threads == 1 else list(SETTINGS)
        runs = {(s, m): [] for s in settings for m in models}
        for setting in settings:   # warm-up: each setting's buffers at this thread count
            apply_setting(parallel, defaults, setting)
            for model, optimizer, b in models.values():
                npvae_steps(model, optimizer, b[:1], rng)
        for _ in range(args.repeats):
            for setting in settings:
                apply_setting(parallel, defaults, setting)
                for name, (model, optimizer, b) in models.items():
                    start = time.perf_counter()
                    npvae_steps(model, optimizer, b, rng)
                    runs[setting, name].append((time.perf_counter() - start) / len(b))
        for setting in settings:
            row = {"threads": threads, "setting": setting}
            for name in models:
                row[f"{name}_ms"] = 1e3 * statistics.median(runs[setting, name])
                row[f"{name}_runs_ms"] = [1e3 * t for t in runs[setting, name]]
            points.append(row)
            print(f"{threads:3d} threads  {setting:22s} mlp {row['mlp_ms']:7.2f} ms  conv "
                  f"{row['conv_ms']:7.2f} ms   (rounds: mlp "
                  + " ".join(f"{t:.2f}" for t in row["mlp_runs_ms"]) + "; conv "
                  + " ".join(f"{t:.1f}" for t in row["conv_runs_ms"]) + ")", flush=True)
    parallel.MIN_FLOPS, parallel.MIN_SIZE, parallel.MAX_PASS_PARTS = defaults
    _common.write_json("pool_parts", {"args": vars(args), "machine": _common.machine_info(None),
                                      "settings": {k: {"part_scale": v[0], "most_pass_parts": v[1]}
                                                   for k, v in SETTINGS.items()},
                                      "points": points,
                                      "load_average_at_end": os.getloadavg()}, args.out)


if __name__ == "__main__":
    main()
