"""The MADE prior over codes (``npvae.made``).

- the masked layer's gradients and the whole prior's against central
  differences in float64; a backward that forgets the mask is caught;
- the autoregressive property: position p's logits do not move when any code
  at p or later changes, and an output mask of >= instead of > (a forward bug
  every gradient check passes) is caught by it;
- the probabilities of every grid of a tiny prior sum to 1;
- the softmax cross-entropy is stable at logits of +/-1e4;
- sampling is equal under one seed, and with only biases its frequencies
  match the softmax;
- PyTorch autograd agrees in float64 (skipped without PyTorch, except in CI);
- bad codes and sizes are one-line ConfigErrors.
"""

import itertools

import numpy as np
import pytest

from npvae.errors import ConfigError
from npvae.gradcheck import (DEFAULT_TOL, check_function, check_layer, noise_floor,
                             numerical_gradient, rel_error)
from npvae.made import (MADE, MaskedDense, categorical_nll, categorical_nll_backward, degrees,
                        masks)
from tests.torch_or_skip import import_torch


def tiny(seed=0, n_positions=4, n_codes=3, hidden=(6, 5), activation="tanh"):
    made = MADE(n_positions, n_codes, hidden, activation=activation, dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    for p in made.params.values():          # biases off 0, so no unit sits at a kink
        if p.ndim == 1:
            p += rng.normal(0.0, 0.1, p.shape)
    return made


def codes_for(made, rng, batch=5):
    return rng.integers(0, made.n_codes, (batch, made.n_positions))


def test_categorical_nll_gradient():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, (3, 5))
    results = check_function(lambda logits: categorical_nll(logits, codes),
                             lambda dout, logits: {"logits": categorical_nll_backward(dout, logits, codes)},
                             {"logits": rng.standard_normal((3, 5, 4))}, rng)
    assert all(r.ok for r in results), [str(r) for r in results]


def test_categorical_nll_is_stable_at_extreme_logits():
    logits = np.array([[[1e4, -1e4, 0.0]]])
    np.testing.assert_allclose(categorical_nll(logits, np.array([[0]])), [0.0], atol=1e-12)
    np.testing.assert_allclose(categorical_nll(logits, np.array([[2]])), [1e4], rtol=1e-12)
    assert np.isfinite(categorical_nll_backward(1.0, logits, np.array([[1]]))).all()


def test_masked_dense_gradients_and_a_forgotten_mask():
    rng = np.random.default_rng(1)
    mask = masks(3, 2, (4,))[0]
    layer = MaskedDense(6, 4, mask, rng=rng, init="glorot", dtype=np.float64)
    layer.params["b"] += 0.1
    results = {r.name: r for r in check_layer(layer, rng.standard_normal((3, 6)), rng)}
    assert all(r.ok for r in results.values()), [str(r) for r in results.values()]

    class Unmasked(MaskedDense):
        def backward(self, dout, need_dx=True):
            dx = super().backward(dout, need_dx)
            self.grads["W"][...] = self.x.T @ dout
            return dx

    bad = Unmasked(6, 4, mask, rng=np.random.default_rng(1), init="glorot", dtype=np.float64)
    results = {r.name: r for r in check_layer(bad, rng.standard_normal((3, 6)), rng)}
    assert not results["W"].ok and results["W"].rel_error > 1e-2
    assert results["x"].ok and results["b"].ok


@pytest.mark.parametrize("seed", range(2))
def test_made_gradients_end_to_end(seed):
    made = tiny(seed)
    codes = codes_for(made, np.random.default_rng(seed))
    loss = made.forward(codes)
    made.backward()
    floor = noise_floor(abs(float(loss)))
    for name, p in made.params.items():
        numeric = numerical_gradient(lambda: float(made.forward(codes)), p)
        err = rel_error(made.grads[name], numeric, floor)
        assert err <= DEFAULT_TOL, (name, err)


def dependence(made, rng):
    """depends[p, q]: whether position p's logits moved when the code at q was changed."""
    P = made.n_positions
    codes = codes_for(made, rng, batch=8)
    base = made.logits(codes)
    depends = np.zeros((P, P), dtype=bool)
    for q in range(P):
        changed = codes.copy()
        changed[:, q] = (changed[:, q] + 1) % made.n_codes
        moved = np.abs(made.logits(changed) - base).max(axis=(0, 2)) > 0
        depends[:, q] = moved
    return depends


