"""How training cost grows with the model: seconds per epoch against hidden width and batch size.

For each hidden width H in ``--widths`` (784-H-20 / 20-H-784, ReLU, Bernoulli
likelihood, float32) and batch size B in ``--batch-sizes``, npvae and PyTorch
train from the same initial weights on the same batches of MNIST for a fixed
number of examples (``--examples``, at least 3 steps), interleaved (the order
alternates over ``--repeats``); the median time is scaled to an epoch of
60,000 examples. Full epochs at every point would take too long on a shared
2-core machine; the step does not change from step to step, so a fixed
number of steps measures the same thing.

- ``npvae``: ``npvae.train.train_step`` (forward, backward, Adam's step;
  the data checked once, not per batch), the step ``npvae train`` takes;
- ``torch``: PyTorch's VAE example (``torch_vae.py``, its hidden width set to
  H): forward, the example's loss, ``backward``, ``Adam.step``.

For npvae, also: the share of its time in matrix products (a run of its own
with ``numpy.matmul`` timed, ``_common.timed_matmul``), the products' GFLOP
per epoch (counted from the shapes), and their bound: each of the step's
products timed alone (best of 7), summed, per epoch. ``npvae / bound``
says how far the whole step is from the time its own products need: near 1
where the products dominate, far where NumPy's elementwise work (one thread:
ReLU, likelihood, KL, Adam's passes over the parameters) does.

On a machine other processes share, ``--threads 1 --cpu-time`` times both
sides by the CPU time their process ran, which waiting for a core does not
inflate.

Writes ``results/scaling.json`` and the figure ``results/scaling.png``
(``--out``, ``--figure`` to put them elsewhere).

``--threads-axis 1,2,4,8,16`` measures instead how each side gains from
threads: for each thread count (up to the machine's CPUs), set at run time in
this one process (``npvae.threads.set_threads`` for npvae's own pool, BLAS at one thread,
``torch.set_num_threads``), ``--examples`` examples of the MLP (784-400-20,
batch 128) and ``--conv-steps`` steps of the ``conv`` preset (batch 128), each
side from the same weights on the same batches, interleaved, wall clock;
the speedup of T threads is the time at 1 thread over the time at T.
Writes ``results/scaling_threads.json`` and ``results/scaling_threads.png``.

Usage: ``python benchmarks/scaling.py [--widths 400,1024,2048]
[--batch-sizes 32,64,128,256,512,1024] [--examples 4096] [--repeats 2] [--threads 2]``;
``python benchmarks/scaling.py --threads-axis 1,2,4,8,16 [--conv-steps 8]``
"""

if __name__ == "__main__":  # threads first: OpenBLAS reads them once, when NumPy loads
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import threads_from_argv

    threads_from_argv()

import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks import _common
from benchmarks.profile_epoch import epoch_flops, gemm_shapes
from benchmarks.torch_vae import loss_function, make_model, weights_from_npvae

EPOCH = 60_000


def npvae_setup(width, seed):
    from npvae import VAE
    from npvae.optim import Adam

    model = VAE(784, (width,), 20, activation="relu", likelihood="bernoulli", init="pytorch",
                seed=seed)
    return model, Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=1e-3)


def npvae_steps(model, optimizer, batches, rng):
    from npvae.train import train_step

    for xb in batches:
        train_step(model, optimizer, xb, rng=rng, check=False)


def torch_steps(net, optimizer, batches):
    for data in batches:
        optimizer.zero_grad()
        recon, mu, logvar = net(data)
        loss = loss_function(recon, data, mu, logvar)
        loss.backward()
        optimizer.step()


