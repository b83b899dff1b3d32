"""npvae's own threads (``npvae.parallel``) give the one-thread results bit for bit.

- ``split`` cuts range(n) into contiguous blocks that cover it once;
- ``run`` calls every block, and an error in a pool thread reaches the caller;
- ``matmul`` equals ``np.matmul`` entry for entry (compared with ``==``) for
  the shapes the layers use, split by columns and by rows, into ``out`` or
  not; so does ``matmuls`` (independent products side by side, and a
  product riding chunk by chunk along a long one); a product split along
  its inner dimension (summed in another order) is not, which shows that
  the comparison can fail; a wide product in blocks of columns is the same
  with any thread count (and ``np.matmul``'s bits for the conv preset's);
- ``apply`` equals the single ufunc call in entries, dtype and memory order,
  for the layouts the layers pass (C order, batch-last views, cropped views,
  mixed);
- an epoch of ``fit`` on the ``conv`` and ``pytorch-example`` presets ends at
  the same weights, byte for byte, with 1, 2 and 3 threads, and so does
  ``npvae.train.train`` on the two-stochastic-layer IWAE, the VQ-VAE and the
  conditional VAE with 1 and 2; the fast importance-weighted estimator gives
  the same log weights (Bernoulli and Gaussian);
- a child forked while the pool has threads computes on one thread.
"""

import hashlib
import os
import select
import signal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npvae import parallel
from npvae.activations import ReLU
from npvae.config import TrainConfig
from npvae.optim import Adam
from npvae.train import fit
from npvae.vae import VAE
from tests.timeouts import safety_net


@pytest.fixture
def workers():
    """Set npvae's pool to n threads inside a test; back to what it was after."""
    before = parallel.workers()
    yield parallel.set_workers
    parallel.set_workers(before)


@given(st.integers(0, 500), st.integers(1, 9))
def test_split_covers_range_once_in_contiguous_blocks(n, parts):
    ranges = parallel.split(n, parts)
    assert [i for start, stop in ranges for i in range(start, stop)] == list(range(n))
    sizes = [stop - start for start, stop in ranges]
    assert len(ranges) == max(1, min(n, parts)) and max(sizes) - min(sizes) <= 1


def test_run_calls_every_block_and_passes_errors_on(workers):
    workers(3)
    seen = []
    parallel.run(lambda i, j: seen.append((i, j)), parallel.split(10))
    assert sorted(seen) == [(0, 3), (3, 6), (6, 10)]

    def fails(i, j):
        if i > 0:
            raise ValueError(f"block {i}:{j}")
    with pytest.raises(ValueError, match="block"):
        parallel.run(fails, parallel.split(10))


