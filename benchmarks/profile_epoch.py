"""Where an epoch of npvae's 784-400-20 VAE goes: matrix products, elementwise work, Adam.

Three measurements, npvae only:

1. Phases. The real model and optimizer train for ``--epochs`` epochs with
   timers around their pieces: every ``matmul`` of the dense layers (their
   array module is swapped for a timing proxy), the rest of the dense layers
   (bias add, bias gradient), the activations, the likelihood and its
   gradient, the rest of forward/backward (KL, reparameterization, glue),
   Adam's step, and what is left (batch gathering, the loop). Medians over
   epochs. (npvae.train takes the gradient norm only with ``--clip``; the
   preset has none, so neither does this step.)
2. Matrix products against the machine. The epoch's FLOPs counted from the
   layer shapes, the GFLOP/s the training's products achieved, the same set
   of products timed alone on random data, and a large square sgemm (the
   machine's float32 peak); PyTorch's (MKL) on the same products if
   installed.
3. Adam and subnormals. Two identical runs (same seed, data order and
   noise), with ``flush_every=0`` (no flushing) and the default: per-epoch
   seconds of the epoch and of the optimizer step, subnormal entries of m
   and v at each epoch's end, and the largest |theta| difference at the end.

Usage: ``python benchmarks/profile_epoch.py [--epochs 3] [--threads 2]``
"""

if __name__ == "__main__":  # threads first: OpenBLAS reads them once, when NumPy loads
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import threads_from_argv

    threads_from_argv()

import inspect
import time
from collections import defaultdict
from functools import wraps

import numpy as np

from benchmarks import _common

PHASES = ("matmul", "dense other (bias, db)", "activations", "likelihood",
          "KL, reparam, glue", "optimizer", "batching, loop")
ELEMENTWISE = ("dense other (bias, db)", "activations", "likelihood", "KL, reparam, glue")


def make_model(seed):
    from npvae import VAE

    return VAE(784, (400,), 20, activation="relu", likelihood="bernoulli", init="pytorch",
               seed=seed)


def dense_layers(model):
    return [layer for layer in model.encoder.layers + model.decoder.layers if layer.params]


def epoch_flops(model, n):
    """FLOPs of one epoch's matrix products: 2 n_in n_out per example for each product.

    Per dense layer: the forward x @ W, the weight gradient x^T @ dout, and
    the input gradient dout @ W^T except for the encoder's first layer (its
    input is data: npvae skips it, as autograd does).
    """
    layers = dense_layers(model)
    total = 0
    for layer in layers:
        n_in, n_out = layer.params["W"].shape
        products = 2 if layer is layers[0] else 3
        total += products * 2 * n_in * n_out * n
    return total


def gemm_shapes(model, batch):
    """The (M, K, N, transpose a, transpose b) of each product of one training step."""
    shapes = []
    layers = dense_layers(model)
    for layer in layers:
        n_in, n_out = layer.params["W"].shape
        shapes.append(("forward x @ W", batch, n_in, n_out, False, False))
        shapes.append(("dW = x^T @ dout", n_in, batch, n_out, True, False))
        if layer is not layers[0]:
            shapes.append(("dx = dout @ W^T", batch, n_out, n_in, False, True))
    return shapes


# ---------------------------------------------------------------- 1. phases


class Clock:
    def __init__(self):
        self.seconds = defaultdict(float)

    def wrap(self, phase, fn):
        seconds = self.seconds

        @wraps(fn)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[phase] += time.perf_counter() - start
        return timed


def instrument(model, optimizer, clock):
    """Put timers around the model's and optimizer's pieces (instance attributes, and
    ``npvae.parallel.matmul`` until the function returned is called)."""
    layers = model.encoder.layers + model.decoder.layers
    untime = _common.time_products([layer for layer in layers if layer.params],
                                   lambda f: clock.wrap("matmul", f))
    for layer in layers:
        if layer.params:
            layer.forward = clock.wrap("dense", layer.forward)
            layer.backward = clock.wrap("dense", layer.backward)
        else:
            layer.forward = clock.wrap("activations", layer.forward)
            layer.backward = clock.wrap("activations", layer.backward)
    model.nll = clock.wrap("likelihood", model.nll)
    model.nll_backward = clock.wrap("likelihood", model.nll_backward)
    model.forward = clock.wrap("forward", model.forward)
    model.backward = clock.wrap("backward", model.backward)
    optimizer.step = clock.wrap("optimizer", optimizer.step)
    return untime