def products_bound(model, batch, steps, clock):
    """Seconds of the step's products, each timed alone (best of 7), over ``steps`` steps."""
    rng = np.random.default_rng(0)
    total = 0.0
    for _, M, K, N, ta, tb in gemm_shapes(model, batch):
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
        A, B = (a.T if ta else a), (b.T if tb else b)
        out = np.empty((M, N), np.float32)
        number = max(1, int(2e8 // (2 * M * K * N)))     # about 0.2 GFLOP a repeat
        np.matmul(A, B, out=out)
        best = float("inf")
        for _ in range(7):
            start = clock()
            for _ in range(number):
                np.matmul(A, B, out=out)
            best = min(best, (clock() - start) / number)
        total += best
    return total * steps


def measure(width, batch, x_train, args, torch):
    """Both sides at one (width, batch): seconds per epoch, loads, npvae's products."""
    steps = max(3, args.examples // batch)
    order = np.random.default_rng(args.seed).permutation(len(x_train))[:steps * batch]
    batches = [x_train[order[i:i + batch]] for i in range(0, len(order), batch)]
    torch_batches = [torch.from_numpy(b) for b in batches]
    model, optimizer = npvae_setup(width, args.seed)
    net = make_model(weights_from_npvae(model), hidden=width)
    torch_optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(args.seed)
    npvae_steps(model, optimizer, batches[:1], rng)                  # warm-up
    torch_steps(net, torch_optimizer, torch_batches[:1])
    clock = time.process_time if args.cpu_time else time.perf_counter
    runs = {"npvae": [], "torch": []}
    for rep in range(args.repeats):
        for side in (("npvae", "torch") if rep % 2 == 0 else ("torch", "npvae")):
            with _common.OtherLoad() as load:
                start = clock()
                if side == "npvae":
                    npvae_steps(model, optimizer, batches, rng)
                else:
                    torch_steps(net, torch_optimizer, torch_batches)
                seconds = clock() - start
            runs[side].append({"epoch_seconds": seconds / steps * EPOCH / batch,
                               "other_load_cpus": load.cpus})
    with _common.timed_matmul(clock) as products:
        start = clock()
        npvae_steps(model, optimizer, batches, rng)
        seconds = clock() - start
    bound = products_bound(model, batch, EPOCH / batch, clock)
    med = {side: _common.median([r["epoch_seconds"] for r in runs[side]]) for side in runs}
    return {"width": width, "batch": batch, "steps": steps, "runs": runs,
            "npvae_epoch_s": med["npvae"], "torch_epoch_s": med["torch"],
            "ratio_npvae_torch": med["npvae"] / med["torch"],
            "npvae_matmul_share": products.seconds / seconds,
            "gflop_per_epoch": epoch_flops(model, EPOCH) / 1e9,
            "products_bound_epoch_s": bound,
            "bound_gflops": epoch_flops(model, EPOCH) / 1e9 / bound,
            "npvae_over_bound": med["npvae"] / bound}


def conv_setup(x_train, seed):
    """npvae's ``conv`` preset model with Adam, and the PyTorch replica from its weights."""
    from benchmarks.torch_conv_vae import TorchConvTrainer, weights_from_npvae
    from npvae import VAE
    from npvae.config import TrainConfig
    from npvae.optim import Adam

    config = TrainConfig.from_preset("conv", seed=seed, figures=False, progress=False)
    model = VAE(**config.model_kwargs(784))
    optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=config.lr)
    trainer = TorchConvTrainer(x_train, weights_from_npvae(model), hidden=tuple(config.hidden),
                               latent=config.latent, batch_size=128, seed=seed)
    return model, optimizer, trainer


def threads_axis(args, torch):
    """Seconds per step of both sides, MLP and conv, at each thread count; speedups over 1."""
    from npvae.threads import blas_threads, set_threads
    try:
        from npvae.threads import current_threads   # npvae's own pool (npvae.parallel)
    except ImportError:                             # an --engine from before it: BLAS's
        current_threads = blas_threads

    cpus = os.cpu_count() or 1
    counts = [t for t in (int(n) for n in args.threads_axis.split(",")) if t <= cpus]
    x_train, _ = _common.mnist_arrays()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(x_train))
    mlp_batches = [x_train[order[i:i + 128]] for i in range(0, max(3, args.examples // 128) * 128,
                                                               128)]
    conv_batches = mlp_batches[:args.conv_steps]
    model, optimizer = npvae_setup(400, args.seed)
    net = make_model(weights_from_npvae(model), hidden=400)
    torch_optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    conv_model, conv_optimizer, conv_trainer = conv_setup(x_train, args.seed)
    sides = {
        ("mlp", "npvae"): lambda b: npvae_steps(model, optimizer, b, rng),
        ("mlp", "torch"): lambda b: torch_steps(net, torch_optimizer,
                                                [torch.from_numpy(x) for x in b]),
        ("conv", "npvae"): lambda b: npvae_steps(conv_model, conv_optimizer, b, rng),
        ("conv", "torch"): lambda b: [conv_trainer.step(torch.from_numpy(x)) for x in b],
    }
    points = []
    for threads in counts:
        set_threads(threads)
        torch.set_num_threads(threads)
        for (model_name, side), run in sides.items():
            batches = mlp_batches if model_name == "mlp" else conv_batches
            run(batches[:1])  # warm-up at this thread count
            times, loads = [], []
            for _ in range(args.repeats):
                load = os.getloadavg()[0]
                with _common.OtherLoad() as other:
                    start = time.perf_counter()
                    run(batches)
                    times.append((time.perf_counter() - start) / len(batches))
                loads.append({"loadavg": load, "other_cpus": other.cpus})
            points.append({"threads": threads, "model": model_name, "side": side,
                           "threads_used": current_threads() if side == "npvae"
                           else torch.get_num_threads(),
                           "blas_threads": blas_threads() if side == "npvae" else None,
                           "step_seconds": _common.median(times), "runs": times, "load": loads})
            print(f"  {threads:2d} threads {model_name:4s} {side:5s}: "
                  f"{1e3 * points[-1]['step_seconds']:8.2f} ms/step  (load average "
                  + ", ".join(f"{r['loadavg']:.1f}" for r in loads) + "; other CPUs "
                  + ", ".join(f"{r['other_cpus']:.2f}" for r in loads) + ")", flush=True)
    for p in points:
        one = next(q for q in points if q["threads"] == counts[0] and q["model"] == p["model"]
                   and q["side"] == p["side"])
        p["speedup"] = one["step_seconds"] / p["step_seconds"]
    return counts, points


def threads_figure(points, path, note):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, model_name in zip(axes, ("mlp", "conv")):
        counts = sorted({p["threads"] for p in points})
        for side, style in (("npvae", "o-"), ("torch", "s--")):
            rows = sorted((p for p in points if p["model"] == model_name and p["side"] == side),
                          key=lambda p: p["threads"])
            ax.plot([p["threads"] for p in rows], [p["speedup"] for p in rows], style,
                    label="npvae" if side == "npvae" else "PyTorch eager")
        ax.plot(counts, counts, ":", color="gray", label="perfect")
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.minorticks_off()
        ax.set_xlabel("threads")
        ax.set_ylabel("speedup over 1 thread (training step)")
        ax.set_title("784-400-20 MLP, batch 128" if model_name == "mlp"
                     else "conv preset, batch 128")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def figure(points, path, note):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = sorted({p["width"] for p in points})
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.4))
    for i, width in enumerate(widths):
        rows = sorted((p for p in points if p["width"] == width), key=lambda p: p["batch"])
        b = [p["batch"] for p in rows]
        color = f"C{i}"
        left.plot(b, [p["npvae_epoch_s"] for p in rows], "o-", color=color,
                  label=f"npvae, H={width}")
        left.plot(b, [p["torch_epoch_s"] for p in rows], "s--", color=color,
                  label=f"PyTorch, H={width}")
        left.plot(b, [p["products_bound_epoch_s"] for p in rows], ":", color=color,
                  label=f"npvae's products alone, H={width}")
        middle.plot(b, [p["npvae_over_bound"] for p in rows], "o-", color=color,
                    label=f"H={width}")
        right.plot(b, [100 * p["npvae_matmul_share"] for p in rows], "o-", color=color,
                   label=f"H={width}")
    batches = sorted({p["batch"] for p in points})
    for ax in (left, middle, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.grid(True, alpha=0.3)
    left.set_yscale("log")
    left.set_ylabel("seconds per epoch (60,000 examples)")
    left.set_title("784-H-20 VAE: one training epoch")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=f"C{i}", lw=6, label=f"H={w}") for i, w in enumerate(widths)]
    handles += [Line2D([], [], color="k", ls=ls, marker=m, label=name) for ls, m, name in
                (("-", "o", "npvae"), ("--", "s", "PyTorch"), (":", "", "npvae's products alone"))]
    left.legend(handles=handles, fontsize=7, ncol=2)
    middle.axhline(1.0, color="k", lw=0.8)
    middle.set_ylim(bottom=0)
    middle.set_ylabel("npvae's epoch / its products alone")
    middle.set_title("distance to the products' bound")
    middle.legend(fontsize=8)
    right.set_ylim(0, 100)
    right.set_ylabel("% of npvae's epoch in matrix products")
    right.set_title("share in matrix products")
    right.legend(fontsize=8)
    fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def figure_note(args):
    clock = "CPU time" if args["cpu_time"] else "wall clock"
    return (f"benchmarks/scaling.py: {args['threads']} thread(s) for both, {clock}, "
            f"{args['examples']} examples per point scaled to 60,000, "
            f"medians of {args['repeats']} interleaved runs")


