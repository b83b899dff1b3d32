"""Why npvae splits its work itself: a thread pool beside OpenBLAS's threads, and instead of them.

On the shapes of the conv preset's largest layer (the 64 -> 32 transposed
convolution, batch 128), all in one process, medians of ``--repeats``:

1. the product ``(288, 64) @ (64, 25088)``, the backward's ``(64, 288) @
   (288, 25088)`` and the weight gradient ``(288, 25088) @ (25088, 64)``: one
   call with OpenBLAS at 1 and at 2 threads, and with OpenBLAS at 1 thread
   split into two blocks across npvae's pool (``npvae.parallel.matmul``),
   whose result is checked equal, bit for bit, to the one-thread call;
2. the cost of handing work to the pool: ``parallel.run`` of two parts that
   do nothing, in microseconds (a sleeping thread woken and waited for);
3. the col2im that follows the first product (``conv.col2im_batch_last``),
   whole and split across the pool, each timed right after a product, with
   OpenBLAS at 2 threads (its idle thread spinning on the second core) and
   at 1;
4. a long product (``npvae.parallel.long_chunk``): the weight gradient of
   the conv preset's last layer, which has one channel, ``(9, 100352) @
   (100352, 32)``, as one call and summed over chunks of its inner dimension
   (``parallel.matmul``), with npvae's pool of 1 and of 2, OpenBLAS at 1
   thread; the largest difference from the float64 product, relative to
   sum |a| |b|, of each;
5. a wide product (``npvae.parallel.wide_chunk``): that layer's forward,
   ``(9, 32) @ (32, 100352)``, as one call and in blocks of columns
   (``parallel.matmul``, checked equal to the one call), pools of 1 and 2;
6. that layer's backward, the long weight gradient beside dx = W2 @ cols
   ``(32, 9) @ (9, 100352)`` (``parallel.matmuls``): each product whole on
   a thread of its own (the chunks in one call, dx in another: what
   ``matmuls`` did before dx rode along) against dx riding along the
   chunks, ranges of them across the threads; pools of 1 and 2.

Usage: ``python benchmarks/pool_vs_blas_threads.py [--repeats 15]``
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


def median_ms(function, repeats, before=None):
    """Median milliseconds of ``function()``, each run right after ``before()`` if given."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from npvae import conv, parallel, threads

    B = 128
    rng = np.random.default_rng(0)
    W = rng.standard_normal((64, 288)).astype(np.float32)        # (C_in, C_out k k)
    x2 = rng.standard_normal((64, 14 * 14 * B)).astype(np.float32)
    cols = rng.standard_normal((288, 14 * 14 * B)).astype(np.float32)
    products = {"forward (288, 64) @ (64, 25088)": (W.T, x2),
                "backward (64, 288) @ (288, 25088)": (W, cols),
                "weight gradient (288, 25088) @ (25088, 64)": (cols, x2.T)}
    rows, record = [], {"products": {}, "col2im": {}}
    for name, (a, b) in products.items():
        timings = {}
        for blas in (1, 2):
            threads._call(threads._SET, threads.ctypes.c_int(blas))
            parallel.set_workers(1)
            timings[f"one call, OpenBLAS {blas}"] = median_ms(lambda: np.matmul(a, b),
                                                              args.repeats)
        threads._call(threads._SET, threads.ctypes.c_int(1))
        parallel.set_workers(2)
        timings["split in npvae's pool of 2, OpenBLAS 1"] = median_ms(
            lambda: parallel.matmul(a, b), args.repeats)
        assert np.array_equal(parallel.matmul(a, b), np.matmul(a, b)), name
        record["products"][name] = timings
        rows += [(name, how, f"{ms:.2f}") for how, ms in timings.items()]

    parallel.set_workers(2)
    hand_over = 1e3 * median_ms(lambda: [parallel.run(lambda i, j: None, [(0, 1), (1, 2)])
                                         for _ in range(100)], args.repeats) / 100
    record["hand_over_us"] = hand_over
    rows.append(("hand-over: parallel.run of two empty parts", "pool of 2", f"{hand_over:.1f} us"))

    scattered = np.matmul(W.T, x2).reshape(32, 3, 3, 14, 14, B)
    shape = (32, 30, 30, B)
    for blas in (2, 1):
        threads._call(threads._SET, threads.ctypes.c_int(blas))
        product = (lambda: np.matmul(W.T, x2))
        for workers in (1, 2):
            parallel.set_workers(workers)
            how = "whole" if workers == 1 else "split in npvae's pool of 2"
            ms = median_ms(lambda: conv.col2im_batch_last(scattered, shape, 2), args.repeats,
                           before=product)
            key = f"{how}, after a product, OpenBLAS {blas}"
            record["col2im"][key] = ms
            rows.append(("col2im (32, 3, 3, 14, 14, 128) -> (32, 30, 30, 128)", key,
                         f"{ms:.2f}"))
    threads._call(threads._SET, threads.ctypes.c_int(1))
    a = rng.standard_normal((9, 28 * 28 * B)).astype(np.float32)      # cols of dout
    b = rng.standard_normal((32, 28 * 28 * B)).astype(np.float32).T   # x2^T
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    name = "long product (9, 100352) @ (100352, 32)"
    record["long_product"] = {}
    for how, workers, function in (("one call", 1, np.matmul),
                                   ("chunks, pool of 1", 1, parallel.matmul),
                                   ("chunks, pool of 2", 2, parallel.matmul)):
        parallel.set_workers(workers)
        ms = median_ms(lambda: function(a, b), args.repeats)
        error = float(np.max(np.abs(function(a, b) - exact) / scale))
        record["long_product"][how] = {"ms": ms, "max_relative_error": error}
        rows.append((name, f"{how}, OpenBLAS 1", f"{ms:.2f} (error {error:.1e})"))
    rows += wide_and_riding(a, b, rng, args.repeats, record)
    parallel.set_workers(1)
    _common.print_table(rows, ["work", "how", "ms (median)"],
                        title=f"\nmedians of {args.repeats}, float32")
    _common.write_json("pool_vs_blas_threads", {"args": vars(args),
                                                "machine": _common.machine_info(),
                                                **record}, args.out)


