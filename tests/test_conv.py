"""Convolution by hand: Conv2D, ConvTranspose2D, Reshape and the conv VAE.

- every gradient against central differences in float64 (relative error at
  most 1e-6), over hypothesis-drawn shapes, strides, paddings, output
  paddings and batch sizes (batch 1 included);
- the checker fails on planted bugs: a flipped kernel, a wrong stride in the
  backward, a missing padding crop;
- im2col and col2im are adjoint, and a transposed convolution is a
  convolution's backward;
- float32 stays float32; the stand-in GPU module trains a conv VAE to
  NumPy's numbers exactly;
- PyTorch's conv2d / conv_transpose2d and a PyTorch replica of the conv VAE
  agree with npvae in float64 within 1e-10 (skipped without PyTorch);
- conv checkpoints load, resume exactly and are refused for another
  architecture; ``VAE(**config)`` rebuilds a conv model.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import npvae.conv as conv
from npvae import VAE
from npvae.backend import get_xp, to_numpy, xp_of
from npvae.checkpoint import load_checkpoint, model_from_checkpoint, restore_model, save_checkpoint
from npvae.config import TrainConfig
from npvae.conv import Conv2D, ConvTranspose2D, Reshape, col2im, im2col
from npvae.errors import CheckpointError, ConfigError
from npvae.gradcheck import (DEFAULT_TOL, check_architecture, check_layer, check_model,
                             rel_error, shrink_architecture)
from npvae.optim import Adam
from npvae.presets import get_preset
from npvae.train import resume, train, train_step
from tests.helpers import assert_all_ok
from tests.torch_or_skip import import_torch, load_benchmark

seeds = st.integers(0, 2**32 - 1)


@st.composite
def conv_cases(draw):
    """(Conv2D arguments, input shape): kernel 1-3, stride 1-3, padding 0-2, batch 1-3."""
    k, s, p = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(0, 2))
    c_in, c_out, batch = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    H = draw(st.integers(max(1, k - 2 * p), 7))
    W = draw(st.integers(max(1, k - 2 * p), 7))
    return (c_in, c_out, k, s, p), (batch, c_in, H, W)


@st.composite
def conv_transpose_cases(draw):
    """(ConvTranspose2D arguments, input shape), output padding below the stride."""
    k, s, p = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(0, 2))
    op = draw(st.integers(0, s - 1))
    c_in, c_out, batch = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    assume(conv.conv_transpose_output_size(min(H, W), k, s, p, op) >= 1)
    return (c_in, c_out, k, s, p, op), (batch, c_in, H, W)


# ---------------------------------------------------------------- gradients


@given(conv_cases(), seeds)
def test_conv2d_gradients(case, seed):
    args, shape = case
    rng = np.random.default_rng(seed)
    layer = Conv2D(*args, rng=rng, init="pytorch", dtype=np.float64)
    assert_all_ok(check_layer(layer, rng.standard_normal(shape), rng))


@given(conv_transpose_cases(), seeds)
def test_conv_transpose2d_gradients(case, seed):
    args, shape = case
    rng = np.random.default_rng(seed)
    layer = ConvTranspose2D(*args, rng=rng, init="pytorch", dtype=np.float64)
    assert_all_ok(check_layer(layer, rng.standard_normal(shape), rng))


def test_reshape_gradients():
    rng = np.random.default_rng(0)
    for shape, x_shape in (((2, 3, 2), (4, 12)), ((12,), (1, 3, 2, 2))):
        results = check_layer(Reshape(shape), rng.standard_normal(x_shape), rng)
        assert [r.name for r in results] == ["x"]
        assert_all_ok(results)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_conv_vae_gradients(activation):
    """The whole conv VAE (8 x 8 images, two halvings) end to end, biases jittered off
    the ReLU kinks as ``npvae gradcheck`` does."""
    config = VAE(64, (2, 3), 2, architecture="conv", activation=activation).config
    model, results = check_architecture(config, batch=2, seed=1)
    assert [r.name for r in results] == list(model.params)
    assert_all_ok(results)


def test_gradcheck_shrinks_a_conv_model_by_its_channels():
    base = {"x_dim": 784, **get_preset("conv")["model"]}
    small = shrink_architecture(base, 20)
    assert small["x_dim"] == 784 and small["latent"] == 4
    assert small["hidden"] == [2, 2] and small["architecture"] == "conv"
    assert shrink_architecture(base, 784) == {**base, "x_dim": 784}
    assert shrink_architecture({**base, "hidden": (320, 640)}, 78)["hidden"] == [32, 64]


# ---------------------------------------------------------------- the maths


@given(conv_cases(), seeds)
def test_im2col_and_col2im_are_adjoint(case, seed):
    """<im2col(x), C> = <x, col2im(C)> for every x and C: col2im is im2col's transpose."""
    (_, _, k, s, p), (B, C, H, W) = case
    rng = np.random.default_rng(seed)
    Ho, Wo = conv.conv_output_size(H, k, s, p), conv.conv_output_size(W, k, s, p)
    x = rng.standard_normal((C, B, H + 2 * p, W + 2 * p))
    cols = rng.standard_normal((C, k, k, B, Ho, Wo))
    lhs = np.vdot(im2col(x, k, s, Ho, Wo), cols)
    rhs = np.vdot(x, col2im(cols, x.shape, s))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@given(conv_cases(), seeds)
