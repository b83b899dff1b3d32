"""npvae's VQ-VAE against its PyTorch replica, side by side, in one process.

Both train the model of preset ``vqvae`` (``npvae.vqvae.VQVAE`` at Keras's
example's sizes: conv 32-64 3x3 stride 2 then a 1x1 conv to a 7 x 7 grid of
F = 16 dimensions, N = 64 codes, commitment weight 0.25, convT 64-32-1, ReLU,
Bernoulli logits on [0, 1] pixels; Adam 1e-3, batch 128, float32; dead codes
restarted every 100 steps) on the same MNIST arrays, in the same shuffled
order (npvae's ``shuffle`` stream), from the same initial weights and
codebook (npvae's, copied into ``torch.nn``), with the same number of
threads. The PyTorch side is ``benchmarks/torch_vqvae.py``: ``nn.Conv2d`` /
``nn.ConvTranspose2d``, autograd with the straight-through ``.detach()``,
``torch.optim.Adam``, the moving-average codebook in torch operations, eager;
it restarts dead codes after the same steps with the same generator.
``tests/test_vq_autograd.py`` proves in float64 that the two compute the
same codes, losses, gradients and updates.

The runs are **interleaved an epoch at a time** (npvae, then PyTorch), so a
change in the machine's load hits both alike. npvae takes the steps
``npvae train --preset vqvae`` takes: ``npvae.train.train_step`` (forward,
backward, Adam, ``update_codebook``) and ``npvae.vqtrain.VQRun.after_step``
(code usage, restarts when due); its test terms are ``evaluate_vq``'s.

Reported per epoch and side: the training means of the reconstruction,
codebook and commitment losses (nats per example), the code usage over the
epoch (perplexity, dead codes), the same on the first ``--n-test`` test
digits after the epoch, and the epoch's seconds by the wall clock and by
the process's CPU time; then npvae / PyTorch for time, reconstruction and
perplexity, against the issue's targets (time <= 1.5x, reconstruction and
perplexity within a few percent: 5% here). A JSON goes to
``benchmarks/results/compare_vqvae_torch.json`` after every epoch.

Usage: ``python benchmarks/compare_vqvae_torch.py --epochs 3 --n-train 20000 --threads 1
--cpu-time``
"""

if __name__ == "__main__":  # threads first: OpenBLAS reads them once, when NumPy loads
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import threads_from_argv

    threads_from_argv()

import time

import numpy as np

from benchmarks import _common
from benchmarks.torch_vqvae import TorchVQTrainer, weights_from_npvae
from npvae.vqtrain import TERMS, usage_terms

TARGET_RATIO = 1.5        # npvae's median epoch over PyTorch's must be at most this
TARGET_RELATIVE = 0.05    # and its reconstruction loss and perplexity within 5% of PyTorch's


# ---------------------------------------------------------------- npvae's side


class NpvaeVQRun:
    """npvae's ``vqvae`` preset trained an epoch at a time with the steps ``npvae train`` takes:
    ``train_step`` (forward, backward, Adam, ``update_codebook``), then ``VQRun.after_step``
    (the epoch's code usage; dead codes restarted every ``restart_every`` steps)."""

    def __init__(self, args):
        from npvae.config import TrainConfig
        from npvae.cvae import model_from_config
        from npvae.data import prepare_data
        from npvae.optim import Adam
        from npvae.vqtrain import VQRun

        self.config = TrainConfig.from_preset(
            "vqvae", batch_size=args.batch_size, seed=args.seed, lr=args.lr, n_train=args.n_train,
            n_test=args.n_test, codebook_update=args.update, restart_every=args.restart_every,
            figures=False, progress=False).validate()
        self.data = prepare_data(self.config)
        self.model = model_from_config(**self.config.model_kwargs(self.data.x_train.shape[1]))
        self.optimizer = Adam({"theta": self.model.theta}, {"theta": self.model.dtheta},
                              lr=self.config.lr)
        self.vq, self.global_step = VQRun(self.model, self.config), 0

    def order(self, epoch):
        """The shuffle of ``epoch``: the one ``npvae train`` uses (``epoch_generators``)."""
        from npvae.randomness import epoch_generators

        return epoch_generators(self.config.seed, epoch)[0].permutation(len(self.data.x_train))

    def epoch(self, epoch):
        """``(mean (loss, recon, codebook, commitment), code usage (N,), seconds)``."""
        from npvae.data import batches
        from npvae.randomness import epoch_generators
        from npvae.train import train_step

        shuffle = epoch_generators(self.config.seed, epoch)[0]
        x, totals = self.data.x_train, np.zeros(4)
        self.vq.start_epoch({})
        start = time.perf_counter()
        for index in batches(len(x), self.config.batch_size, shuffle):
            terms = train_step(self.model, self.optimizer, x[index], check=False)
            self.global_step += 1
            self.vq.after_step(self.global_step)
            totals += [float(v) * len(index) for v in terms[:4]]
        seconds = time.perf_counter() - start
        return totals / len(x), np.array(self.vq.usage), seconds

    def evaluate(self):
        """The test digits' mean terms and code usage (``npvae.evaluate.evaluate_vq``)."""
        from npvae.evaluate import evaluate_vq

        return evaluate_vq(self.model, self.data.x_test)


# ---------------------------------------------------------------- the comparison


