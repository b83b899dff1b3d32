"""Which thread count to default to: training steps with 1 and 2+ threads, idle and busy.

For each number of busy processes (``--busy 0,1,2``: this script starts that
many pure-Python busy loops, as other users' jobs would be, and ends them by
their process ids) and each thread count (``--thread-counts 1,2``), a fresh
Python process sets its threads with ``npvae.threads.set_threads`` before
NumPy loads (npvae's own pool, BLAS at one thread: ``npvae.parallel``; the
same script on an older checkout measured BLAS's threads) and times ``--steps`` training steps of the ``pytorch-example``
MLP and ``--conv-steps`` of the ``conv`` preset (``npvae.train.train_step``,
batch 128, float32, after two warm-up steps): wall seconds and CPU seconds.
Also the thread count ``npvae.threads.default_threads()`` picks under each
load: what ``--threads auto`` and ``NPVAE_THREADS=auto`` use.

The machine's own load (other people's jobs) is recorded with each row: the
one-minute load average before the row and the CPUs other processes used
during it (``_common.OtherLoad``); rows with busy = 0 are only "idle" when
that is near 0.

Usage: ``python benchmarks/threads_under_load.py [--busy 0,1,2] [--steps 100]``
"""

if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks import _common

CHILD = r"""
import json, sys, time
from npvae import threads
threads.set_threads({threads})
import numpy as np
from npvae.config import TrainConfig
from npvae.optim import Adam
from npvae.train import train_step
from npvae.vae import VAE

rng = np.random.default_rng(0)
x = rng.random((128, 784), dtype=np.float32)
result = {{"blas_threads": threads.blas_threads(),
          "npvae_threads": getattr(threads, "current_threads", threads.blas_threads)()}}
for preset, steps in (("pytorch-example", {steps}), ("conv", {conv_steps})):
    config = TrainConfig.from_preset(preset, figures=False, progress=False)
    model = VAE(**config.model_kwargs(784))
    optimizer = Adam({{"theta": model.theta}}, {{"theta": model.dtheta}}, lr=1e-3)
    for _ in range(2):
        train_step(model, optimizer, x, rng=rng, check=False)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        train_step(model, optimizer, x, rng=rng, check=False)
    result[preset] = {{"wall_ms": (time.perf_counter() - wall) / steps * 1e3,
                      "cpu_ms": (time.process_time() - cpu) / steps * 1e3}}
print(json.dumps(result))
"""


class OtherThanUs(_common.OtherLoad):
    """``OtherLoad`` that counts the measured child process as ours (the busy loops, still
    running, count as others)."""

    def _own(self):
        return sum(r.ru_utime + r.ru_stime for r in (
            self._resource.getrusage(self._resource.RUSAGE_SELF),
            self._resource.getrusage(self._resource.RUSAGE_CHILDREN)))


def busy_loops(n):
    """``n`` processes spinning in pure Python (no BLAS), started now."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def measure(threads, steps, conv_steps):
    env = dict(os.environ, PYTHONPATH=str(_common.REPO))
    for name in ("NPVAE_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", CHILD.format(threads=threads, steps=steps,
                                                              conv_steps=conv_steps)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--busy", default="0,1,2",
                        help="numbers of busy-loop processes to run beside (default 0,1,2)")
    parser.add_argument("--thread-counts", default=None,
                        help="thread counts (default: 1 and this machine's CPUs)")
    parser.add_argument("--steps", type=int, default=100, help="MLP steps per row (default 100)")
    parser.add_argument("--conv-steps", type=int, default=10,
                        help="conv steps per row (default 10)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    counts = ([int(n) for n in args.thread_counts.split(",")] if args.thread_counts
              else sorted({1, cpus}))
    from npvae.threads import default_threads

    rows, records = [], []
    for busy in (int(n) for n in args.busy.split(",")):
        loops = busy_loops(busy)
        try:
            time.sleep(1.0)
            for threads in counts:
                load = os.getloadavg()[0]
                with OtherThanUs() as monitor:
                    result = measure(threads, args.steps, args.conv_steps)
                record = {"busy": busy, "threads": threads, "loadavg_before": load,
                          "other_cpus": monitor.cpus, "default_would_pick": default_threads(),
                          **result}
                records.append(record)
                rows.append((busy, threads, result["npvae_threads"], result["blas_threads"],
                             f"{load:.1f}",
                             f"{monitor.cpus:.2f}",
                             result["pytorch-example"]["wall_ms"],
                             result["pytorch-example"]["cpu_ms"],
                             result["conv"]["wall_ms"], result["conv"]["cpu_ms"]))
                print(rows[-1], flush=True)
        finally:
            for loop in loops:
                loop.kill()
                loop.wait()
    _common.report("threads_under_load", rows,
                   ["busy loops", "threads", "npvae's", "BLAS's", "load avg", "other CPUs",
                    "MLP ms/step (wall)", "MLP CPU ms", "conv ms/step (wall)", "conv CPU ms"],
                   f"\ntraining steps, batch 128, {cpus} CPUs", args, rows=records)


if __name__ == "__main__":
    main()