def test_batch_last_forms_equal_the_plain_ones_bit_for_bit(case, seed):
    """The layers' batch-last im2col (on a padded input, and padding inside), col2im and crop
    give the plain functions' entries exactly (float32, ``==``): the same copies, the same adds in the same order;
    col2im starting from a bias equals col2im plus the bias within float32 rounding."""
    (_, _, k, s, p), (B, C, H, W) = case
    rng = np.random.default_rng(seed)
    Ho, Wo = conv.conv_output_size(H, k, s, p), conv.conv_output_size(W, k, s, p)
    x = rng.standard_normal((B, C, H, W)).astype(np.float32)
    padded = conv.channels_first(x, p).transpose(0, 2, 3, 1)   # (C, Hp, Wp, B)
    plain_cols = im2col(conv.channels_first(x, p), k, s, Ho, Wo).transpose(0, 1, 2, 4, 5, 3)
    np.testing.assert_array_equal(conv.im2col_batch_last(padded, k, s, Ho, Wo), plain_cols)
    np.testing.assert_array_equal(conv.im2col_batch_last(conv.batch_last(x), k, s, Ho, Wo, p),
                                  plain_cols)  # the padding done inside
    cols = rng.standard_normal((C, k, k, B, Ho, Wo)).astype(np.float32)
    summed = col2im(cols, (C, B, H + 2 * p, W + 2 * p), s)
    summed_last = conv.col2im_batch_last(np.ascontiguousarray(cols.transpose(0, 1, 2, 4, 5, 3)),
                                         (C, H + 2 * p, W + 2 * p, B), s)
    np.testing.assert_array_equal(summed_last, summed.transpose(0, 2, 3, 1))
    # with a bias: each pixel's sum starts from it, b + a_1 + ..., where the plain form adds
    # it last; equal within float32 rounding of the sum's terms
    b = rng.standard_normal(C).astype(np.float32)
    biased = conv.col2im_batch_last(np.ascontiguousarray(cols.transpose(0, 1, 2, 4, 5, 3)),
                                    (C, H + 2 * p, W + 2 * p, B), s, bias=b)
    terms = np.abs(col2im(np.abs(cols), (C, B, H + 2 * p, W + 2 * p), s)).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(biased, summed_last + b[:, None, None, None], rtol=0,
                               atol=float(np.max(terms + np.abs(b).max())) * k * k
                               * np.finfo(np.float32).eps)
    np.testing.assert_array_equal(conv.crop_batch_last(summed_last, p), conv.crop(summed, p))


def plain_conv2d(layer, x, dout):
    """Conv2D's forward and backward in the plain (C, B, H, W) form derivations.md writes:
    ``(out, dW, db, dx)``."""
    B, C, H, W = x.shape
    k, s, p = layer.kernel, layer.stride, layer.padding
    Ho, Wo = dout.shape[2:]
    W2 = layer.params["W"].reshape(layer.c_out, -1)
    cols = im2col(conv.channels_first(x, p), k, s, Ho, Wo).reshape(C * k * k, -1)
    out = (W2 @ cols + layer.params["b"][:, None]).reshape(-1, B, Ho, Wo).transpose(1, 0, 2, 3)
    dout2 = dout.transpose(1, 0, 2, 3).reshape(layer.c_out, -1)
    dx = col2im((W2.T @ dout2).reshape(C, k, k, B, Ho, Wo), (C, B, H + 2 * p, W + 2 * p), s)
    return out, (dout2 @ cols.T).reshape(layer.params["W"].shape), dout2.sum(1), conv.crop(dx, p)


