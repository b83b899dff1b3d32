"""A conv VAE's step in chunks of examples (``npvae.chunked``) against the unsplit step.

- the loss terms and every gradient equal ``model.forward`` / ``backward`` on
  the whole batch: in float64 within 1e-12 relative, in float32 within
  float32 rounding, for batches that split evenly and unevenly;
- chunks of unequal sizes are weighted by their sizes: a chunk's gradient
  taken as its own mean (1/n_c, not 1/B) is caught, and so are loss terms
  averaged as if the chunks were equal;
- the same bits with 1, 2, 3 and 8 threads, and the same noise as the unsplit
  step draws from the same generator;
- replicas share the model's parameters (an update shows at once) and keep
  gradients of their own; only a conv ``VAE`` with more than ``CHUNK`` examples
  and its own ELBO is split.
"""

import numpy as np
import pytest

from npvae import chunked, threads
from npvae.chunked import CHUNK, replicas, splits, step_in_chunks
from npvae.errors import ConfigError
from npvae.iwae import KSampleObjective
from npvae.optim import Adam
from npvae.train import train_step
from npvae.vae import VAE


def conv_model(dtype="float64", seed=1):
    return VAE(64, (2, 3), 3, architecture="conv", dtype=dtype, seed=seed)


def whole_batch(model, x, eps):
    terms = model.forward(x, eps=eps)
    model.backward()
    return terms, model.dtheta.copy()


@pytest.mark.parametrize("batch", [2 * CHUNK, CHUNK + 1, 3 * CHUNK - 7])
def test_chunks_give_the_whole_batchs_loss_and_gradient_in_float64(batch):
    model = conv_model()
    rng = np.random.default_rng(batch)
    x, eps = rng.random((batch, 64)), rng.standard_normal((batch, 3))
    terms, dtheta = whole_batch(model, x, eps)
    chunks = step_in_chunks(model, x, eps=eps)
    np.testing.assert_allclose(chunks, terms, rtol=1e-12)
    scale = np.abs(dtheta).max()
    np.testing.assert_allclose(model.dtheta, dtheta, rtol=0, atol=1e-12 * scale)


def test_chunks_in_float32_are_within_rounding():
    model = conv_model("float32")
    rng = np.random.default_rng(0)
    x, eps = rng.random((150, 64), np.float32), rng.standard_normal((150, 3), np.float32)
    terms, dtheta = whole_batch(model, x, eps)
    chunks = step_in_chunks(model, x, eps=eps)
    np.testing.assert_allclose(chunks, terms, rtol=1e-5)
    # each entry a sum over 150 examples of products: float32 rounding, not a wrong term
    np.testing.assert_allclose(model.dtheta, dtheta, rtol=0, atol=1e-5 * np.abs(dtheta).max())
    assert model.dtheta.dtype == np.float32


def test_unequal_chunks_are_weighted_by_their_sizes(monkeypatch):
    model = conv_model()
    rng = np.random.default_rng(2)
    x, eps = rng.random((CHUNK + 5, 64)), rng.standard_normal((CHUNK + 5, 3))
    terms, dtheta = whole_batch(model, x, eps)
    right = step_in_chunks(model, x, eps=eps)
    np.testing.assert_allclose(right, terms, rtol=1e-12)
    np.testing.assert_allclose(model.dtheta, dtheta, rtol=1e-10, atol=1e-12)
    original = chunked.replicas

    class OwnMean:   # a replica whose backward takes its own chunk's mean, 1/n_c
        def __init__(self, replica):
            self.replica = replica

        def backward(self, batch=None):
            return self.replica.backward()

        def __getattr__(self, name):
            return getattr(self.replica, name)
    monkeypatch.setattr(chunked, "replicas",
                        lambda model, n: [OwnMean(r) for r in original(model, n)])
    step_in_chunks(model, x, eps=eps)
    assert np.abs(model.dtheta - dtheta).max() > 1e-3 * np.abs(dtheta).max()

    class Averaged:   # a replica whose x claims the batch is split evenly
        def __init__(self, replica):
            self.replica = replica

        def __getattr__(self, name):
            if name == "x":
                return np.empty((1, 64))
            return getattr(self.replica, name)
    monkeypatch.setattr(chunked, "replicas",
                        lambda model, n: [Averaged(r) for r in original(model, n)])
    wrong = step_in_chunks(model, x, eps=eps)
    assert abs(wrong.loss - right.loss) > 1e-3 * abs(right.loss)
    np.testing.assert_allclose(model.dtheta, dtheta, rtol=1e-10, atol=1e-12)


