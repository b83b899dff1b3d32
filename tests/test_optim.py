"""Optimizers: Adam replayed against Kingma and Ba's Algorithm 1, both rules
reaching the minimum of a quadratic and of the Rosenbrock function, AdamW,
clipping, and the subnormal flush changing nothing beyond float32 rounding."""

import numpy as np
import pytest

from npvae import ConfigError
from npvae.optim import (SGD, Adam, adam_reference_step, clip_grad_norm, flush_subnormals,
                         global_norm)


def algorithm_1(theta, gradients, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, moments=False):
    """Kingma and Ba (2015), Algorithm 1, over ``gradients``: theta (and m, v with ``moments``)."""
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(gradients, start=1):
        theta, m, v = adam_reference_step(theta, g, m, v, t, lr, beta1, beta2, eps)
    return (theta, m, v) if moments else theta


def test_the_reference_step_is_algorithm_1_as_written():
    """The oracle itself, against the paper's numbers worked by hand for one entry."""
    theta, m, v = adam_reference_step(np.array([1.0]), np.array([2.0]), np.array([0.5]),
                                      np.array([3.0]), t=2, lr=0.1, beta1=0.9, beta2=0.99,
                                      eps=0.0)
    m_expected = 0.9 * 0.5 + 0.1 * 2.0                  # 0.65
    v_expected = 0.99 * 3.0 + 0.01 * 4.0                # 3.01
    step = 0.1 * (m_expected / (1 - 0.81)) / np.sqrt(v_expected / (1 - 0.9801))
    np.testing.assert_allclose([m[0], v[0], theta[0]], [m_expected, v_expected, 1.0 - step],
                               rtol=1e-15)


def test_adam_matches_algorithm_1():
    rng = np.random.default_rng(0)
    W0, b0 = rng.standard_normal((3, 4)), rng.standard_normal(4)
    gradients = [(rng.standard_normal((3, 4)), rng.standard_normal(4)) for _ in range(7)]
    params = {"W": W0.copy(), "b": b0.copy()}
    grads = {"W": np.zeros((3, 4)), "b": np.zeros(4)}
    adam = Adam(params, grads, lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    for gW, gb in gradients:
        grads["W"][...], grads["b"][...] = gW, gb
        adam.step()
    expected_W = algorithm_1(W0, [g for g, _ in gradients], 0.01, 0.8, 0.99, 1e-6)
    expected_b = algorithm_1(b0, [g for _, g in gradients], 0.01, 0.8, 0.99, 1e-6)
    np.testing.assert_allclose(params["W"], expected_W, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(params["b"], expected_b, rtol=1e-14, atol=1e-15)
    assert adam.t == 7
    # The state is the paper's moments without their constant factors.
    _, m, v = algorithm_1(W0, [g for g, _ in gradients], 0.01, 0.8, 0.99, 1e-6, moments=True)
    np.testing.assert_allclose(adam.m_sum["W"] * (1 - 0.8), m, rtol=1e-14)
    np.testing.assert_allclose(adam.v_sum["W"] * (1 - 0.99), v, rtol=1e-14)


def test_adam_on_a_flat_buffer_equals_adam_per_tensor():
    rng = np.random.default_rng(1)
    theta = rng.standard_normal(12)
    flat = {"theta": theta.copy()}
    dflat = {"theta": np.zeros(12)}
    named = {"a": flat["theta"][:5].copy(), "b": flat["theta"][5:].copy()}
    dnamed = {"a": np.zeros(5), "b": np.zeros(7)}
    opt_flat, opt_named = Adam(flat, dflat, lr=0.1), Adam(named, dnamed, lr=0.1)
    for _ in range(5):
        g = rng.standard_normal(12)
        dflat["theta"][...] = g
        dnamed["a"][...], dnamed["b"][...] = g[:5], g[5:]
        opt_flat.step()
        opt_named.step()
    np.testing.assert_array_equal(flat["theta"], np.concatenate([named["a"], named["b"]]))


def test_adamw_decay_is_decoupled():
    """With a zero gradient, AdamW only shrinks theta by (1 - lr wd) a step."""
    params, grads = {"w": np.array([2.0, -4.0])}, {"w": np.zeros(2)}
    opt = Adam(params, grads, lr=0.1, weight_decay=0.5)
    for _ in range(3):
        opt.step()
    np.testing.assert_allclose(params["w"], np.array([2.0, -4.0]) * 0.95**3, rtol=1e-15)


def quadratic(theta, A):
    return 0.5 * theta @ A @ theta, A @ theta


def rosenbrock(theta):
    x, y = theta
    value = (1 - x) ** 2 + 100 * (y - x * x) ** 2
    grad = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
    return value, grad


def minimise(make_optimizer, f, start, steps):
    params, grads = {"theta": np.array(start, dtype=np.float64)}, {"theta": np.zeros(len(start))}
    opt = make_optimizer(params, grads)
    for _ in range(steps):
        _, grads["theta"][...] = f(params["theta"])
        opt.step()
    return params["theta"]


@pytest.mark.parametrize("make_optimizer, steps", [
    (lambda p, g: Adam(p, g, lr=0.02), 6000),
    (lambda p, g: SGD(p, g, lr=1e-3, momentum=0.9), 20000),
])
def test_optimizers_reach_minimum(make_optimizer, steps):
    A = np.array([[3.0, 0.5], [0.5, 1.0]])
    theta = minimise(make_optimizer, lambda t: quadratic(t, A), [2.0, -3.0], 3000)
    np.testing.assert_allclose(theta, [0.0, 0.0], atol=1e-3)
    theta = minimise(make_optimizer, rosenbrock, [-1.2, 1.0], steps)
    np.testing.assert_allclose(theta, [1.0, 1.0], atol=1e-2)


def test_sgd_momentum_matches_its_definition():
    params, grads = {"w": np.array([1.0])}, {"w": np.array([0.5])}
    opt = SGD(params, grads, lr=0.1, momentum=0.9)
    opt.step()  # velocity 0.5
    opt.step()  # velocity 0.9 * 0.5 + 0.5 = 0.95
    np.testing.assert_allclose(params["w"], [1.0 - 0.1 * 0.5 - 0.1 * 0.95], rtol=1e-15)


def test_clip_grad_norm_scales_to_max_norm_and_leaves_small_gradients():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0, 4.0]])}
    norm = clip_grad_norm(grads, 1.0)
    assert float(norm) == pytest.approx(5.0)
    assert float(global_norm(grads)) == pytest.approx(1.0)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0])
    small = {"a": np.array([0.1, 0.2])}
    clip_grad_norm(small, 1.0)
    np.testing.assert_array_equal(small["a"], [0.1, 0.2])