def wide_and_riding(cols, x2t, rng, repeats, record):
    """Sections 5 and 6 of the docstring for the last layer's cols (9, N) and x2^T (N, 32):
    rows for the table, timings into ``record``."""
    from functools import partial

    from npvae import parallel

    Wt = rng.standard_normal((9, 32)).astype(np.float32)            # W^T of the forward
    x2 = np.ascontiguousarray(x2t.T)
    name = f"wide product (9, 32) @ (32, {x2.shape[1]})"
    rows, record["wide_product"] = [], {}
    for how, workers, function in (("one call", 1, np.matmul),
                                   ("column blocks, pool of 1", 1, parallel.matmul),
                                   ("column blocks, pool of 2", 2, parallel.matmul)):
        parallel.set_workers(workers)
        assert np.array_equal(function(Wt, x2), np.matmul(Wt, x2)), how
        ms = median_ms(lambda: function(Wt, x2), repeats)
        record["wide_product"][how] = ms
        rows.append((name, f"{how}, OpenBLAS 1", f"{ms:.2f}"))

    W2 = np.ascontiguousarray(Wt.T)                                  # (32, 9)
    chunk = parallel.long_chunk(*cols.shape, x2t.shape[1])
    terms = np.empty((-(-cols.shape[1] // chunk), 9, 32), dtype=np.float32)

    def side_by_side():   # the chunks in one call, dx whole in another
        parallel._run_all([partial(parallel._chunk_products, cols, x2t, terms, chunk),
                           partial(np.matmul, W2, cols)])

    name = "backward: dW^T (9, N) @ (N, 32) and dx (32, 9) @ (9, N)"
    record["riding"] = {}
    for workers in (1, 2):
        parallel.set_workers(workers)
        for how, function in (("each whole on its own thread", side_by_side),
                              ("dx riding along the chunks",
                               lambda: parallel.matmuls([(cols, x2t, None), (W2, cols, None)]))):
            ms = median_ms(function, repeats)
            record["riding"][f"{how}, pool of {workers}"] = ms
            rows.append((name, f"{how}, pool of {workers}", f"{ms:.2f}"))
    return rows


if __name__ == "__main__":
    main()