def train_epochs(model, optimizer, x_train, orders, batch_size, rng, clock=None):
    """``npvae.train.train_step`` over each epoch's order: a list of dicts of seconds per epoch.

    Each dict holds ``epoch`` and ``optimizer step`` and, with a ``clock``,
    each phase; also the subnormal entries of Adam's m_sum and v_sum at the
    epoch's end and the CPUs other processes used meanwhile.
    """
    from npvae.train import train_step

    optimizer_seconds = [0.0]
    step, wrapped = optimizer.step, "step" in vars(optimizer)  # (instrument may have wrapped it)

    def timed_step():
        start = time.perf_counter()
        step()
        optimizer_seconds[0] += time.perf_counter() - start

    optimizer.step = timed_step
    epochs = []
    try:
        for order in orders:
            if clock is not None:
                clock.seconds.clear()
            load = _common.OtherLoad().start()
            start = time.perf_counter()
            optimizer_seconds[0] = 0.0
            for i in range(0, len(order), batch_size):
                # check=False: the data are checked once, as npvae.train does
                terms = train_step(model, optimizer, x_train[order[i:i + batch_size]], rng=rng,
                                   check=False)
                float(terms.loss)
            row = {"epoch": time.perf_counter() - start, "optimizer step": optimizer_seconds[0],
                   "other_load_cpus": load.stop(),
                   "subnormal m": count_subnormals(optimizer.m_sum["theta"]),
                   "subnormal v": count_subnormals(optimizer.v_sum["theta"])}
            if clock is not None:
                row.update(phases(clock.seconds, row["epoch"]))
            epochs.append(row)
    finally:
        if wrapped:
            optimizer.step = step
        else:
            del optimizer.step
    return epochs


def phases(s, epoch):
    """Exclusive seconds per phase from the inclusive timers."""
    out = {
        "matmul": s["matmul"],
        "dense other (bias, db)": s["dense"] - s["matmul"],
        "activations": s["activations"],
        "likelihood": s["likelihood"],
        "KL, reparam, glue": s["forward"] + s["backward"] - s["dense"] - s["activations"]
        - s["likelihood"],
        "optimizer": s["optimizer"],
    }
    out["batching, loop"] = epoch - sum(out.values())
    return out


def count_subnormals(a):
    return int(((a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)).sum())


def clean_medians(rows, keys, max_load):
    """Median of each key over the epochs with other load under ``max_load`` (all, if none)."""
    clean = [r for r in rows if r["other_load_cpus"] < max_load]
    return {k: _common.median([r[k] for r in clean or rows]) for k in keys}, len(clean)


def profile_phases(x_train, epochs, batch_size, seed, max_load):
    from npvae.optim import Adam

    model = make_model(seed)
    optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=1e-3)
    clock = Clock()
    untime = instrument(model, optimizer, clock)
    orders = _common.epoch_orders(len(x_train), epochs, seed)
    try:
        rows = train_epochs(model, optimizer, x_train, orders, batch_size,
                            np.random.default_rng(seed), clock)
    finally:
        untime()
    median, clean = clean_medians(rows, ("epoch", *PHASES), max_load)
    return model, rows, median, clean


# ---------------------------------------------------------------- 2. products