def plain_conv_transpose2d(layer, x, dout):
    """ConvTranspose2D's forward and backward in the plain (C, B, H, W) form:
    ``(out, dW, db, dx)``."""
    B, C, H, W = x.shape
    k, s, p = layer.kernel, layer.stride, layer.padding
    Ho, Wo = dout.shape[2:]
    W2 = layer.params["W"].reshape(C, -1)
    x2 = x.transpose(1, 0, 2, 3).reshape(C, -1)
    out = conv.crop(col2im((W2.T @ x2).reshape(-1, k, k, B, H, W),
                           (layer.c_out, B, Ho + 2 * p, Wo + 2 * p), s), p)
    out = out + layer.params["b"][:, None, None]
    cols = im2col(conv.channels_first(dout, p), k, s, H, W).reshape(W2.shape[1], -1)
    dx = (W2 @ cols).reshape(C, B, H, W).transpose(1, 0, 2, 3)
    return out, (x2 @ cols.T).reshape(layer.params["W"].shape), dout.sum((0, 2, 3)), dx


@given(conv_cases(), conv_transpose_cases(), seeds)
def test_layers_equal_their_plain_form_within_float32_rounding(conv_case, transpose_case, seed):
    """Conv2D and ConvTranspose2D (batch last) against the plain form, in float32: out, dW,
    db and dx agree within float32 rounding of their sums (the products add the same terms
    in another order), relative to the size of the terms summed."""
    rng = np.random.default_rng(seed)
    for layer_class, plain, (args, shape) in ((Conv2D, plain_conv2d, conv_case),
                                              (ConvTranspose2D, plain_conv_transpose2d,
                                               transpose_case)):
        layer = layer_class(*args, rng=rng, init="pytorch")
        x = rng.standard_normal(shape).astype(np.float32)
        out = layer.forward(x)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        dx = layer.backward(dout)
        expected = plain(layer, x, dout)
        for name, got, want in zip(("out", "dW", "db", "dx"),
                                   (out, layer.grads["W"], layer.grads["b"], dx), expected):
            assert got.dtype == np.float32 and got.shape == want.shape, name
            terms = max(x.size, dout.size)  # the longest sum any entry is
            scale = float(np.abs(x).max() * np.abs(dout).max() + np.abs(layer.params["W"]).max()
                          * max(np.abs(x).max(), np.abs(dout).max())) + 1.0
            np.testing.assert_allclose(got, want, rtol=0,
                                       atol=terms * np.finfo(np.float32).eps * scale,
                                       err_msg=name)


def test_conv_matches_its_definition_written_as_loops():
    """Conv2D's output against the formula of derivations.md, one entry at a time."""
    rng = np.random.default_rng(3)
    layer = Conv2D(2, 3, 3, stride=2, padding=1, rng=rng, init="pytorch", dtype=np.float64)
    x = rng.standard_normal((2, 2, 5, 6))
    out = layer.forward(x)
    W, b = layer.params["W"], layer.params["b"]
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((2, 3, 3, 3))
    for n in range(2):
        for o in range(3):
            for y in range(3):
                for xx in range(3):
                    window = xpad[n, :, 2 * y:2 * y + 3, 2 * xx:2 * xx + 3]
                    expected[n, o, y, xx] = b[o] + np.sum(W[o] * window)
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("stride, padding, output_padding, size",
                         [(2, 1, 1, 7), (2, 1, 0, 7), (1, 1, 0, 5), (3, 0, 2, 4), (2, 2, 1, 6)])
def test_conv_transpose_is_the_backward_of_a_conv(stride, padding, output_padding, size):
    """ConvTranspose2D(C_in, C_out).forward(x) = Conv2D(C_out, C_in).backward's dx at dout = x,
    with the same weight array, for the convolution whose output is x's size."""
    rng = np.random.default_rng(4)
    up = ConvTranspose2D(3, 2, 3, stride, padding, output_padding, rng=rng, dtype=np.float64)
    down = Conv2D(2, 3, 3, stride, padding, rng=rng, dtype=np.float64)
    down.params["W"] = up.params["W"]
    x = rng.standard_normal((2, 3, size, size))
    out = up.forward(x) - up.params["b"][:, None, None]
    down.forward(np.zeros(out.shape))
    assert down.output_shape(*out.shape[2:])[1:] == (size, size)
    np.testing.assert_allclose(out, down.backward(x), rtol=1e-13, atol=1e-13)