def test_each_position_depends_only_on_earlier_ones():
    made = tiny(2, n_positions=6, n_codes=3, hidden=(10, 7))
    depends = dependence(made, np.random.default_rng(2))
    assert not depends[np.triu_indices(6)].any()          # q >= p: never
    assert depends[np.tril_indices(6, -1)].all()          # q < p: here, always


def test_an_output_mask_of_greater_or_equal_is_caught(monkeypatch):
    """The bug lets position p see its own code: the gradient check cannot see it (forward
    and backward agree), the dependence test does."""
    import npvae.made as made_module

    def leaky(n_positions, n_codes, hidden):
        deg = degrees(n_positions, n_codes, hidden)
        return [(deg[i + 1][None, :] >= deg[i][:, None]).astype(float) for i in range(len(deg) - 1)]

    monkeypatch.setattr(made_module, "masks", leaky)
    made = tiny(3)
    codes = codes_for(made, np.random.default_rng(3))
    made.forward(codes)
    made.backward()
    name = "0.W"
    numeric = numerical_gradient(lambda: float(made.forward(codes)), made.params[name])
    assert rel_error(made.grads[name], numeric) <= DEFAULT_TOL
    depends = dependence(made, np.random.default_rng(3))
    assert np.diag(depends).any()


def test_probabilities_of_every_grid_sum_to_one():
    made = tiny(4, n_positions=3, n_codes=3, hidden=(4,))
    grids = np.array(list(itertools.product(range(3), repeat=3)))
    assert np.exp(made.log_prob(grids)).sum() == pytest.approx(1.0, abs=1e-12)


def test_sampling_is_seeded_and_matches_the_softmax():
    made = tiny(5)
    a = made.sample(6, np.random.default_rng(0))
    np.testing.assert_array_equal(a, made.sample(6, np.random.default_rng(0)))
    assert not np.array_equal(made.sample(50, np.random.default_rng(0)),
                              made.sample(50, np.random.default_rng(1)))
    # With every weight 0, each position is softmax(its bias), independently.
    for name, p in made.params.items():
        if name.endswith(".W"):
            p[...] = 0
    n = 20000
    draws = made.sample(n, np.random.default_rng(6))
    last = made.params[f"{len(made.net.layers) - 1}.b"].reshape(made.n_positions, made.n_codes)
    probs = np.exp(last) / np.exp(last).sum(axis=1, keepdims=True)
    for p in range(made.n_positions):
        freq = np.bincount(draws[:, p], minlength=made.n_codes) / n
        assert np.abs(freq - probs[p]).max() < 5 * np.sqrt(probs[p] * (1 - probs[p]) / n).max()


def test_made_matches_pytorch_autograd():
    torch = import_torch()  # skipped without PyTorch, except in CI
    made = tiny(7, activation="relu")
    codes = codes_for(made, np.random.default_rng(7))
    loss = made.forward(codes)
    made.backward()
    params = {k: torch.tensor(v, requires_grad=True) for k, v in made.params.items()}
    h = torch.nn.functional.one_hot(torch.tensor(codes), made.n_codes).reshape(len(codes), -1)
    h = h.double()
    dense = [i for i, layer in enumerate(made.net.layers) if isinstance(layer, MaskedDense)]
    for j, i in enumerate(dense):
        mask = torch.tensor(made.net.layers[i].mask)
        h = h @ (params[f"{i}.W"] * mask) + params[f"{i}.b"]
        if j < len(dense) - 1:
            h = torch.relu(h)
    logits = h.reshape(len(codes), made.n_positions, made.n_codes)
    theirs = torch.nn.functional.cross_entropy(logits.permute(0, 2, 1), torch.tensor(codes),
                                               reduction="sum") / len(codes)
    theirs.backward()
    assert float(loss) == pytest.approx(theirs.item(), rel=1e-12)
    for name, grad in made.grads.items():
        assert rel_error(grad, params[name].grad.numpy()) <= 1e-10, name


@pytest.mark.parametrize("codes, match", [
    (np.zeros((2, 3), dtype=int), r"codes must be integers of shape \(batch, 4\)"),
    (np.zeros((2, 4)), "got dtype float64"),
    (np.full((2, 4), 3), r"codes must lie in \[0, 3\)"),
])
def test_bad_codes_are_one_line_config_errors(codes, match):
    with pytest.raises(ConfigError, match=match) as info:
        tiny().forward(codes)
    assert "\n" not in str(info.value)


def test_bad_sizes_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="at least n_positions - 1 = 48 units"):
        MADE(49, 64, (32,))
    with pytest.raises(ConfigError, match="n_codes=0 must be a positive integer"):
        MADE(49, 0)
