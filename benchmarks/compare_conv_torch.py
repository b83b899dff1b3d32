"""npvae's conv preset against its PyTorch replica, side by side, in one process.

Both train the model of preset ``conv`` (TensorFlow's convolutional VAE:
conv 32-64 3x3 stride 2 / 20 / dense 32x7x7, convT 64-32-1; ReLU; Bernoulli
logits on [0, 1] pixels; Adam 1e-3; batch 128; float32) on the same MNIST
arrays, in the same shuffled order (npvae's ``shuffle`` stream), from the
same initial weights (npvae's, copied into ``torch.nn``), with the same
number of threads. The PyTorch side is ``benchmarks/torch_conv_vae.py``:
``nn.Conv2d`` / ``nn.ConvTranspose2d``, autograd, ``torch.optim.Adam``, eager.

The runs are **interleaved an epoch at a time** (npvae conv, PyTorch conv,
npvae MLP), so a change in the machine's load hits all of them alike. npvae
trains with ``npvae.train.train_step`` on the batches and noise of
``npvae.train.fit`` (the steps ``npvae train --preset conv`` takes). The third
run is npvae's ``pytorch-example`` MLP preset on the same data, to compare
the two architectures at equal epochs.

Reported: per-epoch seconds (training pass only) and the median, npvae /
PyTorch, the test loss after each epoch (one sample of z per example, the
negative ELBO in nats per example, both sides), the epoch's system CPU
seconds and page faults (memory mapped in anew: ``npvae.memory``; run with
``NPVAE_KEEP_MEMORY=0`` to see glibc's defaults), then

- a profile of npvae's conv training step over ``--profile-steps`` steps:
  im2col, matrix products (every ``matmul`` of the conv and dense layers),
  col2im, and the rest (activations, likelihood, KL, Adam, batching);
- the memory of one training step (after warm-up, so Adam's state exists):
  for npvae, tracemalloc's peak above the memory held before the step; for
  both, the peak resident memory above the resident memory before the step
  (after ``malloc_trim``), sampled every millisecond by a thread (PyTorch's
  CPU allocator is not seen by tracemalloc); the largest of three steps.

Usage: ``python benchmarks/compare_conv_torch.py [--epochs 10] [--threads 2]``
"""

if __name__ == "__main__":  # threads first: OpenBLAS reads them once, when NumPy loads
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import threads_from_argv

    threads_from_argv()

import os
import threading
from pathlib import Path
import time
import tracemalloc
from functools import wraps

import numpy as np

from benchmarks import _common
from benchmarks.torch_conv_vae import TorchConvTrainer, weights_from_npvae

TARGET_RATIO = 1.0      # npvae's median conv epoch over PyTorch's must be at most this
TARGET_NATS = 1.0       # and its test loss within this many nats of PyTorch's


# ---------------------------------------------------------------- npvae's side


class NpvaeRun:
    """An npvae preset trained an epoch at a time with ``train_step``, as ``fit`` does."""

    def __init__(self, preset, args):
        from npvae.config import TrainConfig
        from npvae.data import prepare_data
        from npvae.optim import Adam
        from npvae.vae import VAE

        self.config = TrainConfig.from_preset(preset, batch_size=args.batch_size, seed=args.seed,
                                              n_train=args.n_train, figures=False,
                                              progress=False).validate()
        self.data = prepare_data(self.config)
        self.model = VAE(**self.config.model_kwargs(self.data.x_train.shape[1]))
        self.optimizer = Adam({"theta": self.model.theta}, {"theta": self.model.dtheta},
                              lr=self.config.lr)

    def order(self, epoch):
        """The shuffle of ``epoch``: the one ``fit`` and ``npvae train`` use."""
        from npvae.train import epoch_generators

        return epoch_generators(self.config.seed, epoch)[0].permutation(len(self.data.x_train))

    def epoch(self, epoch):
        from npvae.data import batches
        from npvae.train import epoch_generators, train_step

        shuffle, noise, _ = epoch_generators(self.config.seed, epoch)
        x, total = self.data.x_train, 0.0
        start = time.perf_counter()
        for index in batches(len(x), self.config.batch_size, shuffle):
            terms = train_step(self.model, self.optimizer, x[index], rng=noise, check=False)
            total += float(terms.loss) * len(index)
        return total / len(x), time.perf_counter() - start

    def test_loss(self):
        from npvae.evaluate import evaluate_elbo

        return evaluate_elbo(self.model, self.data.x_test, beta=1.0)["loss"]


# ---------------------------------------------------------------- the profile


class Timers:
    """Seconds spent in named phases, added up by wrapped functions."""

    def __init__(self):
        self.seconds = {}

    def wrap(self, name, function):
        @wraps(function)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return timed