def test_layers_keep_their_shapes_and_check_their_arguments():
    rng = np.random.default_rng(0)
    layer = Conv2D(1, 32, 3, stride=2, padding=1, rng=rng)
    assert layer.forward(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 32, 14, 14)
    up = ConvTranspose2D(32, 64, 3, 2, 1, 1, rng=rng)
    assert up.forward(np.zeros((2, 32, 7, 7), np.float32)).shape == (2, 64, 14, 14)
    with pytest.raises(ConfigError, match=r"needs x of shape \(batch, 32, height, width\)"):
        up.forward(np.zeros((2, 3, 7, 7), np.float32))
    with pytest.raises(ConfigError, match="smaller than the kernel"):
        Conv2D(1, 1, 5, rng=rng).forward(np.zeros((1, 1, 3, 3)))
    with pytest.raises(ConfigError, match="output_padding=2 must be smaller than stride=2"):
        ConvTranspose2D(1, 1, 3, 2, 1, 2, rng=rng)
    with pytest.raises(ConfigError, match="padding=-1 must be a non-negative integer"):
        Conv2D(1, 1, 3, padding=-1, rng=rng)


def test_pytorch_init_bounds_use_pytorchs_fans():
    """U(-1/sqrt(fan_in), ..) with fan_in = C_in k k for Conv2D and C_out k k for
    ConvTranspose2D, as torch.nn.Conv2d and ConvTranspose2d compute it."""
    rng = np.random.default_rng(0)
    for layer, fan_in in ((Conv2D(4, 50, 3, rng=rng, init="pytorch", dtype=np.float64), 36),
                          (ConvTranspose2D(50, 4, 3, rng=rng, init="pytorch",
                                           dtype=np.float64), 36)):
        bound = 1 / np.sqrt(fan_in)
        assert 0.9 * bound < np.abs(layer.params["W"]).max() <= bound
        assert 0 < np.abs(layer.params["b"]).max() <= bound
    he = Conv2D(16, 64, 3, rng=rng, init="he", dtype=np.float64)
    assert he.params["W"].std() == pytest.approx(np.sqrt(2 / (16 * 9)), rel=0.05)
    assert not he.params["b"].any()


# ---------------------------------------------------------------- the checker fails


def backward_with_flipped_kernel(self, dout, need_dx=True):
    """The layer's backward with its kernel flipped (a true convolution's backward for a
    correlation); the kernel is put back afterwards."""
    W = self.params["W"]
    self.params["W"] = W[:, :, ::-1, ::-1].copy()
    try:
        return super(type(self), self).backward(dout, need_dx)
    finally:
        self.params["W"] = W


def backward_with(name, wrong):
    """A backward that runs with ``npvae.conv.<name>`` replaced by ``wrong(original)``."""
    def backward(self, dout, need_dx=True):
        original = getattr(conv, name)
        setattr(conv, name, wrong(original))
        try:
            return super(type(self), self).backward(dout, need_dx)
        finally:
            setattr(conv, name, original)
    return backward


def with_stride_one(function):
    """``im2col`` or ``col2im`` that ignores the stride it is given."""
    def wrong(*args):
        args = list(args)
        args[2] = 1
        return function(*args)
    return wrong


def without_crop(crop):
    """``crop_batch_last`` that takes the top-left corner of the padded gradient instead."""
    return lambda x, padding: x[:, :x.shape[1] - 2 * padding,
                                :x.shape[2] - 2 * padding].transpose(3, 0, 1, 2)


def without_padding(im2col_batch_last):
    """``im2col_batch_last`` that puts dout at the top-left of the padded frame: the shapes
    fit, the windows are shifted."""
    def unpadded(x, kernel, stride, out_h, out_w, padding=0):
        C, H, W, B = x.shape
        shifted = np.zeros((C, H + 2 * padding, W + 2 * padding, B), dtype=x.dtype)
        shifted[:, :H, :W] = x
        return im2col_batch_last(shifted, kernel, stride, out_h, out_w)
    return unpadded


class FlippedKernelConv2D(Conv2D):
    """dx computed with the kernel flipped."""
    backward = backward_with_flipped_kernel