def test_chunks_are_the_same_bits_with_any_number_of_threads_and_draw_the_same_noise():
    x = np.random.default_rng(3).random((200, 64)).astype(np.float32)
    before = threads.current_threads()
    results = []
    try:
        for n in (1, 2, 3, 8):
            threads.set_threads(n)
            model = conv_model("float32")
            terms = step_in_chunks(model, x, rng=np.random.default_rng(4))
            results.append((terms, model.dtheta.copy()))
    finally:
        threads.set_threads(before)
    assert all(t == results[0][0] and np.array_equal(d, results[0][1]) for t, d in results[1:])
    model = conv_model("float32")
    eps = np.random.default_rng(4).standard_normal((200, 3), dtype=np.float32)
    step_in_chunks(model, x, eps=eps)
    assert np.array_equal(model.dtheta, results[0][1])


def test_replicas_share_the_parameters_and_keep_their_own_gradients():
    model = conv_model()
    first, second = replicas(model, 2)
    assert first.theta is model.theta and second.theta is model.theta
    model.theta += 1.0
    assert all(np.array_equal(r.params[k], model.params[k]) for r in (first, second)
               for k in model.params)
    assert first.dtheta is not model.dtheta and second.dtheta is not first.dtheta
    assert replicas(model, 2)[0] is first          # kept, not rebuilt
    model.theta = model.theta.copy()                # parameters replaced: made again
    assert replicas(model, 1)[0] is not first


class Subclass(VAE):
    """A model built on VAE whose forward may take more than VAE's (as CVAE's takes labels)."""


def test_only_a_conv_vaes_own_elbo_on_more_than_a_chunk_is_split(monkeypatch):
    conv = conv_model("float32")
    assert splits(conv, CHUNK + 1) and not splits(conv, CHUNK)
    assert not splits(VAE(64, (8,), 2), 2 * CHUNK)
    assert not splits(Subclass(64, (2, 3), 3, architecture="conv"), 2 * CHUNK)
    assert not splits(conv, 2 * CHUNK, KSampleObjective(conv, k=2))
    calls = []
    monkeypatch.setattr("npvae.train.step_in_chunks",
                        lambda *a, **k: calls.append(a[1].shape) or step_in_chunks(*a, **k))
    optimizer = Adam({"theta": conv.theta}, {"theta": conv.dtheta})
    x = np.random.default_rng(5).random((CHUNK + 3, 64)).astype(np.float32)
    train_step(conv, optimizer, x, rng=np.random.default_rng(6))
    train_step(conv, optimizer, x[:CHUNK], rng=np.random.default_rng(6))
    assert calls == [(CHUNK + 3, 64)]


def test_a_wrong_noise_shape_is_named_for_the_whole_batch():
    model = conv_model("float32")
    x = np.zeros((2 * CHUNK, 64), np.float32)
    named = rf"eps must have shape \({2 * CHUNK}, 3\); got shape \({2 * CHUNK}, 2\)"
    with pytest.raises(ConfigError, match=named):
        step_in_chunks(model, x, eps=np.zeros((2 * CHUNK, 2), np.float32))
    with pytest.raises(ValueError, match="needs eps or a random Generator"):
        step_in_chunks(model, x)