def profile_steps(run, steps):
    """Seconds of ``steps`` training steps of ``run``, split into im2col, products, col2im, rest."""
    import npvae.conv as conv
    from npvae.data import batches
    from npvae.train import epoch_generators, train_step

    timers = Timers()
    layers = [layer for layer in run.model.encoder.layers + run.model.decoder.layers
              if layer.params]
    # The functions the layers call: batch-last since this commit, plain in an older --engine.
    names = (("im2col_batch_last", "col2im_batch_last") if hasattr(conv, "im2col_batch_last")
             else ("im2col", "col2im"))
    saved = [getattr(conv, name) for name in names]
    for phase, name in zip(("im2col", "col2im"), names):
        setattr(conv, name, timers.wrap(phase, getattr(conv, name)))
    untime = _common.time_products(layers, lambda f: timers.wrap("products (matmul)", f))
    try:
        shuffle, noise, _ = epoch_generators(run.config.seed, 1000)
        x = run.data.x_train
        start = time.perf_counter()
        for step, index in enumerate(batches(len(x), run.config.batch_size, shuffle)):
            if step == steps:
                break
            train_step(run.model, run.optimizer, x[index], rng=noise, check=False)
        total = time.perf_counter() - start
    finally:
        for name, function in zip(names, saved):
            setattr(conv, name, function)
        untime()
    parts = {name: timers.seconds.get(name, 0.0)
             for name in ("im2col", "products (matmul)", "col2im")}
    parts["rest"] = total - sum(parts.values())
    return {"steps": steps, "seconds": total,
            "share": {k: v / total for k, v in parts.items()}, "part_seconds": parts}


# ---------------------------------------------------------------- memory


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_peak_of(function, interval=0.001):
    """Peak resident memory above the level before ``function()`` ran, sampled by a thread.

    ``malloc_trim(0)`` first hands the memory freed by earlier steps back to the
    system (glibc keeps it otherwise, and a step reusing it would not show).
    """
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(interval)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        function()
    finally:
        done.set()
        thread.join()
    return max(peak[0], _rss_bytes()) - before


def step_memory(run, trainer):
    """The memory of one training step of each side, on the same batch, after a warm-up."""
    import torch
    from npvae.train import train_step

    x = run.data.x_train[:run.config.batch_size]
    noise = np.random.default_rng(0)
    step = lambda: train_step(run.model, run.optimizer, x, rng=noise, check=False)  # noqa: E731
    step()
    tracemalloc.start()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    step()
    npvae_traced = tracemalloc.get_traced_memory()[1] - held
    tracemalloc.stop()
    xt = torch.from_numpy(np.ascontiguousarray(x))
    trainer.step(xt)
    return {"npvae_tracemalloc_peak_bytes": npvae_traced,
            "npvae_rss_peak_bytes": max(rss_peak_of(step) for _ in range(3)),
            "torch_rss_peak_bytes": max(rss_peak_of(lambda: trainer.step(xt)) for _ in range(3))}


# ---------------------------------------------------------------- the comparison


def _faults(facts):
    """'S s system, N page faults, ' for an epoch's line, or '' where they are not counted."""
    if facts["page_faults"] is None:
        return ""
    return f"{facts['system_seconds']:.2f} s system, {facts['page_faults']} page faults, "