class FlippedKernelConvTranspose2D(ConvTranspose2D):
    """dW and dx computed with the kernel flipped."""
    backward = backward_with_flipped_kernel


class WrongStrideConv2D(Conv2D):
    """col2im with stride 1 in the backward: dx lands on the wrong pixels."""
    backward = backward_with("col2im_batch_last", with_stride_one)


class WrongStrideConvTranspose2D(ConvTranspose2D):
    """im2col with stride 1 in the backward: dW and dx read the wrong pixels of dout."""
    backward = backward_with("im2col_batch_last", with_stride_one)


class MissingCropConv2D(Conv2D):
    """dx taken from the top-left corner of the padded gradient: the padding not cropped off."""
    backward = backward_with("crop_batch_last", without_crop)


class MissingPaddingConvTranspose2D(ConvTranspose2D):
    """dout not padded before im2col (the crop's adjoint forgotten): windows shifted by p."""
    backward = backward_with("im2col_batch_last", without_padding)


def caught(layer, x, wrong):
    rng = np.random.default_rng(1)
    results = {r.name: r for r in check_layer(layer, x, rng)}
    bad = {name for name, r in results.items() if not r.ok}
    assert bad == set(wrong), {name: str(r) for name, r in results.items()}
    assert min(results[name].rel_error for name in wrong) > 1e3 * DEFAULT_TOL


@pytest.mark.parametrize("bug, wrong", [(FlippedKernelConv2D, {"x"}),
                                        (WrongStrideConv2D, {"x"}),
                                        (MissingCropConv2D, {"x"})])
def test_checker_catches_conv2d_bugs(bug, wrong):
    rng = np.random.default_rng(0)
    layer = bug(2, 3, 3, stride=2, padding=1, rng=rng, init="pytorch", dtype=np.float64)
    caught(layer, rng.standard_normal((2, 2, 7, 6)), wrong)


@pytest.mark.parametrize("bug, wrong", [(FlippedKernelConvTranspose2D, {"x"}),
                                        (WrongStrideConvTranspose2D, {"x", "W"}),
                                        (MissingPaddingConvTranspose2D, {"x", "W"})])
def test_checker_catches_conv_transpose2d_bugs(bug, wrong):
    rng = np.random.default_rng(0)
    layer = bug(3, 2, 3, stride=2, padding=1, output_padding=1, rng=rng, init="pytorch",
                dtype=np.float64)
    caught(layer, rng.standard_normal((2, 3, 4, 5)), wrong)


def test_checker_catches_a_wrong_conv_backward_inside_the_vae(monkeypatch):
    """A flipped kernel in every Conv2D's dx reaches the first convolution's parameters only
    (the last encoder layer is dense, and the first convolution needs no dx)."""
    original = Conv2D.backward

    def flipped(self, dout, need_dx=True):
        W = self.params["W"]
        self.params["W"] = W[:, :, ::-1, ::-1].copy()
        try:
            return original(self, dout, need_dx)
        finally:
            self.params["W"] = W

    model = VAE(64, (2, 3), 2, architecture="conv", activation="tanh", dtype="float64", seed=3)
    rng = np.random.default_rng(2)
    x, eps = rng.random((2, 64)), rng.standard_normal((2, 2))
    assert_all_ok(check_model(model, x, eps))
    monkeypatch.setattr(Conv2D, "backward", flipped)
    results = check_model(model, x, eps)
    assert {r.name for r in results if not r.ok} == {"encoder.1.W", "encoder.1.b"}


# ---------------------------------------------------------------- dtypes and backends


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    for layer, x in ((Conv2D(2, 3, 3, 2, 1, rng=rng), rng.random((2, 2, 6, 6))),
                     (ConvTranspose2D(2, 3, 3, 2, 1, 1, rng=rng), rng.random((2, 2, 3, 3)))):
        out = layer.forward(x.astype(np.float32))
        dx = layer.backward(np.ones_like(out))
        assert out.dtype == dx.dtype == np.float32
        assert all(g.dtype == np.float32 for g in layer.grads.values())
    model = VAE(64, (2, 3), 2, architecture="conv")
    optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta})
    terms = train_step(model, optimizer, rng.random((3, 64)).astype(np.float32), rng=rng)
    assert terms.loss.dtype == model.out.dtype == model.theta.dtype == np.float32
    assert model.decode(model.mu).dtype == np.float32


