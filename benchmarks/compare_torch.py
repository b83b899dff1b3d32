"""npvae against PyTorch's VAE example, side by side, in one process.

Both train the same model (784-400-20, ReLU, Bernoulli likelihood on [0, 1]
pixels, Adam 1e-3, batch 128, float32) on the same MNIST arrays, in the same
shuffled order, from the same initial weights, with the same number of
threads. Three runs:

- ``npvae``: npvae's own training code (``npvae.train.train`` with the
  ``pytorch-example`` preset; a minimal forward/backward/Adam loop when
  ``npvae.train`` is absent);
- ``torch``: PyTorch's example as shipped (``benchmarks/torch_vae.py``),
  fed the arrays a batch at a time;
- ``torch+ftz``: the same with ``torch.set_flush_denormal(True)``;
- ``torch+DataLoader``: the example with its own input pipeline (PIL
  images, ``ToTensor``, ``DataLoader``), the example literally as shipped
  (``--no-dataloader`` leaves it out).

It reports the median seconds of a training epoch (the training pass; the
test evaluation is timed apart), the ratios npvae / PyTorch, and each run's
train and test loss after the same epochs. The example sums its loss over
the batch where npvae averages it; Adam's steps do not depend on that scale
(up to its eps), so the two trajectories are comparable, not identical (the
noise eps differs too).

Usage: ``python benchmarks/compare_torch.py [--epochs 3] [--threads 2]``
"""

if __name__ == "__main__":  # threads first: OpenBLAS reads them once, when NumPy loads
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import threads_from_argv

    threads_from_argv()

import importlib.util
import inspect
import tempfile
import time

import numpy as np

from benchmarks import _common
from benchmarks.torch_vae import train_torch, weights_from_npvae

# npvae's epoch time over each run's must be at most this.
TARGETS = {"torch": 0.8, "torch+ftz": 1.0, "torch+DataLoader": 0.8}


def has_npvae_train():
    return importlib.util.find_spec("npvae.train") is not None


# ---------------------------------------------------------------- npvae's side


def npvae_setup(epochs, batch_size, seed):
    """(x_train, x_test, initial VAE, per-epoch orders, how npvae trains) for the run.

    With ``npvae.train``, everything comes from its ``TrainConfig``: the data
    (``prepare_data``), the initial weights (the VAE its config builds) and
    each epoch's shuffle (its ``shuffle`` stream), so PyTorch sees what
    npvae's trainer sees.
    """
    from npvae import VAE

    if has_npvae_train():
        from npvae import train as T

        config = T.TrainConfig.from_preset("pytorch-example", epochs=epochs,
                                           batch_size=batch_size, seed=seed, figures=False,
                                           progress=False).validate()
        data = T.prepare_data(config)
        model = VAE(**config.model_kwargs(data.x_train.shape[1]))
        orders = [np.random.default_rng(T.derive_seed(seed, "shuffle", e)).permutation(
            len(data.x_train)) for e in range(epochs)]
        return data.x_train, data.x_test, model, orders, "npvae.train.train"
    x_train, x_test = _common.mnist_arrays()
    model = VAE(784, (400,), 20, activation="relu", likelihood="bernoulli", init="pytorch",
                seed=seed)
    return (x_train, x_test, model, _common.epoch_orders(len(x_train), epochs, seed),
            "minimal loop (npvae.train not found)")


