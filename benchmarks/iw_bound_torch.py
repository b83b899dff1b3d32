"""npvae's importance-weighted bound against the same estimator in PyTorch, side by side.

Both sides evaluate L_k = log (1/k) sum_j p(x|z_j) p(z_j) / q(z_j|x) on MNIST's
test set with the same weights (an npvae 784-400-20 model: ``--run RUN``, or
one trained here for ``--epochs`` epochs with ``npvae train``), in float32,
batched over 100 examples, chunked over samples with a running log-sum-exp,
and with the same noise: both draw eps from a NumPy Generator seeded alike, in
the same order (per batch of examples, chunks of shape (chunk, 100, 20)), so
the two bounds must agree to float32 rounding, and the script says by how much.

- ``npvae``: ``npvae.evaluate.iw_bounds`` as ``npvae evaluate --iw-samples K``
  runs it (its default chunking);
- ``torch``: the estimator written plainly in PyTorch on ``torch_vae.py``'s
  model (the example's ``nn.Linear`` layers, loaded with the same weights):
  decoder, ``F.binary_cross_entropy_with_logits(..., reduction="none")``,
  log p(z) and log q(z|x) from their formulas, ``torch.logsumexp`` per chunk
  and ``torch.logaddexp`` across chunks, under ``torch.no_grad()``. Its chunk
  is the fastest of ``--torch-chunks`` on a short trial.

For each k in ``--ks`` the two sides run ``--repeats`` times, interleaved (the
order alternates), each run timed together with the CPUs other processes used
meanwhile (``_common.OtherLoad``). k = 5000 on the full test set takes many
minutes a side; ``--examples-large N`` runs the k >= 1000 cases on the first N
test examples only (the table says so), ``--repeats-large`` times.

On a machine other processes share, ``--threads 1 --cpu-time`` times both
sides by the CPU time their process ran, which waiting for a core does not
inflate.

Then npvae's fast estimator against its plain reference (``plain=True``) on
the same noise (``--examples-plain`` examples, k = 100): the two bounds and
the largest per-example difference, in float32. And a profile of npvae alone
(k = 100): ``numpy.matmul`` swapped for a timed wrapper (every product of the
estimator goes through ``xp.matmul``), giving the share of its time in matrix
products, the products' GFLOP (counted from the shapes) and their GFLOP/s,
and a chunk-shaped sgemm alone (the bound the products set). Last, a floor
at the run's threads: the products' FLOPs at the best rate this machine's
sgemm reaches on the chunk's shape (split by npvae's pool, or by OpenBLAS's
own threads), plus the likelihood's NumPy passes alone; over PyTorch's time
at k = 100 it is the least ratio npvae could reach here with its products
at that rate and no other cost but those passes.

Usage: ``python benchmarks/iw_bound_torch.py [--run RUN] [--ks 100,5000]
[--examples-large 1000] [--repeats 3] [--threads 2] [--threads 1 --cpu-time]``
"""

if __name__ == "__main__":  # threads first: OpenBLAS reads them once, when NumPy loads
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import threads_from_argv

    threads_from_argv()

import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import _common
from benchmarks.torch_vae import make_model, weights_from_npvae

LOG_2PI = math.log(2 * math.pi)
BATCH = 100


# ---------------------------------------------------------------- the two estimators


def npvae_bounds(model, x, k, seed, progress=None):
    """Per-example L_k from npvae, as ``npvae evaluate`` computes them: host (N,)."""
    from npvae.evaluate import iw_bounds

    return iw_bounds(model, x, k, np.random.default_rng(seed), batch_size=BATCH,
                     progress=progress)