def time_best(fn, repeats=7, number=20):
    """Least over ``repeats`` of the mean seconds of ``number`` calls (the best is the
    least disturbed by other processes)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def gemm_set(model, batch, n, torch=None):
    """Each product of a training step alone, NumPy's and (if given) PyTorch's: s per epoch."""
    rng = np.random.default_rng(0)
    steps = n / batch
    rows = []
    for name, M, K, N, ta, tb in gemm_shapes(model, batch):
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
        A, B = (a.T if ta else a), (b.T if tb else b)
        out = np.empty((M, N), np.float32)
        flops = 2 * M * K * N
        row = {"product": name, "shape": f"({M}x{K}) @ ({K}x{N})", "flops": flops,
               "numpy_s": time_best(lambda: np.matmul(A, B, out=out))}
        if torch is not None:
            At, Bt = torch.from_numpy(a), torch.from_numpy(b)
            At, Bt = (At.T if ta else At), (Bt.T if tb else Bt)
            out_t = torch.empty(M, N)
            row["torch_s"] = time_best(lambda: torch.mm(At, Bt, out=out_t))
        rows.append(row)
    total = {"flops_per_epoch": sum(r["flops"] for r in rows) * steps,
             "numpy_s_per_epoch": sum(r["numpy_s"] for r in rows) * steps}
    if torch is not None:
        total["torch_s_per_epoch"] = sum(r["torch_s"] for r in rows) * steps
    return rows, total


def square_sgemm(size, torch=None):
    """GFLOP/s of a (size x size) float32 product: the machine's peak as BLAS reaches it."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    out = np.empty_like(a)
    flops = 2 * size ** 3
    result = {"numpy": flops / time_best(lambda: np.matmul(a, a, out=out), 5, 3) / 1e9}
    if torch is not None:
        at = torch.from_numpy(a)
        out_t = torch.empty(size, size)
        result["torch"] = flops / time_best(lambda: torch.mm(at, at, out=out_t), 5, 3) / 1e9
    return result


# ---------------------------------------------------------------- 3. subnormals


def subnormal_experiment(x_train, epochs, batch_size, seed):
    """The same training with ``flush_every=0`` and with Adam's default; theta compared."""
    from npvae.optim import Adam

    default = inspect.signature(Adam).parameters["flush_every"].default  # 50
    orders = _common.epoch_orders(len(x_train), epochs, seed)
    results, thetas = {}, {}
    for flush_every in (0, default):
        model = make_model(seed)
        optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=1e-3,
                         flush_every=flush_every)
        rows = train_epochs(model, optimizer, x_train, orders, batch_size,
                            np.random.default_rng(seed))
        results[f"flush_every={flush_every}"] = rows
        thetas[flush_every] = model.theta.copy()
    diff = np.abs(thetas[0].astype(np.float64) - thetas[default]).max()
    scale = np.abs(thetas[default]).max()
    return results, float(diff), float(scale), default


def subnormal_penalty(n=652824):
    """Seconds of ``a *= 0.9`` on n normal floats and on n subnormal floats (the raw CPU cost)."""
    out = {}
    for name, value in (("normal", 1e-3), ("subnormal", 1e-40)):
        a = np.full(n, value, np.float32)
        o = np.empty_like(a)
        out[name] = time_best(lambda: np.multiply(a, np.float32(0.9), out=o), 5, 10)
    return out


# ---------------------------------------------------------------- report