def main(argv=None):
    parser = _common.script_parser(__doc__, epochs=0)
    parser.add_argument("--widths", default="400,1024,2048")
    parser.add_argument("--batch-sizes", default="32,64,128,256,512,1024")
    parser.add_argument("--examples", type=int, default=4096,
                        help="examples timed per point and side (at least 3 steps)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per side")
    parser.add_argument("--seed", type=int, default=1)
    _common.add_cpu_time_argument(parser)
    parser.add_argument("--figure", default=str(_common.RESULTS / "scaling.png"))
    parser.add_argument("--replot", type=Path, metavar="JSON",
                        help="only redraw the figure from a results file")
    parser.add_argument("--threads-axis", default=None, metavar="LIST",
                        help="measure the speedup from threads instead, at these counts "
                             "(e.g. 1,2,4,8,16; those above the CPUs are left out)")
    parser.add_argument("--conv-steps", type=int, default=8,
                        help="conv steps per point with --threads-axis (default 8)")
    args = parser.parse_args(argv)
    if args.threads_axis:
        torch = _common.torch_for("scaling", None)
        print("load average at start:", os.getloadavg(), flush=True)
        counts, points = threads_axis(args, torch)
        rows = [(m, t, *(1e3 * next(p["step_seconds"] for p in points if p["model"] == m
                                    and p["side"] == side and p["threads"] == t)
                         for side in ("npvae", "torch")),
                 *(next(p["speedup"] for p in points if p["model"] == m and p["side"] == side
                        and p["threads"] == t) for side in ("npvae", "torch")))
                for m in ("mlp", "conv") for t in counts]
        rows = [(*r[:4], r[2] / r[3], *r[4:]) for r in rows]
        _common.print_table(rows, ["model", "threads", "npvae ms/step", "torch ms/step",
                                   "npvae/torch", "npvae speedup", "torch speedup"],
                            title="\ntraining step, batch 128, wall clock, medians of "
                                  f"{args.repeats} runs")
        note = (f"benchmarks/scaling.py --threads-axis: {os.cpu_count()} CPUs, wall clock, "
                f"load average {os.getloadavg()[0]:.1f} at the end")
        figure_path = (args.figure if args.figure != str(_common.RESULTS / "scaling.png")
                       else str(_common.RESULTS / "scaling_threads.png"))
        threads_figure(points, figure_path, note)
        _common.write_json("scaling_threads", {"args": vars(args),
                                               "machine": _common.machine_info(torch),
                                               "points": points,
                                               "load_average_at_end": os.getloadavg()}, args.out)
        return
    if args.replot is not None:
        results = json.loads(args.replot.read_text())
        figure(results["points"], args.figure, figure_note(results["args"]))
        return
    _common.check_cpu_time(parser, args)
    torch = _common.torch_for("scaling", args.threads)
    x_train, _ = _common.mnist_arrays()
    print("load average at start:", os.getloadavg(), flush=True)
    points = []
    for width in (int(w) for w in args.widths.split(",")):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            p = measure(width, batch, x_train, args, torch)
            points.append(p)
            print(f"  H={width:5d} B={batch:5d}: npvae {p['npvae_epoch_s']:7.2f} s/epoch, "
                  f"torch {p['torch_epoch_s']:7.2f}, ratio {p['ratio_npvae_torch']:.2f}, "
                  f"products {100 * p['npvae_matmul_share']:.0f}%, bound "
                  f"{p['products_bound_epoch_s']:.2f} s ({p['npvae_over_bound']:.2f}x), other CPUs "
                  + " ".join(f"{r['other_load_cpus']:.2f}" for s in p["runs"]
                             for r in p["runs"][s]), flush=True)
    rows = [(p["width"], p["batch"], p["npvae_epoch_s"], p["torch_epoch_s"],
             p["ratio_npvae_torch"], f"{100 * p['npvae_matmul_share']:.0f}%",
             p["gflop_per_epoch"], p["products_bound_epoch_s"], p["npvae_over_bound"])
            for p in points]
    _common.print_table(rows, ["H", "batch", "npvae s/epoch", "torch s/epoch", "npvae/torch",
                               "npvae in products", "GFLOP/epoch", "products' bound s",
                               "npvae/bound"],
                        title=f"\n{args.threads} threads, {'CPU' if args.cpu_time else 'wall'} "
                              f"time; {args.examples} examples per point, "
                              f"medians of {args.repeats} interleaved runs, scaled to 60,000")
    print("load average at the end:", os.getloadavg())
    figure(points, args.figure, figure_note(vars(args)))
    _common.write_json("scaling", {"args": vars(args), "machine": _common.machine_info(torch),
                                   "points": points, "load_average_at_end": os.getloadavg()},
                       args.out)


if __name__ == "__main__":
    main()