def test_passes_take_at_most_max_pass_parts_and_products_every_thread(workers, monkeypatch):
    """On many threads an elementwise pass is cut into at most MAX_PASS_PARTS parts (memory
    bound: more parts were slower on 16 cores), a large product into one part per thread."""
    workers(8)
    parts = []

    def run_all(calls):
        parts.append(len(calls))
        for call in calls:
            call()
    monkeypatch.setattr(parallel, "_run_all", run_all)
    big = 64 * parallel.MIN_SIZE
    parallel.elementwise(lambda i, j: None, 64, big)
    x = np.random.default_rng(0).standard_normal((64, big // 64)).astype(np.float32)
    np.testing.assert_array_equal(parallel.apply(np.maximum, x, 0), np.maximum(x, 0))
    a, b = (np.ones(shape, np.float32) for shape in ((288, 64), (64, 25088)))
    np.testing.assert_array_equal(parallel.matmul(a, b), a @ b)
    assert parts == [parallel.MAX_PASS_PARTS, parallel.MAX_PASS_PARTS, 8]
    assert parallel.pass_parts() == parallel.MAX_PASS_PARTS == 4
    workers(3)
    assert parallel.pass_parts() == 3


@pytest.mark.parametrize("threads, outer, inner", [(2, 2, 1), (8, 2, 4), (8, 3, 2), (3, 2, 1)])
def test_work_split_inside_a_part_takes_the_parts_share_of_the_threads(workers, threads,
                                                                       outer, inner):
    """A part (a conv VAE's chunk of examples) splits its own work across threads // parts
    (whole in its own thread when that is 1), and nested splitting finishes: the pool never
    holds more waiting work than it has threads."""
    workers(threads)
    import threading
    seen = []

    def part(i, j):
        mine = threading.get_ident()
        blocks = []
        parallel.run(lambda a, b: blocks.append((a, b, threading.get_ident())),
                     parallel.split(100))
        seen.append((i, sorted(blocks), mine))
    parallel.run(part, parallel.split(outer, outer))
    assert sorted(i for i, _, _ in seen) == list(range(outer))
    for _, blocks, mine in seen:
        assert [(a, b) for a, b, _ in blocks] == parallel.split(100, inner)
        if inner == 1:
            assert blocks[0][2] == mine            # whole, in the part's own thread
    assert parallel.split(100) == parallel.split(100, threads)   # outside parts: every thread


# (m, k, n) of the layers' products: conv preset (batch 128) and the MLP.
SHAPES = [(288, 64, 25088), (64, 288, 25088), (288, 25088, 64), (9, 32, 100352),
          (128, 784, 400), (784, 128, 400), (128, 400, 784), (7, 5, 3), (128, 3136, 40)]
# long products (parallel.long_chunk): the conv layers' weight gradients where one side has
# one channel, in both orientations
LONG_SHAPES = [(9, 100352, 32), (32, 100352, 9), (9, 25088, 32), (9, 5000, 32)]


@pytest.mark.parametrize("m, k, n", SHAPES)
@pytest.mark.parametrize("threads", [2, 3])
def test_matmul_equals_numpy_bit_for_bit(m, k, n, threads, workers):
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    expected = np.matmul(a, b)
    workers(threads)
    np.testing.assert_array_equal(parallel.matmul(a, b), expected)
    out = np.empty((m, n), dtype=np.float32)
    assert parallel.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, expected)
    # transposed views, as the layers pass them (x.T, W.T)
    np.testing.assert_array_equal(parallel.matmul(np.ascontiguousarray(a.T).T, b), expected)


@pytest.mark.parametrize("m, k, n", LONG_SHAPES)
def test_a_long_product_is_its_chunks_summed_in_order_for_any_thread_count(m, k, n, workers):
    """A long product is the sum of the chunks' products, added in order: the same bits with
    1, 2, 3 and 8 threads, equal to a plain loop over the chunks, and to the float64
    product within float32 rounding (another order of the same sum as ``np.matmul``'s)."""
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    chunk = parallel.long_chunk(m, k, n)
    assert chunk is not None and m * n * chunk <= parallel.LONG_PRODUCT and k >= 2 * chunk
    plain = a[:, :chunk] @ b[:chunk]
    for start in range(chunk, k, chunk):
        plain += a[:, start:start + chunk] @ b[start:start + chunk]
    for threads in (1, 2, 3, 8):
        workers(threads)
        np.testing.assert_array_equal(parallel.matmul(a, b), plain)
        np.testing.assert_array_equal(parallel.matmuls([(a, b, None), (a[:3], b, None)])[0],
                                      plain)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    assert np.max(np.abs(plain - exact) / scale) < k ** 0.5 * np.finfo(np.float32).eps


@pytest.mark.parametrize("m, k, n", LONG_SHAPES[:3])
def test_a_product_riding_along_a_long_one_equals_numpy_bit_for_bit(m, k, n, workers):
    """The transposed convolution's dW^T = cols @ x2^T (long) and dx = W2 @ cols (its columns
    along the long axis), as ``ConvTranspose2D.backward`` asks for them: computed chunk by
    chunk together, dx is ``np.matmul``'s bits and dW^T the chunks' sum in order, with 1, 2,
    3 and 8 threads."""
    rng = np.random.default_rng(m + n + k)
    cols = rng.standard_normal((m, k)).astype(np.float32)
    x2 = rng.standard_normal((n, k)).astype(np.float32)
    W2 = rng.standard_normal((n, m)).astype(np.float32)
    chunk = parallel.long_chunk(m, k, n)
    plain = cols[:, :chunk] @ x2.T[:chunk]
    for start in range(chunk, k, chunk):
        plain += cols[:, start:start + chunk] @ x2.T[start:start + chunk]
    dx = np.matmul(W2, cols)
    assert parallel._riders([(cols, x2.T, None), (W2, cols, None)], [chunk, None]) == {0: [1]}
    for threads in (1, 2, 3, 8):
        workers(threads)
        got = parallel.matmuls([(cols, x2.T, None), (W2, cols, None)])
        np.testing.assert_array_equal(got[0], plain)
        np.testing.assert_array_equal(got[1], dx)


@pytest.mark.parametrize("m, k, n, exact", [(9, 32, 100352, True), (32, 9, 100352, True),
                                            (32, 9, 25088, True), (9, 32, 5000, False)])
def test_a_wide_product_in_column_blocks_is_the_same_for_any_thread_count(m, k, n, exact,
                                                                           workers):
    """A wide product (``wide_chunk``: the one-channel layers' forwards) computed in blocks
    of columns: the same bits with 1, 2, 3 and 8 threads, alone or beside another product,
    as a plain loop over the blocks; ``np.matmul``'s bits for the conv preset's shapes, and
    within float32 rounding of them where OpenBLAS's kernel for small products rounds the
    last columns of a block otherwise (n = 5000: its last 8)."""
    rng = np.random.default_rng(m * k + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    chunk = parallel.wide_chunk(m, k, n)
    assert chunk is not None and m * k * chunk <= parallel.LONG_PRODUCT and n >= 2 * chunk
    blocks = np.concatenate([a @ b[:, i:i + chunk] for i in range(0, n, chunk)], axis=1)
    for threads in (1, 2, 3, 8):
        workers(threads)
        np.testing.assert_array_equal(parallel.matmul(a, b), blocks)
        np.testing.assert_array_equal(parallel.matmuls([(a, b, None), (a[:3], b, None)])[0],
                                      blocks)
    whole = np.matmul(a, b)
    if exact:
        np.testing.assert_array_equal(blocks, whole)
    scale = np.abs(a) @ np.abs(b)
    assert np.max(np.abs(blocks - whole) / scale) < k * np.finfo(np.float32).eps


def test_only_wide_products_are_cut_into_column_blocks():
    assert parallel.wide_chunk(9, 32, 100352) == parallel.wide_chunk(32, 9, 100352) == 2048
    assert parallel.wide_chunk(9, 32, 3000) is None             # fewer than two blocks
    assert parallel.wide_chunk(288, 64, 25088) is None          # a left side too large
    assert parallel.wide_chunk(128, 784, 400) is None
    assert parallel.wide_chunk(9, 32, 100352, xp=object()) is None   # not NumPy: whole


def test_only_long_products_are_chunked():
    assert parallel.long_chunk(9, 100352, 32) == 2048
    assert parallel.long_chunk(9, 3000, 32) is None             # fewer than two chunks
    assert parallel.long_chunk(128, 3136, 40) is None           # a result too large
    assert parallel.long_chunk(288, 25088, 64) is None
    assert parallel.long_chunk(9, 100352, 32, xp=object()) is None   # not NumPy: whole


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_independent_products_side_by_side_equal_numpy_bit_for_bit(threads, workers):
    """``matmuls``: a layer's dW and dx at once (whole, or split when threads are left over),
    each the same entries as its own ``np.matmul``; one into a given ``out``."""
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((128, 784)).astype(np.float32)
    dout = rng.standard_normal((128, 400)).astype(np.float32)
    W = rng.standard_normal((784, 400)).astype(np.float32)
    expected = [np.matmul(x.T, dout), np.matmul(dout, W.T)]
    workers(threads)
    dW = np.empty((784, 400), dtype=np.float32)
    got = parallel.matmuls([(x.T, dout, dW), (dout, W.T, None)])
    assert got[0] is dW
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_a_product_split_along_its_inner_dimension_is_caught(workers):
    """Summing the inner dimension in two halves rounds differently: the ``==`` comparison
    above would fail for such a split."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((288, 25088)).astype(np.float32)
    b = rng.standard_normal((25088, 64)).astype(np.float32)
    halves = np.matmul(a[:, :12544], b[:12544]) + np.matmul(a[:, 12544:], b[12544:])
    assert not np.array_equal(halves, np.matmul(a, b))


def layouts(rng):
    """(x, dout) pairs in the layouts ReLU meets in the models, float32, large enough to split."""
    bl = rng.standard_normal((32, 28, 28, 128)).astype(np.float32)
    padded = rng.standard_normal((32, 30, 30, 128)).astype(np.float32)
    c_order = rng.standard_normal((128, 32, 28, 28)).astype(np.float32)
    flat = rng.standard_normal((128, 1568)).astype(np.float32)
    bl_flat = rng.standard_normal((1568, 128)).astype(np.float32)
    return [
        (bl.transpose(3, 0, 1, 2), c_order),                         # batch-last, C-order dout
        (padded[:, 1:29, 1:29].transpose(3, 0, 1, 2), bl.transpose(3, 0, 1, 2)),  # cropped view
        (c_order, c_order * 2),
        (flat, bl_flat.T),                                           # Reshape's view of batch-last
    ]


@pytest.mark.parametrize("threads", [2, 3])
def test_relu_forward_and_backward_equal_the_single_call(threads, workers):
    rng = np.random.default_rng(1)
    for x, dout in layouts(rng):
        workers(1)
        layer = ReLU()
        out1, dx1 = layer.forward(x), layer.backward(dout)
        workers(threads)
        out2, dx2 = layer.forward(x), layer.backward(dout)
        for one, many in ((out1, out2), (dx1, dx2)):
            np.testing.assert_array_equal(many, one)
            assert many.dtype == one.dtype and many.strides == one.strides
            assert np.array_equal(np.signbit(many), np.signbit(one))  # -0.0 stays -0.0


def trained_weights(preset, n_train, threads, workers):
    workers(threads)
    config = TrainConfig.from_preset(preset, n_train=n_train, figures=False,
                                     progress=False).validate()
    rng = np.random.default_rng(5)
    x = rng.random((n_train, 784)).astype(np.float32)
    model = VAE(**config.model_kwargs(784))
    optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=config.lr)
    history = fit(model, optimizer, x, epochs=1, batch_size=128, seed=3, log=lambda line: None)
    return history, hashlib.sha256(model.theta.tobytes()).hexdigest()


@pytest.mark.parametrize("preset, n_train", [("conv", 512), ("pytorch-example", 2048)])
def test_an_epoch_ends_at_the_same_weights_with_any_thread_count(preset, n_train, workers):
    one = trained_weights(preset, n_train, 1, workers)
    for threads in (2, 3, 8):   # 8: products in 8 parts, passes in MAX_PASS_PARTS
        assert trained_weights(preset, n_train, threads, workers) == one, threads


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_importance_weighted_log_weights_are_the_same_with_any_thread_count(likelihood,
                                                                                workers):
    from npvae.evaluate import iw_log_weights

    model = VAE(784, (400,), 20, likelihood=likelihood, seed=2)
    x = np.random.default_rng(3).random((100, 784)).astype(np.float32)
    seen = []
    for threads in (1, 2, 3):
        workers(threads)
        seen.append(iw_log_weights(model, x, 30, np.random.default_rng(4)))
    for other in seen[1:]:
        np.testing.assert_array_equal(other, seen[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_computes_on_one_thread_without_hanging(workers):
    """A child forked while the pool has threads (multiprocessing's default on Linux) has
    none of them: it falls back to one thread, where waiting on the parent's pool would hang."""
    workers(2)
    a = np.random.default_rng(0).standard_normal((256, 784)).astype(np.float32)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's teardown
        try:
            ok = parallel.workers() == 1 and np.array_equal(parallel.matmul(a, a.T), a @ a.T)
            os.write(write, b"ok" if ok else b"wrong")
        finally:
            os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], safety_net(120))  # a net against a hang
    if not ready:
        os.kill(pid, signal.SIGKILL)
    with os.fdopen(read, "rb") as pipe:
        answer = pipe.read() if ready else b"hung"
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert parallel.workers() == 2  # the parent keeps its pool


@pytest.mark.parametrize("preset, n_train", [("burda2-iwae", 200), ("vqvae", 256),
                                             ("cvae", 512)])
def test_every_kind_of_model_trains_to_the_same_weights_with_any_thread_count(
        preset, n_train, workers, tmp_path):
    """``npvae.train.train`` itself, on models with their own code around the layers: two
    stochastic layers with the k-sample objective, the VQ-VAE (its codebook, restarts and
    moving averages), the conditional VAE."""
    from npvae.train import train

    weights = []
    for threads in (1, 2):
        workers(threads)
        extra = {"prior_epochs": 0, "restart_every": 2} if preset == "vqvae" else {}
        config = TrainConfig.from_preset(preset, n_train=n_train, epochs=1, figures=False,
                                         progress=False, **extra)
        result = train(config, tmp_path / f"run{threads}", log=lambda line: None)
        weights.append(b"".join(np.ascontiguousarray(p).tobytes()
                                for p in result.model.params.values()))
    assert weights[0] == weights[1]


def test_terms_are_added_in_order_in_blocks_the_same_with_any_thread_count(workers):
    """``add_in_order`` (a long product's sums over chunks, a chunked step's gradients) adds
    each entry's terms in their order, in blocks across the threads: 1-D and 2-D, one term
    or several, the same bits as adding them one after the other."""
    rng = np.random.default_rng(7)
    for shape in ((300_001,), (700, 431)):
        terms = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
        for n in (1, 3):
            expected = terms[0].copy()
            for term in terms[1:n]:
                expected += term
            for threads in (1, 2, 3):
                workers(threads)
                out = np.empty(shape, np.float32)
                parallel.add_in_order(terms[:n], out)
                assert np.array_equal(out, expected), (shape, n, threads)
    # the order shows in float32: (1 + 1e8) - 1e8 is 0, (-1e8 + 1e8) + 1 is 1
    terms = [np.full(4, v, np.float32) for v in (1.0, 1e8, -1e8)]
    out = np.empty(4, np.float32)
    parallel.add_in_order(terms, out)
    assert np.array_equal(out, np.zeros(4, np.float32))
    parallel.add_in_order(terms[::-1], out)
    assert np.array_equal(out, np.ones(4, np.float32))
