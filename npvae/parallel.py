"""npvae's own threads: large matrix products and elementwise passes split across a small pool.

With ``--threads N`` (N > 1) npvae does not hand the threads to its BLAS.
BLAS stays at one thread, and npvae splits each large piece of work into N
parts, one per thread, itself:

- a matrix product ``a @ b`` into column blocks of ``b`` (or row blocks of
  ``a`` when ``a`` has more rows than ``b`` has columns), each part one BLAS
  call writing its own block of the result (``matmul``); independent
  products, such as a layer's dW and dx, side by side, each whole on a
  thread of its own when there are as many products as threads
  (``matmuls``);
- an elementwise pass (ReLU, im2col, col2im, a bias, Adam's blocks, the
  importance-weighted bound's likelihood, a sum of terms in their order)
  into blocks of rows, channels or examples (``elementwise``, ``apply``,
  ``add_in_order``).

NumPy releases the GIL inside a BLAS call and inside its copies and ufunc
loops, so the parts run at once. Why not BLAS's own threads: OpenBLAS's
idle threads spin after each product, on the very core the next
elementwise pass wants, so a pool beside them makes that pass slower, not
faster (``benchmarks/README.md``); and a pool thread waiting for work
sleeps, it does not spin, so it takes no core from other processes. Each
part is the same computation on fewer rows or columns, so the results are
the same with any number of threads (``tests/test_parallel.py`` compares
them bit for bit: every entry of a product is summed over the same inner
dimension in the same order, and an elementwise pass has nothing to sum).

Each part gets at least ``MIN_FLOPS`` of a product or ``MIN_SIZE`` entries of
an elementwise pass, so smaller work runs whole in the calling thread (and
on a machine with many cores, mid-sized work on only some of them): handing
a part over costs about 50 us, more than a smaller part saves. With one
thread (``--threads 1``; the default is the idle CPUs, at most 8:
``npvae.threads``) every function here is the plain NumPy call.

Work split from inside a part (a conv VAE's chunk of examples,
``npvae.chunked``) goes to the part's share of the threads (the threads over
the parts running at once): with 2 threads and 2 chunks each chunk runs
whole on its thread; with 8, each is split across 4. The blocks are the
same either way, so are the results. Only a part with two threads or more
splits its work and waits for it, so at most half the threads wait while
the others take the queued work: a part never waits on work no thread is
free to take.

An elementwise pass is split into at most ``MAX_PASS_PARTS`` parts, however
many threads there are. Such passes are bound by memory bandwidth, which a
few cores already use up: on a 16-core Xeon, passes split across all the
threads made the conv preset's step 54 ms at 8 threads and 67 at 16, passes
in at most 4 parts 47 and 58 ms (``python benchmarks/pool_parts.py``,
``results/pool_parts_16cpu.json``; the MLP's 4.7 and 5.8 against 4.4 and 5.3).
Products keep all the threads.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from .backend import xp_of

MIN_FLOPS = 1 << 22   # 4 MFLOP: the least of a product worth a part of its own
MIN_SIZE = 1 << 16    # entries: the least of an elementwise pass worth a part of its own
MAX_PASS_PARTS = 4    # the most parts an elementwise pass is split into (see the docstring)

_workers = 1
_pool = None


def workers():
    """The threads npvae splits work across (1: no splitting)."""
    return _workers


def set_workers(n):
    """Split work across ``n`` threads from now on (the caller's and n - 1 in a pool)."""
    global _workers, _pool
    n = int(n)
    if n < 1:
        raise ValueError(f"workers={n!r} must be at least 1")
    if n != _workers:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool = ThreadPoolExecutor(n - 1, thread_name_prefix="npvae") if n > 1 else None
        _workers = n
    return n


def _after_fork():
    """A forked child has no pool threads: start over with one thread."""
    global _workers, _pool
    _workers, _pool = 1, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def split(n, parts=None):
    """range(n) as up to ``parts`` (default ``workers()``) contiguous (start, stop) ranges,
    sizes differing by at most one."""
    parts = max(1, min(n, _threads() if parts is None else parts))
    edges = [n * i // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def run(function, ranges):
    """``function(start, stop)`` for each of ``ranges``: the first in this thread, the rest in
    the pool, all finished (or the first error raised) before it returns."""
    _run_all([partial(function, start, stop) for start, stop in ranges])


def _run_all(calls):
    """Each of ``calls`` (no arguments): the first in this thread, the rest in the pool; all
    finished (or the first error raised) before it returns. Each call runs as a part with
    its share of the calling thread's threads (``_as_part``); with one thread, in turn,
    here."""
    threads = _threads()
    if len(calls) == 1 or _pool is None or threads == 1:
        for call in calls:
            call()
        return
    calls = [partial(_as_part, call, max(1, threads // len(calls))) for call in calls]
    futures = [_pool.submit(call) for call in calls[1:]]
    try:
        calls[0]()
    finally:
        for future in futures:
            future.result()


_inside = threading.local()   # .threads: the share of the threads of the part running here


def _threads():
    """The threads the calling thread splits its work across: npvae's, or inside a part, the
    part's share of them (the threads over the parts run at once, at least 1)."""
    return getattr(_inside, "threads", _workers)


def _as_part(call, threads):
    """``call()`` as a part with ``threads`` threads: work it splits goes to that many (with
    1, it runs whole in this thread)."""
    outer = getattr(_inside, "threads", None)
    _inside.threads = threads
    try:
        call()
    finally:
        if outer is None:
            del _inside.threads
        else:
            _inside.threads = outer


def elementwise(function, n, size, xp=np):
    """``function(start, stop)`` over blocks of range(n), an axis of arrays of ``size`` entries
    in all: one block per ``MIN_SIZE`` entries, at most ``pass_parts()``; the whole range in
    one call for arrays that are not NumPy's."""
    run(function, split(n, _parts(size, MIN_SIZE, xp, MAX_PASS_PARTS)))


def pass_parts():
    """The most parts an elementwise pass is split into now: the threads, at most
    ``MAX_PASS_PARTS``."""
    return min(_threads(), MAX_PASS_PARTS)


def product_parts(flops, xp=np):
    """How many parts work of ``flops``, mostly matrix products, is split into: one per
    ``MIN_FLOPS``, at most the threads (``_parts``)."""
    return _parts(flops, MIN_FLOPS, xp)


def _parts(work, least, xp=np, most=None):
    """How many parts ``work`` is split into: one per ``least`` of it, at most the threads
    (and at most ``most``), one for non-NumPy arrays."""
    threads = _threads()
    most = threads if most is None else min(threads, most)
    if threads == 1 or xp is not np:
        return 1
    return max(1, min(most, int(work // least)))


def apply(function, x, *others):
    """``function(x, *others)`` for an elementwise ``function`` that takes ``out=``, computed
    in blocks of x's slowest axis across the threads.

    ``others`` are arrays of x's shape (or scalars). With one thread, or a
    small or non-NumPy x, it is the single call ``function(x, *others)``.
    Otherwise the result is allocated with the memory order NumPy's ufuncs
    would give it (``_like``), so that the blocks fill the same array the
    single call returns, entry for entry and stride for stride.
    """
    parts = _parts(x.size, MIN_SIZE, xp_of(x), MAX_PASS_PARTS)
    if parts == 1 or x.ndim == 0:
        return function(x, *others)
    arrays = [x] + [a for a in others if np.ndim(a)]
    out = _like(arrays, np.result_type(*arrays))
    axis = max(range(x.ndim), key=lambda a: abs(out.strides[a]) * (x.shape[a] > 1))

    def block(i, j):
        index = (slice(None),) * axis + (slice(i, j),)
        function(x[index], *[a[index] if np.ndim(a) else a for a in others], out=out[index])
    run(block, split(x.shape[axis], parts))
    return out


def _like(arrays, dtype):
    """An empty array of the arrays' shape in the memory order a NumPy ufunc gives its result:
    the arrays' common order of axes (by stride) where they agree, C order where they do
    not."""
    orders = {tuple(sorted(range(a.ndim), key=lambda d: -abs(a.strides[d]) if a.shape[d] > 1
                           else 0)) for a in arrays}
    if len(orders) == 1:
        return np.empty_like(arrays[0], dtype=dtype)
    return np.empty(arrays[0].shape, dtype=dtype)


def matmul(a, b, xp=np, out=None):
    """a @ b for a (m, k) and b (k, n), split into column (or row) blocks across the threads;
    written into ``out`` (m, n) when given.

    The same entries as ``xp.matmul(a, b)``: each is the same dot product of
    k terms, summed by the same BLAS kernel in the same order. Other
    backends (CuPy) and small products go to ``xp.matmul`` whole. A long
    product (``long_chunk``) is summed over chunks of k instead, and a wide
    one (``wide_chunk``) is computed in fixed blocks of columns.
    """
    return matmuls([(a, b, out)], xp)[0]


def matmuls(products, xp=np):
    """[a @ b for (a, b, out) in ``products``] (each into ``out`` unless it is None):
    independent products computed at once across the threads.

    The threads are shared out in proportion to the products' work, so two
    equal products on two threads run whole, side by side (a layer's dW and
    dx: no product is cut smaller than it is), and on more threads each is
    split into blocks as ``matmul`` splits one. The same entries as
    ``xp.matmul`` of each, whole, except for a long product (``long_chunk``)
    and maybe a wide one's last columns (``wide_chunk``).

    A product whose columns run along a long product's inner axis (as many
    columns as the long product's k: the transposed convolution's dx = W2 @
    cols beside its dW^T = cols @ x2^T) rides along with it, chunk by chunk:
    each thread takes a range of the chunks and computes their terms of the
    long product and those columns of the rider, while the chunk of the
    matrix they share is in the cache (``_chunk_products``). Its columns are
    computed as a wide product's blocks are (``wide_chunk``).
    """
    flops = [2 * a.shape[0] * b.shape[1] * a.shape[1] for a, b, _ in products]
    chunks = [long_chunk(a.shape[0], a.shape[1], b.shape[1], xp) for a, b, _ in products]
    wide = [wide_chunk(a.shape[0], a.shape[1], b.shape[1], xp) for a, b, _ in products]
    if _parts(sum(flops), MIN_FLOPS, xp) == 1 and not any(chunks) and not any(wide):
        return [xp.matmul(a, b, out=out) for a, b, out in products]
    outs = [np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b)) if out is None
            else out for a, b, out in products]
    riders = _riders(products, chunks)
    ridden = {j for along in riders.values() for j in along}
    calls, sums = [], []
    for i, ((a, b, _), out, work, chunk) in enumerate(zip(products, outs, flops, chunks)):
        if i in ridden:
            continue    # computed chunk by chunk with its long product
        if chunk:
            terms = np.empty((-(-a.shape[1] // chunk), *out.shape), dtype=out.dtype)
            along = [(*products[r][:2], outs[r]) for r in riders.get(i, ())]
            # alone, its chunks run in one call (a second thread gained nothing); with riders,
            # in ranges of chunks across the threads
            parts = _parts(work + sum(flops[r] for r in riders.get(i, ())), MIN_FLOPS) \
                if along else 1
            calls += [partial(_chunk_products, a, b, terms, chunk, along, first, stop)
                      for first, stop in split(len(terms), parts)]
            sums.append((terms, out))
        else:
            share = max(1, round(_threads() * work / sum(flops)))
            calls += _blocks(a, b, out, min(share, _parts(work, MIN_FLOPS)), wide[i])
    _run_all(calls)
    for terms, out in sums:
        add_in_order(terms, out)
    return outs


def _riders(products, chunks):
    """{i: [j, ...]}: for each long product i, the products j (not long) whose columns run
    along its inner axis (b_j has as many columns as a_i has), each given to one long
    product."""
    riders, taken = {}, set()
    for i, chunk in enumerate(chunks):
        if chunk:
            along = [j for j, (_, b, _) in enumerate(products) if not chunks[j]
                     and j not in taken and b.shape[1] == products[i][0].shape[1]]
            taken.update(along)
            if along:
                riders[i] = along
    return riders


LONG_PRODUCT = 10 ** 6   # m n chunk: OpenBLAS's kernel for small products applies below this


def long_chunk(m, k, n, xp=np):
    """The chunk of the inner dimension k in which a long product (m, k) @ (k, n) is summed,
    or None for a product taken whole.

    A long product has a small result and a long inner dimension: a
    convolution's weight gradient where a layer has one channel, (9, 100352)
    @ (100352, 32) in the conv preset's last layer, summed over every pixel
    of the batch. OpenBLAS computes it about 2.7 times faster as a sum of
    products over chunks of k small enough for its kernel for small products
    (m n chunk at most ``LONG_PRODUCT``): 0.94 ms against 2.53 in one call, on
    one thread (``benchmarks/pool_vs_blas_threads.py``,
    ``results/pool_vs_blas_threads_r2.json``). The chunk is the
    largest power of two that fits, at least 256; a product is long when k
    holds at least two chunks. The chunks are fixed by the shapes, so the
    sum is the same for any thread count (``tests/test_parallel.py``); it is
    the same sum as one call's in another order, so equal to it within
    float32 rounding. Alone, its chunks run in one call: on two threads,
    split, they were no faster (1.6 ms against 1.2 for the conv preset's);
    with a product riding along (``matmuls``) they are split across the
    threads, each range of chunks with its rider's columns.
    """
    if xp is not np or m * n * 256 > LONG_PRODUCT:
        return None
    chunk = 1 << (LONG_PRODUCT // (m * n)).bit_length() - 1
    return chunk if k >= 2 * chunk else None


def wide_chunk(m, k, n, xp=np):
    """The columns per block of a wide product (m, k) @ (k, n), or None for a product taken
    whole.

    A wide product has a small left side and many columns: a convolution
    where one side has one channel, W^T @ x2 = (9, 32) @ (32, 100352) in the
    conv preset's last layer (its forward). OpenBLAS computes it in blocks of
    columns small enough for its kernel for small products (m k chunk at
    most ``LONG_PRODUCT``) about 1.8 times faster than in one call (49
    against 27 GFLOP/s on one thread, ``benchmarks/README.md``). The chunk is
    the largest power of two that fits, at least 256; a product is wide when
    n holds at least two chunks. The blocks are fixed by the shapes, so the
    result is the same for any thread count; the threads take ranges of them
    (``_blocks``). Each is a column block of the whole product: for the conv
    preset's shapes ``xp.matmul``'s very bits, but where a block's last
    columns are not a multiple of 16 OpenBLAS's kernel for small products may
    round them differently from its kernel for large ones (within float32
    rounding: ``tests/test_parallel.py``).
    """
    return long_chunk(m, n, k, xp)


def _chunk_products(a, b, terms, chunk, along=(), first=0, stop=None):
    """terms[t] = a[:, t chunk:(t + 1) chunk] @ b[t chunk:(t + 1) chunk] for the chunks t in
    [first, stop) (default: all), and for each (a2, b2, out2) riding ``along``, those chunks'
    columns of out2 = a2 @ b2."""
    for t in range(first, len(terms) if stop is None else stop):
        cut = slice(t * chunk, (t + 1) * chunk)
        np.matmul(a[:, cut], b[cut], out=terms[t])
        for a2, b2, out2 in along:
            np.matmul(a2, b2[:, cut], out=out2[:, cut])


def add_in_order(terms, out):
    """out = terms[0] + terms[1] + ..., each entry added in that order, in blocks of out's
    first axis across the threads: the same bits with any number of them. ``terms``: arrays
    of out's shape (a long product's sums over chunks, a chunked step's gradients)."""
    xp = xp_of(out)

    def add(i, j):
        if len(terms) == 1:
            out[i:j] = terms[0][i:j]
            return
        xp.add(terms[0][i:j], terms[1][i:j], out=out[i:j])
        for term in terms[2:]:
            out[i:j] += term[i:j]
    elementwise(add, out.shape[0], out.size, xp)


def _blocks(a, b, out, parts, chunk=None):
    """The calls that fill out = a @ b in ``parts`` blocks: of b's columns, or of a's rows
    when a has more rows than b has columns; for a wide product (``wide_chunk``), ranges of
    its column blocks of ``chunk``."""
    m, n = a.shape[0], b.shape[1]
    if chunk:
        return [partial(_column_blocks, a, b, out, chunk, first, stop)
                for first, stop in split(-(-n // chunk), parts)]
    if n >= m:
        return [partial(np.matmul, a, b[:, i:j], out=out[:, i:j]) for i, j in split(n, parts)]
    return [partial(np.matmul, a[i:j], b, out=out[i:j]) for i, j in split(m, parts)]


def _column_blocks(a, b, out, chunk, first, stop):
    """out[:, t chunk:(t + 1) chunk] = a @ b[:, t chunk:(t + 1) chunk] for t in [first, stop)."""
    for t in range(first, stop):
        cut = slice(t * chunk, (t + 1) * chunk)
        np.matmul(a, b[:, cut], out=out[:, cut])