def train_npvae(x_train, x_test, orders, epochs, batch_size, seed):
    """Train with ``npvae.train.train``; per-epoch losses and seconds as ``train_torch``'s.

    The trainer builds its own model and shuffle; to prove that PyTorch is
    fed the same batches, the first batch of every epoch is recorded (by a
    thin subclass of the VAE) and compared with ``orders``.
    """
    from npvae import train as T

    first_batches = []
    steps_per_epoch = -(-len(x_train) // batch_size)

    config = T.TrainConfig.from_preset("pytorch-example", epochs=epochs, batch_size=batch_size,
                                       seed=seed, figures=False, progress=False)
    train_sizes = {batch_size, len(x_train) % batch_size} - {0, config.eval_batch_size}

    class RecordingVAE(T.VAE):
        step = 0

        def forward(self, x, **kwargs):
            if len(x) in train_sizes:  # not the test set's evaluation batches
                if self.step % steps_per_epoch == 0:
                    first_batches.append(np.array(x[:4]))
                self.step += 1
            return super().forward(x, **kwargs)

    loads, monitor = [], _common.OtherLoad()

    def on_step(epoch, step, global_step):  # after each step: watch steps 2..last
        if step == 1:
            monitor.start()
        elif step == steps_per_epoch:
            loads.append(monitor.stop())

    original = T.VAE
    T.VAE = RecordingVAE
    try:
        with tempfile.TemporaryDirectory(prefix="npvae-bench-") as run_dir:
            result = T.train(config, run_dir, overwrite=True, log=lambda line: None,
                             on_step=on_step)
    finally:
        T.VAE = original
    if len(first_batches) != epochs:
        raise RuntimeError(f"recorded {len(first_batches)} epochs of npvae.train, "
                           f"expected {epochs}")
    for e, batch in enumerate(first_batches):
        if not np.array_equal(batch, x_train[orders[e][:4]]):
            raise RuntimeError(f"npvae.train's epoch {e + 1} order differs from the one given "
                               "to PyTorch: the comparison would not be like for like")
    m = result.metrics
    return {"train_loss": [r["train_loss"] for r in m], "test_loss": [r["test_loss"] for r in m],
            "epoch_seconds": [r["seconds"] for r in m], "other_load_cpus": loads,
            "subnormal_moments": subnormal_counts(result.optimizer)}


def train_minimal(model, x_train, x_test, orders, epochs, batch_size, seed):
    """The training step of npvae (forward, backward, Adam on the flat buffers), in a loop."""
    from npvae.optim import Adam

    optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=1e-3)
    rng = np.random.default_rng(seed)
    n = len(x_train)
    unchecked = ({"check": False} if "check" in inspect.signature(model.forward).parameters
                 else {})  # the data are checked once, as npvae.train does
    history = {"train_loss": [], "test_loss": [], "epoch_seconds": [], "other_load_cpus": []}
    for e in range(epochs):
        total = 0.0
        monitor = _common.OtherLoad().start()
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            xb = x_train[orders[e][i:i + batch_size]]
            terms = model.forward(xb, rng=rng, **unchecked)
            model.backward()
            optimizer.step()
            total += float(terms.loss) * len(xb)
        history["epoch_seconds"].append(time.perf_counter() - start)
        history["other_load_cpus"].append(monitor.stop())
        history["train_loss"].append(total / n)
        test = sum(float(model.forward(x_test[i:i + 1000], rng=rng).loss) * len(x_test[i:i + 1000])
                   for i in range(0, len(x_test), 1000))
        history["test_loss"].append(test / len(x_test))
    history["subnormal_moments"] = subnormal_counts(optimizer)
    return history


def subnormal_counts(optimizer):
    tiny = np.finfo(np.float32).tiny
    return {name: int(sum(((a != 0) & (np.abs(a) < tiny)).sum() for a in state.values()))
            for name, state in (("m", optimizer.m_sum), ("v", optimizer.v_sum))}


# ---------------------------------------------------------------- the comparison