def test_conv_training_step_through_stand_in_matches_numpy(strict_backend):
    rng = np.random.default_rng(0)
    x_host = rng.random((5, 64)).astype(np.float32)
    results = {}
    for backend in ("numpy", strict_backend.name):
        xp = get_xp(backend)
        model = VAE(64, (2, 3), 3, architecture="conv", backend=backend, seed=1)
        optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=1e-2)
        x, noise = xp.asarray(x_host), xp.random.default_rng(2)
        for _ in range(3):
            terms = train_step(model, optimizer, x, rng=noise, clip=5.0)
        assert xp_of(model.theta) is xp and xp_of(model.out) is xp
        results[backend] = (to_numpy(model.theta), float(terms.loss),
                            to_numpy(model.decode(model.mu)))
    for ours, theirs in zip(results["numpy"], results[strict_backend.name]):
        np.testing.assert_array_equal(ours, theirs)


# ---------------------------------------------------------------- the conv VAE


def test_the_conv_preset_is_tensorflows_architecture():
    config = TrainConfig.from_preset("conv").validate()
    model = VAE(**config.model_kwargs(784))
    assert model.config["architecture"] == "conv"
    assert [repr(layer) for layer in model.encoder.layers] == [
        "Reshape((1, 28, 28))", "Conv2D(1, 32, 3, stride=2, padding=1)", "ReLU()",
        "Conv2D(32, 64, 3, stride=2, padding=1)", "ReLU()", "Reshape((3136,))",
        "Dense(3136, 40)"]
    assert [repr(layer) for layer in model.decoder.layers] == [
        "Dense(20, 1568)", "ReLU()", "Reshape((32, 7, 7))",
        "ConvTranspose2D(32, 64, 3, stride=2, padding=1, output_padding=1)", "ReLU()",
        "ConvTranspose2D(64, 32, 3, stride=2, padding=1, output_padding=1)", "ReLU()",
        "ConvTranspose2D(32, 1, 3, stride=1, padding=1, output_padding=0)", "Reshape((784,))"]
    x = np.random.default_rng(0).random((2, 784)).astype(np.float32)
    model.forward(x, rng=np.random.default_rng(0))
    assert model.out.shape == (2, 784) and model.mu.shape == (2, 20)


def test_config_round_trips_and_mlp_names_are_unchanged():
    model = VAE(64, (2, 3), 2, architecture="conv", seed=5)
    again = VAE(**model.config, seed=5)
    assert again.config == model.config and np.array_equal(again.theta, model.theta)
    assert list(model.params) == ["encoder.1.W", "encoder.1.b", "encoder.3.W", "encoder.3.b",
                                  "encoder.6.W", "encoder.6.b", "decoder.0.W", "decoder.0.b",
                                  "decoder.3.W", "decoder.3.b", "decoder.5.W", "decoder.5.b",
                                  "decoder.7.W", "decoder.7.b"]
    mlp = VAE(9, (5, 4), 2)
    assert mlp.config["architecture"] == "mlp"
    assert list(mlp.params) == ["encoder.0.W", "encoder.0.b", "encoder.2.W", "encoder.2.b",
                                "encoder.4.W", "encoder.4.b", "decoder.0.W", "decoder.0.b",
                                "decoder.2.W", "decoder.2.b", "decoder.4.W", "decoder.4.b"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(x_dim=60), "square images whose side divides by 2\\^2"),
    (dict(x_dim=36), "square images whose side divides by 2\\^2"),
    (dict(hidden=()), "without a convolution"),
    (dict(decoder_hidden=(4, 4)), "must hold 3 channel counts"),
    (dict(architecture="resnet"), "architecture='resnet' is unknown; choose one of mlp, conv"),
])
def test_bad_conv_configs_are_one_line_config_errors(kwargs, match):
    args = {"x_dim": 64, "hidden": (2, 3), "latent": 2, "architecture": "conv", **kwargs}
    with pytest.raises(ConfigError, match=match):
        VAE(**args)


# ---------------------------------------------------------------- checkpoints


def quiet(*_):
    pass


def conv_run(data_dir, **overrides):
    values = dict(hidden=(2, 3), latent=2, epochs=4, batch_size=10, data_dir=str(data_dir),
                  figures=False, progress=False)
    values.update(overrides)
    return TrainConfig.from_preset("conv", **values)