def main(argv=None):
    parser = _common.script_parser(__doc__, epochs=3, training=True)
    parser.add_argument("--square", type=int, default=2048,
                        help="size of the square sgemm that measures the peak (default 2048)")
    args = parser.parse_args(argv)
    torch = _common.import_torch(args.threads)
    x_train, _ = _common.mnist_arrays()
    n = len(x_train)
    loads = {}

    def quiet():
        if args.quiet_wait > 0:
            _common.wait_for_quiet(timeout=args.quiet_wait)

    quiet()
    print(f"1. phases: {args.epochs} instrumented epochs ...", flush=True)
    with _common.OtherLoad() as load:
        model, phase_rows, median, clean = profile_phases(x_train, args.epochs,
                                                          args.batch_size, args.seed,
                                                          args.max_load)
    loads["phases"] = load.cpus
    quiet()
    print("2. matrix products alone ...", flush=True)
    with _common.OtherLoad() as load:
        products, product_total = gemm_set(model, args.batch_size, n, torch)
        peak = square_sgemm(args.square, torch)
    loads["products"] = load.cpus
    quiet()
    print(f"3. Adam with and without flushing subnormals: 2 x {args.epochs} epochs ...",
          flush=True)
    with _common.OtherLoad() as load:
        sub_runs, theta_diff, theta_scale, default_flush = subnormal_experiment(
            x_train, args.epochs, args.batch_size, args.seed)
        penalty = subnormal_penalty()
    loads["subnormals"] = load.cpus

    flops = epoch_flops(model, n)
    epoch = median["epoch"]
    elementwise = sum(median[k] for k in ELEMENTWISE)
    rows = [(k, median[k], f"{100 * median[k] / epoch:.1f}%") for k in PHASES]
    rows.append(("= elementwise (the four above matmul's)", elementwise,
                 f"{100 * elementwise / epoch:.1f}%"))
    rows.append(("epoch (instrumented)", epoch, "100%"))
    _common.print_table(rows, ["phase", "s/epoch (median)", "share"],
                        title=f"\n1. npvae 784-400-20, batch {args.batch_size}, float32, "
                              f"{args.threads} threads: where an epoch goes ("
                              + (f"median of {clean} clean epochs of {len(phase_rows)})" if clean
                                 else f"NO clean epoch: median of all {len(phase_rows)}, "
                                      "contended)"))

    achieved = flops / median["matmul"] / 1e9
    prow = [(r["product"], r["shape"], r["flops"] / r["numpy_s"] / 1e9,
             r["flops"] / r["torch_s"] / 1e9 if "torch_s" in r else "-") for r in products]
    _common.print_table(prow, ["product", "shape", "NumPy GFLOP/s", "PyTorch GFLOP/s"],
                        title="\n2. matrix products: each alone (random data, hot caches)")
    summary_rows = [
        ("epoch FLOPs (analytic)", f"{flops / 1e9:.1f} GFLOP"),
        ("matmul in training", f"{median['matmul']:.3f} s = {achieved:.0f} GFLOP/s"),
        ("same products alone, NumPy", f"{product_total['numpy_s_per_epoch']:.3f} s = "
         f"{flops / product_total['numpy_s_per_epoch'] / 1e9:.0f} GFLOP/s"),
    ]
    if "torch_s_per_epoch" in product_total:
        summary_rows.append(("same products alone, PyTorch",
                             f"{product_total['torch_s_per_epoch']:.3f} s = "
                             f"{flops / product_total['torch_s_per_epoch'] / 1e9:.0f} GFLOP/s"))
    for lib, gflops in peak.items():
        summary_rows.append((f"square {args.square} sgemm, {lib}", f"{gflops:.0f} GFLOP/s"))
    summary_rows.append(("whole epoch", f"{flops / epoch / 1e9:.0f} GFLOP/s "
                         f"({100 * median['matmul'] / epoch:.0f}% of the time in matmul)"))
    _common.print_table(summary_rows, ["", ""])

    srows = []
    for name, rs in sub_runs.items():
        for e, r in enumerate(rs):
            srows.append((name, e + 1, r["epoch"], r["optimizer step"], r["subnormal m"],
                          r["subnormal v"], f"{r['other_load_cpus']:.2f}"))
    _common.print_table(srows, ["Adam", "epoch", "epoch s", "optimizer s", "subnormal m",
                                "subnormal v", "other CPUs"],
                        title="\n3. Adam's moments and subnormals (same seed, order, noise)")
    print(f"max |theta(flush_every=0) - theta(flush_every={default_flush})| = {theta_diff:.3g} "
          f"(max |theta| = {theta_scale:.3g})")
    print(f"a *= 0.9 on {652824} floats: normal {penalty['normal'] * 1e6:.0f} us, subnormal "
          f"{penalty['subnormal'] * 1e6:.0f} us ({penalty['subnormal'] / penalty['normal']:.0f}x)")
    if any(v > args.max_load for v in loads.values()):
        print("note: other processes used CPUs meanwhile "
              f"({', '.join(f'{k} {v:.2f}' for k, v in loads.items())}); epochs above "
              f"{args.max_load} are left out of the medians, products take the best of 7")

    _common.write_json("profile_epoch", {
        "args": vars(args), "machine": _common.machine_info(torch), "other_load_cpus": loads,
        "phases": {"median_seconds": median, "clean_epochs": clean, "per_epoch": phase_rows},
        "flops_per_epoch": flops, "matmul_gflops_in_training": achieved,
        "matmul_share": median["matmul"] / epoch, "elementwise_share": elementwise / epoch,
        "optimizer_share": median["optimizer"] / epoch,
        "products_alone": {"rows": products, **product_total},
        "square_sgemm_gflops": peak,
        "subnormals": {"runs": sub_runs, "max_abs_theta_difference": theta_diff,
                       "max_abs_theta": theta_scale, "default_flush_every": default_flush,
                       "multiply_seconds": penalty},
    }, args.out)


if __name__ == "__main__":
    main()