def run_all(args, torch):
    x_train, x_test, model, orders, how = npvae_setup(args.epochs, args.batch_size, args.seed)
    weights = weights_from_npvae(model)
    runs = {}
    plan = [("npvae", None, None), ("torch", False, "arrays"), ("torch+ftz", True, "arrays")]
    if args.dataloader:
        plan.append(("torch+DataLoader", False, "dataloader"))
    for repeat in range(args.repeats):
        for name, flush, loader in plan:
            if args.quiet_wait > 0:
                _common.wait_for_quiet(timeout=args.quiet_wait)
            print(f"[{repeat + 1}/{args.repeats}] training {name} for {args.epochs} epochs ...",
                  flush=True)
            if name == "npvae":
                h = (train_npvae(x_train, x_test, orders, args.epochs, args.batch_size,
                                 args.seed) if how.startswith("npvae.train")
                     else train_minimal(model, x_train, x_test, orders, args.epochs,
                                        args.batch_size, args.seed))
            else:
                h = train_torch(x_train, x_test, args.epochs, args.batch_size, args.seed,
                                flush_denormal=flush, order=orders, weights=weights,
                                threads=args.threads, load_monitor=_common.OtherLoad,
                                loader=loader)
            runs.setdefault(name, []).append(h)
    return runs, how


def summarise(runs, max_load):
    """Median epoch seconds over the clean epochs of every repeat; losses of the first repeat.

    An epoch is clean when other processes used under ``max_load`` CPUs
    meanwhile; when none is, the median of all is given, marked.
    """
    out = {}
    for name, hs in runs.items():
        seconds = [s for h in hs for s in h["epoch_seconds"]]
        loads = [c for h in hs for c in h["other_load_cpus"]]
        value, clean = _common.clean_median(seconds, loads, max_load)
        out[name] = {"median_epoch_seconds": value, "clean_epochs": clean,
                     "epoch_seconds": seconds, "other_load_cpus": loads,
                     "train_loss": hs[0]["train_loss"][-1], "test_loss": hs[0]["test_loss"][-1]}
    for name in TARGETS:
        if name in out:
            ratio = out["npvae"]["median_epoch_seconds"] / out[name]["median_epoch_seconds"]
            out[name]["npvae_ratio"] = ratio
            out[name]["target_ratio"] = TARGETS[name]
            out[name]["target_met"] = ratio <= TARGETS[name]
    return out


def main(argv=None):
    parser = _common.script_parser(__doc__, epochs=3, training=True)
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the three trainings this many times, interleaved (default 1)")
    parser.add_argument("--no-dataloader", dest="dataloader", action="store_false",
                        help="skip the run with the example's own DataLoader")
    args = parser.parse_args(argv)
    torch = _common.import_torch(args.threads)
    if torch is None:
        _common.skip_without_torch("compare_torch")
    runs, how = run_all(args, torch)
    summary = summarise(runs, args.max_load)

    rows = []
    for name, s in summary.items():
        ratio = s.get("npvae_ratio")
        rows.append((name, s["median_epoch_seconds"],
                     f"{s['clean_epochs']}/{len(s['epoch_seconds'])}",
                     " ".join(f"{t:.2f}" for t in s["epoch_seconds"]),
                     " ".join(f"{c:.2f}" for c in s["other_load_cpus"]),
                     "" if ratio is None else f"{ratio:.2f} (target <= {s['target_ratio']})"
                     + (" met" if s["target_met"] else " MISSED"),
                     s["train_loss"], s["test_loss"]))
    _common.print_table(rows, ["run", "median s/epoch", "clean", "epochs (s)", "other CPUs",
                               "npvae / this", "train loss", "test loss"],
                        title=f"\n{args.epochs} epochs, batch {args.batch_size}, float32, "
                              f"{args.threads} threads; npvae via {how}")
    print(f"median over clean epochs (other processes under {args.max_load} CPUs); "
          "train/test loss after the last epoch (the example's definitions: nats per example)")
    if any(s["clean_epochs"] == 0 for s in summary.values()):
        print("warning: a run had no clean epoch: its median is of contended epochs")
    _common.write_json("compare_torch", {
        "args": vars(args), "machine": _common.machine_info(torch), "npvae_code_path": how,
        "summary": summary, "runs": runs}, args.out)


if __name__ == "__main__":
    main()