def torch_bounds(net, x, k, seed, chunk, torch):
    """Per-example L_k from the estimator written in PyTorch: (N,) float64."""
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    out = []
    with torch.no_grad():
        for start in range(0, len(x), BATCH):
            xb = torch.from_numpy(x[start:start + BATCH])
            mu, logvar = net.encode(xb)
            std = torch.exp(0.5 * logvar)
            acc = None
            for c0 in range(0, k, chunk):
                eps = torch.from_numpy(rng.standard_normal((min(chunk, k - c0), *mu.shape),
                                                           dtype=np.float32))
                z = mu + std * eps                                          # (c, B, Z)
                logits = net.fc4(F.relu(net.fc3(z)))                        # (c, B, D)
                log_px_z = -F.binary_cross_entropy_with_logits(
                    logits, xb.expand_as(logits), reduction="none").sum(-1)
                log_pz = -0.5 * (z * z + LOG_2PI).sum(-1)
                log_qz = -0.5 * (((z - mu) / std) ** 2 + logvar + LOG_2PI).sum(-1)
                lse = torch.logsumexp(log_px_z + log_pz - log_qz, dim=0)    # (B,)
                acc = lse if acc is None else torch.logaddexp(acc, lse)
            out.append((acc - math.log(k)).double().numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------- setup


def load_or_train(run, epochs):
    """An npvae model from run folder ``run``, or one trained here for ``epochs`` epochs."""
    from npvae.checkpoint import model_from_checkpoint
    from npvae.cli import main as npvae_main

    if run is None:
        run = Path(tempfile.mkdtemp(prefix="iw_bound_torch_")) / "run"
        print(f"training the pytorch-example preset for {epochs} epochs in {run} ...", flush=True)
        npvae_main(["train", "--epochs", str(epochs), "--run-dir", str(run), "--no-figures",
                    "--no-progress"])
    model, _ = model_from_checkpoint(run)
    c = model.config
    if (c["x_dim"], len(c["hidden"]), c["latent"], c["activation"], c["likelihood"]) != \
            (784, 1, 20, "relu", "bernoulli"):
        sys.exit(f"--run {run}: {model!r}; the PyTorch side is the example's 784-H-20 ReLU "
                 "Bernoulli VAE")
    return model, str(run)


CLOCK = time.perf_counter
"""The clock of every timing: the wall clock, or with ``--cpu-time`` the process's CPU time."""


def timed(fn):
    """(result, seconds by CLOCK, other processes' CPUs meanwhile)."""
    with _common.OtherLoad() as load:
        start = CLOCK()
        result = fn()
        seconds = CLOCK() - start
    return result, seconds, load.cpus


def pick_torch_chunk(net, x, chunks, seed, torch):
    """The fastest chunk for the PyTorch side on a short trial (k = 100, the first 500 examples)."""
    trial = {}
    for chunk in chunks:
        _, seconds, load = timed(lambda: torch_bounds(net, x[:500], 100, seed, chunk, torch))
        trial[chunk] = {"seconds": seconds, "other_load_cpus": load}
        print(f"  torch chunk {chunk}: {seconds:.2f} s (other CPUs {load:.2f})", flush=True)
    return min(trial, key=lambda c: trial[c]["seconds"]), trial


def side_by_side(model, net, x, k, repeats, seed, torch_chunk, torch):
    """Interleaved runs of both sides: per-run seconds, loads and the two bounds."""
    runs = {"npvae": [], "torch": []}
    values = {}
    for rep in range(repeats):
        order = ("npvae", "torch") if rep % 2 == 0 else ("torch", "npvae")
        for side in order:
            fn = ((lambda: npvae_bounds(model, x, k, seed)) if side == "npvae" else
                  (lambda: torch_bounds(net, x, k, seed, torch_chunk, torch)))
            bounds, seconds, load = timed(fn)
            values[side] = bounds
            runs[side].append({"seconds": seconds, "other_load_cpus": load})
            print(f"  k={k} {side:6s} {seconds:8.2f} s  other CPUs {load:.2f}  "
                  f"bound {bounds.mean():.4f}", flush=True)
    return runs, values


# ---------------------------------------------------------------- profile


def estimator_flops(model, n, k):
    """FLOPs of the products of npvae's estimator: encoder once per example, decoder k times,
    the data term's x W^T once per example and a dot per sample."""
    enc = [layer.params["W"].shape for layer in model.encoder.layers if layer.params]
    dec = [layer.params["W"].shape for layer in model.decoder.layers if layer.params]
    H, D = dec[-1]
    per_example = sum(2 * a * b for a, b in enc) + 2 * D * H
    per_sample = sum(2 * a * b for a, b in dec) + 2 * H + 2 * 2 * D  # + the ones-vector sums
    return n * per_example + n * k * per_sample


def gemm_gflops(rows, H, D, repeats=7):
    """GFLOP/s of the estimator's main product alone, (rows, H) @ (H, D), best of ``repeats``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, H), dtype=np.float32)
    w = rng.standard_normal((H, D), dtype=np.float32)
    out = np.empty((rows, D), np.float32)
    np.matmul(a, w, out=out)
    best = min(_seconds(lambda: np.matmul(a, w, out=out)) for _ in range(repeats))
    return 2 * rows * H * D / best / 1e9


def _seconds(fn):
    start = CLOCK()
    fn()
    return CLOCK() - start


def profile_npvae(model, x, k, seed):
    """npvae's estimator with every ``numpy.matmul`` timed, on ONE thread (a product split
    across npvae's threads would be timed once per part, in parallel)."""
    from npvae import evaluate
    parallel = _common.engine_pool()

    threads = parallel.workers() if parallel else 1
    if parallel:
        parallel.set_workers(1)
    try:
        with _common.timed_matmul(CLOCK) as clock:
            _, seconds, load = timed(lambda: npvae_bounds(model, x, k, seed))
    finally:
        if parallel:
            parallel.set_workers(threads)
    flops = estimator_flops(model, len(x), k)
    H, D = model.decoder.layers[-1].params["W"].shape
    rows = BATCH * evaluate._default_chunk(model, k, BATCH, plain=False)
    peak = gemm_gflops(rows, H, D)
    return {"k": k, "examples": len(x), "seconds": seconds, "other_load_cpus": load,
            "matmul_seconds": clock.seconds, "matmul_calls": clock.calls,
            "matmul_share": clock.seconds / seconds, "gflop": flops / 1e9,
            "products_gflops": flops / 1e9 / clock.seconds,
            "chunk_gemm_alone_gflops": peak, "chunk_rows": rows,
            "bound_seconds": flops / 1e9 / peak, "distance_to_bound": seconds / (flops / 1e9 / peak)}


def floor(model, n, k, threads):
    """The least time npvae's estimator of k samples on n examples could take here, at
    ``threads`` threads, with its likelihood's passes as they are and everything else
    perfect: its products' FLOPs at the best rate this machine's sgemm reaches on the
    chunk's main product, (rows, H) @ (H, D), split by npvae's pool or by OpenBLAS's own
    threads, plus the likelihood's NumPy passes alone over the same logits, timed on one
    chunk and scaled to all of them.

    The passes are ``losses.bernoulli_nll_linear`` with a hidden layer of 16 units, less
    its product's FLOPs at the best rate (so they are not overstated); they are timed
    first, since OpenBLAS's threads, once used, spin for a while and slow the pool.
    """
    from npvae import evaluate, threads as npvae_threads
    from npvae.losses import bernoulli_nll_linear
    parallel = _common.engine_pool()
    H, D = model.decoder.layers[-1].params["W"].shape
    per_chunk = evaluate._default_chunk(model, k, BATCH, plain=False)
    rows, small = BATCH * per_chunk, 16
    rng = np.random.default_rng(0)
    h = rng.standard_normal((BATCH, per_chunk, small), dtype=np.float32)
    x = rng.random((BATCH, D), dtype=np.float32)
    w1 = rng.standard_normal((small, D), dtype=np.float32) / small
    b = np.zeros(D, np.float32)
    bernoulli_nll_linear(h, w1, b, x)
    chunk_s = min(_seconds(lambda: bernoulli_nll_linear(h, w1, b, x)) for _ in range(7))
    a = rng.standard_normal((rows, H), dtype=np.float32)
    w = rng.standard_normal((H, D), dtype=np.float32)
    out = np.empty((rows, D), np.float32)

    def rate(product, repeats=7):
        product()
        return 2 * rows * H * D / min(_seconds(product) for _ in range(repeats)) / 1e9
    rates = {} if parallel is None else {
        "npvae's pool": rate(lambda: parallel.matmul(a, w, out=out))}
    workers = parallel.workers() if parallel else 1
    if parallel:
        parallel.set_workers(1)
    npvae_threads._call(npvae_threads._SET, npvae_threads.ctypes.c_int(threads))
    try:
        rates["OpenBLAS's threads"] = rate(lambda: np.matmul(a, w, out=out))
    finally:
        npvae_threads._call(npvae_threads._SET, npvae_threads.ctypes.c_int(1))
        if parallel:
            parallel.set_workers(workers)
    best = max(rates.values())
    passes = chunk_s - 2 * rows * small * D / best / 1e9
    flops = estimator_flops(model, n, k)
    products_s = flops / 1e9 / best
    passes_s = passes * n * k / rows
    return {"k": k, "examples": n, "threads": threads, "chunk_rows": rows,
            "sgemm_gflops": rates, "gflop": flops / 1e9, "products_seconds": products_s,
            "passes_seconds_per_chunk": passes, "passes_seconds": passes_s,
            "floor_seconds": products_s + passes_s}


def fast_against_plain(model, x, k, seed):
    """npvae's fast estimator and its plain reference on the same noise, in float32."""
    from npvae.evaluate import iw_bounds

    runs = {}
    for plain in (False, True):
        bounds, seconds, load = timed(lambda: iw_bounds(model, x, k, np.random.default_rng(seed),
                                                        batch_size=BATCH, plain=plain))
        runs["plain" if plain else "fast"] = (bounds, seconds, load)
    (fast, fast_s, fast_load), (plain, plain_s, plain_load) = runs["fast"], runs["plain"]
    return {"k": k, "examples": len(x), "fast_bound": float(fast.mean()),
            "plain_bound": float(plain.mean()),
            "max_abs_difference_per_example": float(np.abs(fast - plain).max()),
            "fast_seconds": fast_s, "plain_seconds": plain_s,
            "other_load_cpus": [fast_load, plain_load]}


# ---------------------------------------------------------------- main


def main(argv=None):
    parser = _common.script_parser(__doc__, epochs=3)
    parser.add_argument("--run", help="npvae run folder to take the weights from "
                        "(default: train the pytorch-example preset for --epochs epochs)")
    parser.add_argument("--ks", default="100,5000", help="importance samples, comma separated")
    parser.add_argument("--examples", type=int, default=10000,
                        help="test examples for k < 1000 (default: all 10000)")
    parser.add_argument("--examples-large", type=int, default=10000,
                        help="test examples for k >= 1000 (default: all 10000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per side")
    parser.add_argument("--examples-plain", type=int, default=1000,
                        help="test examples for npvae's fast-against-plain check (default 1000)")
    parser.add_argument("--repeats-large", type=int, default=1,
                        help="interleaved runs per side for k >= 1000 (default 1)")
    parser.add_argument("--torch-chunks", default="10,50,100",
                        help="chunks tried for the PyTorch side; the fastest is used")
    parser.add_argument("--seed", type=int, default=0, help="seeds the noise of both sides")
    _common.add_cpu_time_argument(parser)
    args, torch = _common.parse_with_torch(parser, argv, "iw_bound_torch")
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter

    model, run = load_or_train(args.run, args.epochs)
    net = make_model(weights_from_npvae(model), hidden=model.config["hidden"][0]).eval()
    _, x_test = _common.mnist_arrays()
    print("uptime at start:", os.getloadavg())
    print("choosing the PyTorch chunk ...")
    torch_chunk, trial = pick_torch_chunk(net, x_test, [int(c) for c in args.torch_chunks.split(",")],
                                          args.seed, torch)
    results, rows = [], []
    for k in (int(v) for v in args.ks.split(",")):
        n, repeats = ((args.examples_large, args.repeats_large) if k >= 1000 else
                      (args.examples, args.repeats))
        runs, values = side_by_side(model, net, x_test[:n], k, repeats, args.seed,
                                    torch_chunk, torch)
        med = {side: _common.median([r["seconds"] for r in runs[side]]) for side in runs}
        diff = float(np.abs(values["npvae"] - values["torch"]).max())
        bound = float(values["npvae"].mean())
        results.append({"k": k, "examples": n, "runs": runs, "median_seconds": med,
                        "ratio_npvae_torch": med["npvae"] / med["torch"],
                        "bound_npvae": bound, "bound_torch": float(values["torch"].mean()),
                        "max_abs_difference_per_example": diff,
                        "standard_error": float(values["npvae"].std(ddof=1) / math.sqrt(n))})
        rows.append((k, n, med["npvae"], med["torch"], med["npvae"] / med["torch"], bound,
                     float(values["torch"].mean()), f"{diff:.1e}",
                     " ".join(f"{r['other_load_cpus']:.2f}" for side in runs for r in runs[side])))
    print("npvae's fast estimator against its plain one (k=100) ...", flush=True)
    plain_check = fast_against_plain(model, x_test[:args.examples_plain], 100, args.seed)
    print("profiling npvae (k=100, numpy.matmul timed, one thread) ...", flush=True)
    profile = profile_npvae(model, x_test[:args.examples], 100, args.seed)
    _common.print_table(rows, ["k", "examples", "npvae s", "torch s", "npvae/torch", "npvae bound",
                               "torch bound", "max |diff|", "other CPUs (npvae.., torch..)"],
                        title=f"\nimportance-weighted bound, float32, {args.threads} threads, "
                              f"{'CPU' if args.cpu_time else 'wall'} time, "
                              f"torch chunk {torch_chunk}; medians of interleaved runs")
    print(f"npvae profile (k=100, {profile['examples']} examples, one thread): "
          f"{profile['seconds']:.2f} s, "
          f"matmul {profile['matmul_seconds']:.2f} s ({100 * profile['matmul_share']:.1f}%), "
          f"{profile['gflop']:.0f} GFLOP at {profile['products_gflops']:.0f} GFLOP/s in the "
          f"products; the chunk's sgemm alone {profile['chunk_gemm_alone_gflops']:.0f} GFLOP/s, "
          f"so the products' bound is {profile['bound_seconds']:.2f} s and npvae is "
          f"{profile['distance_to_bound']:.2f}x it")
    print(f"npvae fast vs plain (k=100, {plain_check['examples']} examples, float32): bound "
          f"{plain_check['fast_bound']:.6f} vs {plain_check['plain_bound']:.6f}, largest "
          f"per-example difference {plain_check['max_abs_difference_per_example']:.1e}; "
          f"{plain_check['fast_seconds']:.2f} s vs {plain_check['plain_seconds']:.2f} s")
    print("the floor: npvae's products at this machine's best sgemm rate, plus its "
          "likelihood's passes alone (k=100) ...", flush=True)
    low = floor(model, args.examples, 100, args.threads)
    hundred = next((r for r in results if r["k"] == 100 and r["examples"] == args.examples), None)
    if hundred is not None:
        low["torch_seconds"] = hundred["median_seconds"]["torch"]
        low["floor_ratio"] = low["floor_seconds"] / low["torch_seconds"]
    print(f"floor (k=100, {low['examples']} examples, {low['threads']} threads): "
          f"{low['gflop']:.0f} GFLOP at the best sgemm rate, "
          + ", ".join(f"{v:.0f} GFLOP/s ({name})" for name, v in low["sgemm_gflops"].items())
          + f": {low['products_seconds']:.2f} s; the likelihood's passes alone "
          f"{low['passes_seconds']:.2f} s; together {low['floor_seconds']:.2f} s"
          + (f", {low['floor_ratio']:.2f}x PyTorch's {low['torch_seconds']:.2f} s"
             if "floor_ratio" in low else ""))
    print("load average at the end:", os.getloadavg())
    _common.write_json("iw_bound_torch", {
        "args": vars(args), "run": run, "machine": _common.machine_info(torch),
        "torch_chunk": torch_chunk, "torch_chunk_trial": trial, "results": results,
        "npvae_profile": profile, "fast_against_plain": plain_check, "floor": low,
        "load_average_at_end": os.getloadavg()}, args.out)


if __name__ == "__main__":
    main()