def test_flush_subnormals():
    tiny = np.finfo(np.float32).tiny
    a = np.array([tiny / 4, -tiny / 8, tiny, 1.0, 0.0], dtype=np.float32)
    flush_subnormals(a)
    np.testing.assert_array_equal(a, np.array([0.0, 0.0, tiny, 1.0, 0.0], dtype=np.float32))


def test_subnormal_flush_changes_nothing_beyond_float32_rounding():
    """Half the gradient entries die (exactly zero) after 10 steps, as dead
    ReLU units do: their moments decay into subnormals without the flush."""
    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal(1000).astype(np.float32)
    runs = []
    for flush_every in (0, 50):
        params, grads = {"t": theta0.copy()}, {"t": np.zeros(1000, np.float32)}
        opt = Adam(params, grads, lr=1e-3, flush_every=flush_every)
        g_rng = np.random.default_rng(1)
        for step in range(1500):
            grads["t"][...] = g_rng.standard_normal(1000)
            if step >= 10:
                grads["t"][:500] = 0
            opt.step()
        runs.append((params["t"], opt))
    (plain, opt_plain), (flushed, opt_flushed) = runs
    assert np.any((opt_plain.m_sum["t"] != 0) & (np.abs(opt_plain.m_sum["t"]) < np.finfo(np.float32).tiny))
    assert not np.any((opt_flushed.m_sum["t"] != 0) & (np.abs(opt_flushed.m_sum["t"]) < np.finfo(np.float32).tiny))
    np.testing.assert_array_equal(plain, flushed)


def test_optimizer_arguments_are_checked():
    p, g = {"w": np.zeros(2)}, {"w": np.zeros(2)}
    with pytest.raises(ConfigError, match="lr"):
        Adam(p, g, lr=0)
    with pytest.raises(ConfigError, match="same keys"):
        Adam(p, {"v": np.zeros(2)})
    with pytest.raises(ConfigError, match="shape"):
        SGD(p, {"w": np.zeros(3)})
    with pytest.raises(ConfigError, match="max_norm"):
        clip_grad_norm(g, -1.0)


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(3)
    start = rng.standard_normal(4)
    gradients = [rng.standard_normal(4) for _ in range(6)]

    def run(split):
        params, grads = {"w": start.copy()}, {"w": np.zeros(4)}
        opt = Adam(params, grads, lr=0.05)
        for i, g in enumerate(gradients):
            if i == split:
                state = {k: np.copy(v) for k, v in opt.state_dict().items()}
                opt = Adam(params, grads, lr=0.05)
                opt.load_state_dict(state)
            grads["w"][...] = g
            opt.step()
        return params["w"]

    np.testing.assert_array_equal(run(split=3), run(split=-1))


def test_adam_in_cache_blocks_matches_algorithm_1():
    """A tensor longer than one block (npvae.optim.BLOCK) is updated piecewise."""
    from npvae.optim import BLOCK

    rng = np.random.default_rng(4)
    theta0 = rng.standard_normal(2 * BLOCK + 5)
    gradients = [rng.standard_normal(theta0.size) for _ in range(3)]
    params, grads = {"w": theta0.copy()}, {"w": np.zeros(theta0.size)}
    adam = Adam(params, grads, lr=0.01)
    for g in gradients:
        grads["w"][...] = g
        adam.step()
    np.testing.assert_allclose(params["w"], algorithm_1(theta0, gradients, lr=0.01), rtol=1e-14, atol=1e-15)