def main(argv=None):
    parser = _common.script_parser(__doc__, epochs=10, training=True)
    parser.add_argument("--n-train", type=int, default=None,
                        help="train on the first N training examples only (default: all)")
    parser.add_argument("--profile-steps", type=int, default=50,
                        help="steps in the profile of npvae's conv step (default 50)")
    parser.add_argument("--figure", type=Path, default=None,
                        help="save samples of npvae's conv model after the last epoch here")
    _common.add_cpu_time_argument(parser)
    parser.set_defaults(seed=0)
    args, torch = _common.parse_with_torch(parser, argv, "compare_conv_torch")

    # The profile and the memory first, on copies, so the timed runs start from the same point.
    probe = NpvaeRun("conv", args)
    profile = profile_steps(probe, args.profile_steps)
    memory = step_memory(probe, TorchConvTrainer(
        probe.data.x_train, weights_from_npvae(probe.model), hidden=tuple(probe.config.hidden),
        latent=probe.config.latent, batch_size=args.batch_size, seed=args.seed))
    del probe
    _common.print_table([(k, profile["part_seconds"][k], f"{100 * v:.1f}%")
                         for k, v in profile["share"].items()],
                        ["phase", "seconds", "share"],
                        title=f"npvae conv step, {profile['steps']} steps, "
                              f"{profile['seconds'] / profile['steps'] * 1e3:.0f} ms a step")
    _common.print_table([(k, v / 2**20) for k, v in memory.items()], ["one training step", "MiB"],
                        title="\nmemory of one step above what was held before it")

    conv = NpvaeRun("conv", args)
    mlp = NpvaeRun("pytorch-example", args)
    trainer = TorchConvTrainer(conv.data.x_train, weights_from_npvae(conv.model),
                               hidden=tuple(conv.config.hidden), latent=conv.config.latent,
                               batch_size=args.batch_size, seed=args.seed)
    names = ("npvae conv", "torch conv", "npvae mlp")
    history = {name: {k: [] for k in ("train_loss", "test_loss", "epoch_seconds",
                                      "epoch_cpu_seconds", "epoch_system_seconds",
                                      "epoch_page_faults", "other_load_cpus", "loadavg")}
               for name in names}
    for epoch in range(args.epochs):
        order = conv.order(epoch)
        for name in names:
            epoch_of = (lambda: trainer.epoch(order)) if name == "torch conv" else \
                (lambda: (conv if name == "npvae conv" else mlp).epoch(epoch))
            (train_loss, seconds), facts = _common.measured(epoch_of, args.quiet_wait)
            cpu, loadavg = facts["cpu_seconds"], facts["loadavg"]
            h = history[name]
            h["other_load_cpus"].append(facts["other_load_cpus"])
            h["epoch_cpu_seconds"].append(cpu)
            h["epoch_system_seconds"].append(facts["system_seconds"])
            h["epoch_page_faults"].append(facts["page_faults"])
            h["loadavg"].append(loadavg)
            h["epoch_seconds"].append(seconds)
            h["train_loss"].append(train_loss)
            h["test_loss"].append(trainer.test_loss(conv.data.x_test) if name == "torch conv"
                                  else (conv if name == "npvae conv" else mlp).test_loss())
            print(f"epoch {epoch + 1}/{args.epochs} {name:<10}  {seconds:7.2f} s ({cpu:.2f} s "
                  f"CPU, {_faults(facts)}load average {loadavg:.1f})  train "
                  f"{train_loss:8.3f}  test {h['test_loss'][-1]:8.3f}  other CPUs "
                  f"{h['other_load_cpus'][-1]:.2f}", flush=True)
        # Written after every epoch, so a run cut short keeps the epochs it finished.
        report(args, torch, history, profile, memory, epoch + 1, final=epoch + 1 == args.epochs)
    if args.figure:
        from npvae import plots

        plots.plot_samples(conv.model, args.figure, np.random.default_rng(0))
        print(f"samples of npvae's conv model after {args.epochs} epochs: {args.figure}")


def report(args, torch, history, profile, memory, epochs, final):
    """The summary of the first ``epochs`` epochs: printed when ``final``, always written."""
    summary = {}
    for name, h in history.items():
        timed = h["epoch_cpu_seconds"] if args.cpu_time else h["epoch_seconds"]
        value, clean = _common.clean_median(timed, h["other_load_cpus"], args.max_load)
        summary[name] = {"median_epoch_seconds": value, "clean_epochs": clean,
                         "all_epochs_median": _common.median(timed),
                         "clock": "CPU time" if args.cpu_time else "wall clock",
                         "test_loss": h["test_loss"][-1], "train_loss": h["train_loss"][-1]}
    ratio = (summary["npvae conv"]["median_epoch_seconds"]
             / summary["torch conv"]["median_epoch_seconds"])
    nats = summary["npvae conv"]["test_loss"] - summary["torch conv"]["test_loss"]
    verdict = {"epochs_done": epochs, "npvae_over_torch": ratio, "speed_target": TARGET_RATIO,
               "speed_met": ratio <= TARGET_RATIO, "test_loss_gap_nats": nats,
               "accuracy_target_nats": TARGET_NATS, "accuracy_met": abs(nats) <= TARGET_NATS,
               "conv_minus_mlp_nats": (summary["npvae conv"]["test_loss"]
                                       - summary["npvae mlp"]["test_loss"])}
    _common.write_json("compare_conv_torch", {
        "args": vars(args), "machine": _common.machine_info(torch), "summary": summary,
        "verdict": verdict, "profile": profile, "memory": memory, "history": history},
        args.out)
    if not final:
        return
    rows = [(name, s["median_epoch_seconds"], f"{s['clean_epochs']}/{epochs}",
             " ".join(f"{t:.1f}" for t in history[name][
                 "epoch_cpu_seconds" if args.cpu_time else "epoch_seconds"]),
             s["train_loss"], s["test_loss"]) for name, s in summary.items()]
    _common.print_table(rows, ["run", "median s/epoch", "clean", "epochs (s)", "train loss",
                               "test loss"],
                        title=f"\n{epochs} epochs, batch {args.batch_size}, float32, "
                              f"{args.threads} threads, "
                              f"{'CPU time' if args.cpu_time else 'wall clock'}")
    print(f"npvae / PyTorch (conv): {ratio:.2f} (target <= {TARGET_RATIO}: "
          f"{'met' if verdict['speed_met'] else 'MISSED'}); test loss npvae - PyTorch "
          f"{nats:+.2f} nats (target within {TARGET_NATS}: "
          f"{'met' if verdict['accuracy_met'] else 'MISSED'}); conv - MLP "
          f"{verdict['conv_minus_mlp_nats']:+.2f} nats")


if __name__ == "__main__":
    main()