def main(argv=None):
    parser = _common.script_parser(__doc__, epochs=3, training=True)
    parser.add_argument("--update", choices=("gradient", "ema"), default="gradient",
                        help="how the codebook learns (default: gradient)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--restart-every", type=int, default=100,
                        help="restart dead codes every this many steps, both sides, as npvae "
                             "train does (0: never; default 100, the preset's)")
    parser.add_argument("--n-train", type=int, default=None,
                        help="train on the first N training examples only (default: all)")
    parser.add_argument("--n-test", type=int, default=10000,
                        help="evaluate on the first N test digits after each epoch (default all)")
    _common.add_cpu_time_argument(parser)
    parser.set_defaults(seed=0)
    args, torch = _common.parse_with_torch(parser, argv, "compare_vqvae_torch")

    ours = NpvaeVQRun(args)
    theirs = TorchVQTrainer(ours.data.x_train, ours.model.config, weights_from_npvae(ours.model),
                            batch_size=args.batch_size, lr=args.lr,
                            restart_every=args.restart_every, seed=ours.config.seed)
    history = {"npvae": [], "torch": []}
    for epoch in range(args.epochs):
        order = ours.order(epoch)
        for name in history:
            epoch_of = (lambda: ours.epoch(epoch)) if name == "npvae" else \
                (lambda: theirs.epoch(order))
            (terms, counts, seconds), facts = _common.measured(epoch_of, args.quiet_wait)
            if name == "npvae":
                test = ours.evaluate()
            else:
                test_terms, test_counts = theirs.evaluate(ours.data.x_test)
                test = {**dict(zip(TERMS, test_terms.tolist())), **usage_terms(test_counts)}
            row = {"epoch": epoch + 1, "seconds": seconds, **facts,
                   "train": {**dict(zip(TERMS, terms.tolist())), **usage_terms(counts)},
                   "test": test}
            history[name].append(row)
            tr, te = row["train"], row["test"]
            print(f"epoch {epoch + 1}/{args.epochs} {name:<6} {seconds:7.2f} s "
                  f"({facts['cpu_seconds']:.2f} s CPU, load average {facts['loadavg']:.1f}, "
                  f"other CPUs {facts['other_load_cpus']:.2f})  train recon "
                  f"{tr['recon']:7.3f} codebook {tr['codebook']:.4f} commitment "
                  f"{tr['commitment']:.4f} perplexity {tr['perplexity']:5.2f} dead "
                  f"{tr['dead_codes']:2d}  test recon {te['recon']:7.3f} perplexity "
                  f"{te['perplexity']:5.2f}", flush=True)
        # Written after every epoch, so a run cut short keeps the epochs it finished.
        report(args, torch, history, final=epoch + 1 == args.epochs)


def report(args, torch, history, final):
    """The summary of the epochs done: printed when ``final``, always written to the JSON."""
    clock = "cpu_seconds" if args.cpu_time else "seconds"
    summary = {}
    for name, rows in history.items():
        value, clean = _common.clean_median([r[clock] for r in rows],
                                            [r["other_load_cpus"] for r in rows], args.max_load)
        summary[name] = {"median_epoch_seconds": value, "clean_epochs": clean,
                         "clock": "CPU time" if args.cpu_time else "wall clock",
                         "train": rows[-1]["train"], "test": rows[-1]["test"]}
    ours, theirs = summary["npvae"], summary["torch"]
    ratio = ours["median_epoch_seconds"] / theirs["median_epoch_seconds"]
    relative = {f"{part}_{key}": ours[part][key] / theirs[part][key] - 1
                for part in ("train", "test") for key in ("recon", "perplexity")}
    verdict = {"epochs_done": len(history["npvae"]), "npvae_over_torch": ratio,
               "speed_target": TARGET_RATIO, "speed_met": ratio <= TARGET_RATIO,
               "npvae_over_torch_minus_1": relative, "relative_target": TARGET_RELATIVE,
               "accuracy_met": all(abs(v) <= TARGET_RELATIVE for v in relative.values())}
    name = "compare_vqvae_torch" + ("" if args.update == "gradient" else "_ema")
    _common.write_json(name, {"args": vars(args), "machine": _common.machine_info(torch),
                              "summary": summary, "verdict": verdict, "history": history},
                       args.out)
    if not final:
        return
    rows = [(f"{r['epoch']} {name}", r[clock], r["train"]["recon"], r["train"]["codebook"],
             r["train"]["commitment"], r["train"]["perplexity"], r["train"]["dead_codes"],
             r["test"]["recon"], r["test"]["perplexity"])
            for epoch_rows in zip(*history.values()) for name, r in zip(history, epoch_rows)]
    _common.print_table(rows, ["epoch side", "s", "recon", "codebook", "commitment",
                               "perplexity", "dead", "test recon", "test perplexity"],
                        title=f"\n{len(history['npvae'])} epochs on {args.n_train or 'all'} "
                              f"digits, batch {args.batch_size}, float32, {args.update} "
                              f"codebook, {args.threads} threads, "
                              f"{'CPU time' if args.cpu_time else 'wall clock'}")
    print(f"npvae / PyTorch epoch time: {ratio:.2f} (median of {ours['clean_epochs']} and "
          f"{theirs['clean_epochs']} clean epochs; target <= {TARGET_RATIO}: "
          f"{'met' if verdict['speed_met'] else 'MISSED'})")
    print("npvae / PyTorch - 1: " + ", ".join(f"{k} {100 * v:+.2f}%" for k, v in relative.items())
          + f" (target within {100 * TARGET_RELATIVE:.0f}%: "
          f"{'met' if verdict['accuracy_met'] else 'MISSED'})")


if __name__ == "__main__":
    main()