def test_conv_checkpoint_round_trips_and_refuses_another_architecture(tmp_path):
    model = VAE(64, (2, 3), 2, architecture="conv", seed=2)
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, None, {})
    loaded, _ = model_from_checkpoint(path)
    assert loaded.config == model.config and np.array_equal(loaded.theta, model.theta)
    mlp = VAE(64, (2, 3), 2)
    with pytest.raises(CheckpointError, match="architecture: 'conv' in the checkpoint vs "
                                              "'mlp' expected"):
        restore_model(load_checkpoint(path), mlp)


def test_a_checkpoint_from_before_architectures_loads_as_an_mlp(tmp_path):
    import json

    model = VAE(9, (5,), 2, seed=1)
    path = tmp_path / "old.npz"
    save_checkpoint(path, model, None, {})
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].item())
    del meta["model"]["architecture"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    loaded, checkpoint = model_from_checkpoint(path)
    assert checkpoint.model_config["architecture"] == "mlp"
    assert np.array_equal(loaded.theta, model.theta)


def test_a_conv_run_stopped_mid_epoch_resumes_exactly(tiny, tmp_path):
    """Tiny 4 x 4 images: 4 -> 2 -> 1 and back. Stopped at step 7 (mid-epoch), resumed."""
    whole = train(conv_run(tiny), tmp_path / "whole", log=quiet)
    assert whole.model.config["architecture"] == "conv"
    first = train(conv_run(tiny, max_steps=7), tmp_path / "run", log=quiet)
    assert not first.completed
    second = resume(tmp_path / "run", progress=False, figures=False, log=quiet)
    assert np.array_equal(second.model.theta, whole.model.theta)
    assert np.array_equal(second.optimizer.m_sum["theta"], whole.optimizer.m_sum["theta"])
    assert [r["test_loss"] for r in second.metrics] == [r["test_loss"] for r in whole.metrics]


def test_a_conv_checkpoint_with_an_mlp_config_is_refused(tiny, tmp_path):
    """A run folder whose checkpoint holds a conv model but whose stored training config
    says mlp (edited by hand) is refused, naming the architecture."""
    import json

    train(conv_run(tiny, epochs=1), tmp_path / "run", log=quiet)
    path = tmp_path / "run" / "checkpoint.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].item())
    meta["state"]["train_config"]["architecture"] = "mlp"
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="architecture: 'conv' in the checkpoint"):
        resume(tmp_path / "run", epochs=2, progress=False, figures=False, log=quiet)
    with pytest.raises(ConfigError, match="architecture cannot be changed when resuming"):
        TrainConfig.from_preset("conv").with_changes(architecture="mlp")


# ---------------------------------------------------------------- against PyTorch


TORCH_TOL = 1e-10


@given(conv_cases(), conv_transpose_cases(), seeds)
def test_layers_match_torch(conv_case, transpose_case, seed):
    """Outputs, dx, dW and db of both layers against F.conv2d / F.conv_transpose2d (float64)."""
    torch = import_torch()  # skipped without PyTorch, except in CI
    from torch.nn import functional as F

    rng = np.random.default_rng(seed)
    for cls, function, (args, shape), names in (
            (Conv2D, F.conv2d, conv_case, ("stride", "padding")),
            (ConvTranspose2D, F.conv_transpose2d, transpose_case,
             ("stride", "padding", "output_padding"))):
        layer = cls(*args, rng=rng, init="pytorch", dtype=np.float64)
        x = rng.standard_normal(shape)
        out = layer.forward(x)
        dout = rng.standard_normal(out.shape)
        dx = layer.backward(dout)
        tx, tW, tb = (torch.tensor(a, requires_grad=True)
                      for a in (x, layer.params["W"], layer.params["b"]))
        tout = function(tx, tW, tb, **dict(zip(names, args[3:])))
        tout.backward(torch.tensor(dout))
        for name, ours, theirs in (("out", out, tout), ("x", dx, tx.grad),
                                   ("W", layer.grads["W"], tW.grad),
                                   ("b", layer.grads["b"], tb.grad)):
            theirs = theirs.detach().numpy()
            assert ours.shape == theirs.shape, name
            assert rel_error(ours, theirs) <= TORCH_TOL, (cls.__name__, name)


