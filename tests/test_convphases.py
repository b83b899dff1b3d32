"""The transposed convolution's phase form (``npvae.convphases``) against its col2im form.

- equal in float64 within 1e-12 (relative to the output's size) over
  hypothesis-drawn channels, kernels, strides, paddings, output paddings,
  image sizes and batches, including strides larger than the kernel
  (phases that hold the bias only);
- in float32 within float32 rounding of the float64 values;
- the same bits with 1, 2, 3 and 8 threads;
- a wrong shift (d_t off by one) or a kernel offset taken the wrong way
  round is caught by the same comparison;
- ``ConvTranspose2D`` takes the phase form exactly when C_in < C_out.

Its gradients are checked with every ``ConvTranspose2D``'s in
``tests/test_conv.py`` (the channels drawn there go both ways).
"""

import numpy as np
import pytest
from hypothesis import given, settings

import npvae.conv as conv
from npvae import convphases, threads
from npvae.conv import ConvTranspose2D, batch_last
from tests.test_conv import conv_transpose_cases, seeds


def both_forms(layer, x):
    """(phase form, col2im form) of ``layer``'s forward of x, each as (B, C_out, Ho, Wo)."""
    B, C, H, W = x.shape
    _, Ho, Wo = layer.output_shape(H, W)
    phases = convphases.conv_transpose_phases(batch_last(x), layer.params["W"],
                                              layer.params["b"], layer.stride, layer.padding,
                                              (Ho, Wo)).transpose(3, 0, 1, 2)
    original = conv.gathers
    conv.gathers = lambda c_in, c_out: False
    try:
        col2im = layer.forward(x)
    finally:
        conv.gathers = original
    return phases, col2im


def layer_and_input(case, seed, c_in=None, c_out=None, dtype=np.float64):
    (ci, co, *args), shape = case
    ci, co = c_in or ci, c_out or co
    rng = np.random.default_rng(seed)
    layer = ConvTranspose2D(ci, co, *args, rng=rng, init="pytorch", dtype=dtype)
    layer.params["b"][...] = rng.standard_normal(co)     # a bias that shows where it lands
    x = rng.standard_normal((shape[0], ci, *shape[2:])).astype(dtype)
    return layer, x


@given(conv_transpose_cases(), seeds)
@settings(max_examples=200)
def test_phases_equal_col2im_in_float64(case, seed):
    layer, x = layer_and_input(case, seed, c_in=case[0][0] + 1, c_out=case[0][1] + 2)
    phases, col2im = both_forms(layer, x)
    assert phases.shape == col2im.shape
    scale = np.abs(layer.params["W"]).sum() * np.abs(x).max() + np.abs(layer.params["b"]).max()
    np.testing.assert_allclose(phases, col2im, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("args, size", [((32, 64, 3, 2, 1, 1), (7, 7)),
                                        ((64, 32, 3, 2, 1, 1), (14, 14)),
                                        ((4, 6, 2, 3, 0, 2), (5, 4)),
                                        ((3, 5, 5, 2, 2, 0), (6, 3))])
def test_phases_in_float32_are_within_rounding(args, size):
    rng = np.random.default_rng(0)
    layer = ConvTranspose2D(*args, rng=rng)
    layer.params["b"][...] = rng.standard_normal(args[1])
    x = rng.standard_normal((5, args[0], *size)).astype(np.float32)
    phases, _ = both_forms(layer, x)
    exact = ConvTranspose2D(*args, rng=rng, dtype=np.float64)
    exact.params = {k: v.astype(np.float64) for k, v in layer.params.items()}
    reference, _ = both_forms(exact, x.astype(np.float64))
    # each entry: at most C_in k k products and the bias, each rounded once and summed
    bound = 4 * np.finfo(np.float32).eps * (args[0] * args[2] ** 2 + 1)
    scale = np.abs(layer.params["W"]).max() * np.abs(x).max() + 1
    assert phases.dtype == np.float32
    assert np.abs(phases - reference).max() <= bound * scale


def test_phases_are_the_same_bits_with_any_number_of_threads():
    rng = np.random.default_rng(3)
    layer = ConvTranspose2D(32, 64, 3, 2, 1, 1, rng=rng)
    layer.params["b"][...] = rng.standard_normal(64)
    x = rng.standard_normal((37, 32, 7, 7)).astype(np.float32)
    before = threads.current_threads()
    try:
        results = []
        for n in (1, 2, 3, 8):
            threads.set_threads(n)
            results.append(layer.forward(x).copy())
    finally:
        threads.set_threads(before)
    assert all(np.array_equal(results[0], r) for r in results[1:])


right_offsets = convphases.phase_offsets


def wrong_shift(size, out, kernel, stride, padding):
    """Each offset read from the next input pixel."""
    return [(M, [(t, d + 1) for t, d in offsets])
            for M, offsets in right_offsets(size, out, kernel, stride, padding)]


def flipped_offsets(size, out, kernel, stride, padding):
    """Each input pixel weighted by the kernel offset mirrored."""
    return [(M, [(kernel - 1 - t, d) for t, d in offsets])
            for M, offsets in right_offsets(size, out, kernel, stride, padding)]


@pytest.mark.parametrize("bug", [wrong_shift, flipped_offsets])
def test_a_wrong_phase_formula_is_caught(monkeypatch, bug):
    rng = np.random.default_rng(1)
    layer = ConvTranspose2D(2, 3, 3, 2, 1, 1, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 2, 4, 5))
    right, col2im = both_forms(layer, x)
    np.testing.assert_allclose(right, col2im, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(convphases, "phase_offsets", bug)
    wrong, _ = both_forms(layer, x)
    assert np.abs(wrong - col2im).max() > 0.1


@pytest.mark.parametrize("c_in, c_out, phases", [(32, 64, True), (64, 32, False),
                                                 (3, 3, False), (1, 2, True)])
def test_the_layer_takes_the_phase_form_when_it_has_fewer_input_channels(monkeypatch, c_in,
                                                                         c_out, phases):
    calls = []
    original = conv.conv_transpose_phases

    def spy(*args):
        calls.append(args[1].shape)
        return original(*args)
    monkeypatch.setattr(conv, "conv_transpose_phases", spy)
    layer = ConvTranspose2D(c_in, c_out, 3, 2, 1, 1, rng=np.random.default_rng(0))
    layer.forward(np.ones((2, c_in, 3, 3), np.float32))
    assert calls == ([(c_in, c_out, 3, 3)] if phases else [])