def test_conv_vae_matches_the_pytorch_replica():
    """The loss terms and every gradient of a conv VAE against its PyTorch replica
    (``benchmarks/torch_conv_vae.py``), same weights, same eps, float64."""
    torch = import_torch()  # skipped without PyTorch, except in CI
    replica = load_benchmark("torch_conv_vae")
    rng = np.random.default_rng(7)
    model = VAE(64, (3, 4), 2, architecture="conv", init="pytorch", dtype="float64", seed=3)
    x, eps = rng.random((5, 64)), rng.standard_normal((5, 2))
    terms = model.forward(x, eps=eps)
    model.backward()
    theirs = replica.make_model((3, 4), latent=2, side=8, dtype=torch.float64,
                                weights=replica.weights_from_npvae(model))
    loss, recon, kl = replica.loss_terms(theirs, torch.tensor(x), torch.tensor(eps), 2)
    loss.backward()
    for ours, other in zip(terms, (loss, recon, kl)):
        assert float(ours) == pytest.approx(other.item(), rel=TORCH_TOL)
    grads = replica.grads_to_npvae(model, theirs)
    assert set(grads) == set(model.grads)
    for name, grad in model.grads.items():
        assert rel_error(grad, grads[name]) <= TORCH_TOL, name


# ---------------------------------------------------------------- the command line


def test_every_command_works_on_a_conv_run(tiny, tmp_path, capsys):
    """``npvae train --preset conv`` (tiny 4 x 4 images, small channels), then evaluate,
    sample, plot and gradcheck on its run folder."""
    from npvae import cli

    run = tmp_path / "run"
    assert cli.main(["train", "--preset", "conv", "--data-dir", str(tiny), "--epochs", "2",
                     "--hidden", "2,3", "--latent", "2", "--batch-size", "10", "--no-progress",
                     "--run-dir", str(run)]) == 0
    assert load_checkpoint(run / "checkpoint.npz").model_config["architecture"] == "conv"
    assert cli.main(["evaluate", str(run), "--iw-samples", "3", "--limit", "8"]) == 0
    assert cli.main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    (run / "manifold.png").unlink()
    assert cli.main(["plot", str(run)]) == 0 and (run / "manifold.png").is_file()
    capsys.readouterr()
    assert cli.main(["gradcheck", str(run)]) == 0
    out = capsys.readouterr().out
    assert "VAE(conv 4x4, channels 2-3" in out and "all ok" in out


def test_gradcheck_of_the_conv_preset_shrinks_its_channels(capsys):
    from npvae import cli

    assert cli.main(["gradcheck", "--preset", "conv", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "channels [32, 64] -> [2, 2], latent 20 -> 4" in out
    assert "VAE(conv 28x28, channels 2-2 / 4 / 2-2-2-1" in out and "14 gradients" in out
    assert "all ok" in out


@pytest.mark.parametrize("architecture, hidden, x_dim", [("mlp", (7, 5), 9), ("conv", (3, 4), 16),
                                                         ("conv", (2,), 36)])
def test_parameter_shapes_are_the_built_models_without_allocating(architecture, hidden, x_dim):
    """The shapes a checkpoint's members are checked against before anything is inflated."""
    from npvae.vae import parameter_shapes

    model = VAE(x_dim, hidden, 3, architecture=architecture, dtype="float64")
    assert parameter_shapes(model.config) == {k: v.shape for k, v in model.params.items()}


def test_the_bound_of_a_conv_model_takes_the_plain_form_in_chunks_that_fit():
    """The conv decoder ends in a transposed convolution: plain form, and chunks sized by
    its widest array (a transposed convolution's columns), not by x_dim."""
    from npvae.evaluate import CHUNK_BYTES, _default_chunk, _plain_form, iw_log_weights

    model = VAE(784, (32, 64), 20, architecture="conv")
    assert _plain_form(model, plain=False)
    chunk = _default_chunk(model, 5000, 100, plain=True)
    widest = 32 * 9 * 14 * 14  # ConvTranspose2D(64, 32) on 14 x 14: C_out k k per input pixel
    assert chunk * 100 * widest * 4 <= CHUNK_BYTES
    small = VAE(16, (2,), 2, architecture="conv", dtype="float64")
    x = np.random.default_rng(0).random((3, 16))
    np.testing.assert_array_equal(iw_log_weights(small, x, 4, np.random.default_rng(1)),
                                  iw_log_weights(small, x, 4, np.random.default_rng(1), plain=True))
