# %% [markdown]
# # 12. Convolution by hand: a loop, a matrix product, its backward, and its transpose
#
# A dense layer connects every pixel to every unit. A **convolution** slides
# one small kernel over the image instead: each output pixel is the same
# weighted sum of a $k \times k$ window of the input, so the layer has
# $C_\text{out} C_\text{in} k^2$ weights whatever the image size, and a digit's
# stroke is detected wherever it is. Arrays are **NCHW**: (batch, channels,
# height, width), as in PyTorch.
#
# This tutorial writes one convolution as a loop you can read, then as one
# matrix product (im2col), derives its backward, checks it with finite
# differences, and builds the **transposed convolution** (the decoder's
# upsampling layer) as a convolution's backward. Every piece is then matched
# against `npvae.conv`. (Derivations: [derivations.md, Convolution](derivations.md#convolution)
# and [Transposed convolution](derivations.md#transposed-convolution).)
# It runs in a few seconds.

# %%
import sys
from pathlib import Path

import numpy as np

# A checkout runs without installing npvae: put its root (the folder holding npvae/) on the
# path, found from this file or, in a notebook, from the notebook's folder.
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(next((p for p in (here, *here.parents) if (p / "npvae").is_dir()), here)))

from npvae.conv import Conv2D, ConvTranspose2D, channels_first, col2im, crop, im2col  # noqa: E402
from npvae.gradcheck import check_layer, format_results, rel_error  # noqa: E402
from npvae.tutorial import Tutorial  # noqa: E402

tutorial = Tutorial("12_convolution")  # where its figure goes, and the figure inline in a notebook

rng = np.random.default_rng(0)
B, C_in, C_out, H, W, k, stride, padding = 2, 3, 4, 7, 6, 3, 2, 1
x = rng.standard_normal((B, C_in, H, W))
weight = rng.standard_normal((C_out, C_in, k, k))
bias = rng.standard_normal(C_out)

# %% [markdown]
# ## One convolution, as a loop
#
# Pad the input with `padding` zeros on each side; output pixel $(y, x)$ is
# the window whose top-left corner is $(s y, s x)$, multiplied entry by entry
# with the kernel of output channel $o$ and summed, plus the bias:
#
# $$\mathrm{out}_{n o y x} = b_o + \sum_{c, i, j} W_{o c i j} \, \bar x_{n, c, s y + i, s x + j},
# \qquad H_o = \lfloor (H + 2p - k) / s \rfloor + 1.$$

# %%
def conv_loop(x, weight, bias, stride, padding):
    B, C, H, W = x.shape
    C_out, _, k, _ = weight.shape
    Ho, Wo = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.zeros((B, C_out, Ho, Wo))
    for n in range(B):
        for o in range(C_out):
            for y in range(Ho):
                for xx in range(Wo):
                    window = xpad[n, :, stride * y:stride * y + k, stride * xx:stride * xx + k]
                    out[n, o, y, xx] = np.sum(weight[o] * window) + bias[o]
    return out


out_loop = conv_loop(x, weight, bias, stride, padding)
print("x", x.shape, "-> out", out_loop.shape, f"(H_o = ({H} + 2 - 3) // 2 + 1 = {out_loop.shape[2]})")

# %% [markdown]
# ## The same, as one matrix product (im2col)
#
# Four nested loops over pixels are slow in Python. Instead, copy every
# window into a column: `im2col` gives a matrix of shape
# $(C_\text{in} k^2, B H_o W_o)$, one column per output pixel, and the
# convolution becomes **one** product with the weights reshaped to
# $(C_\text{out}, C_\text{in} k^2)$: a dense layer applied to every window.
# npvae's `im2col` loops over the $k^2$ kernel offsets only (9 strided copies
# of the whole batch), never over pixels. It works on arrays with the batch
# after the channels, (C, B, H, W), so the product comes out in that order.

# %%
Ho, Wo = out_loop.shape[2:]
cols = im2col(channels_first(x, padding), k, stride, Ho, Wo).reshape(C_in * k * k, B * Ho * Wo)
out2 = weight.reshape(C_out, -1) @ cols + bias[:, None]             # (C_out, B Ho Wo)
out_vec = out2.reshape(C_out, B, Ho, Wo).transpose(1, 0, 2, 3)       # back to NCHW
print("cols", cols.shape, " product", out2.shape, f" max |loop - im2col| = {np.abs(out_vec - out_loop).max():.1e}")

layer = Conv2D(C_in, C_out, k, stride=stride, padding=padding, rng=rng, dtype=np.float64)
layer.params["W"][...], layer.params["b"][...] = weight, bias
out = layer.forward(x)
print("npvae.conv.Conv2D:", layer, f" max |loop - Conv2D| = {np.abs(out - out_loop).max():.1e}")

# %% [markdown]
# ## Backward by hand
#
# The product form is a dense layer's, so its three gradients are the dense
# layer's (tutorial 1), with $\mathrm{dout}$ rearranged as
# $\mathrm{dout}_2$ $(C_\text{out}, B H_o W_o)$:
#
# $$\mathrm{dW}_2 = \mathrm{dout}_2 \, \mathrm{cols}^\top, \qquad
# \mathrm{db} = \textstyle\sum_{n, y, x} \mathrm{dout}, \qquad
# \mathrm{dcols} = W_2^\top \, \mathrm{dout}_2.$$
#
# $\mathrm{dcols}$ is the gradient for the *copies*. Each input pixel was
# copied into every window that covers it, so its gradient is the **sum** over
# those copies: `col2im` adds every column back onto the pixels it came from
# (the same loop over offsets, `+=` instead of `=`). Last, the padding zeros
# were not inputs: crop them off.

# %%
dout = rng.standard_normal(out.shape)
dout2 = dout.transpose(1, 0, 2, 3).reshape(C_out, -1)
dW = (dout2 @ cols.T).reshape(weight.shape)
db = dout2.sum(axis=1)
dcols = weight.reshape(C_out, -1).T @ dout2
dxpad = col2im(dcols.reshape(C_in, k, k, B, Ho, Wo), (C_in, B, H + 2 * padding, W + 2 * padding),
               stride)
dx = crop(dxpad, padding)

layer.forward(x)
dx_npvae = layer.backward(dout)
grads_npvae = {k: g.copy() for k, g in layer.grads.items()}  # the check below overwrites grads
for name, ours, theirs in (("dx", dx, dx_npvae), ("dW", dW, grads_npvae["W"]),
                           ("db", db, grads_npvae["b"])):
    print(f"{name}: by hand vs Conv2D.backward, relative error {rel_error(ours, theirs):.1e}")

# %% [markdown]
# ## The finite-difference check
#
# `check_layer` perturbs every entry of $x$, $W$ and $b$ by $\pm h$ and compares
# $(L(+h) - L(-h)) / 2h$ with the backward, for $L = \sum \mathrm{dout} \odot \mathrm{out}$
# (float64; see [derivations.md, Finite-difference checks](derivations.md#finite-difference-checks)).

# %%
results = check_layer(layer, x, rng)
print(format_results(results))

# %% [markdown]
# ## The transposed convolution is a convolution's backward
#
# The encoder halves the image with stride-2 convolutions (28 -> 14 -> 7);
# the decoder must double it back. The layer that does so is the map we just
# wrote for $\mathrm{dx}$: product, then col2im. A **transposed convolution**
# with weight $W$ $(C_\text{in}, C_\text{out}, k, k)$ computes what the
# backward of the convolution $C_\text{out} \to C_\text{in}$ with the same $W$
# computes for $\mathrm{dx}$. Each input pixel scatters a $k \times k$ patch of
# weights onto the output, patches `stride` apart; **output padding** picks
# the size when several map to the same one (14 and 13 both become 7).
#
# The conv preset's first transposed convolution, from 32 channels at 7 x 7 to
# 64 channels at 14 x 14 (stride 2, padding 1, output padding 1):

# %%
up = ConvTranspose2D(32, 64, 3, stride=2, padding=1, output_padding=1, rng=rng, dtype=np.float64)
up.params["b"][...] = 0.0
down = Conv2D(64, 32, 3, stride=2, padding=1, rng=rng, dtype=np.float64)
down.params["W"] = up.params["W"]                  # the same (64 -> 32) convolution's weights
h = rng.standard_normal((2, 32, 7, 7))
print("down: (2, 64, 14, 14) ->", down.forward(np.zeros((2, 64, 14, 14))).shape)
upsampled = up.forward(h)
print("up:", h.shape, "->", upsampled.shape)
print(f"max |ConvTranspose2D.forward(h) - Conv2D.backward(dout = h)| = "
      f"{np.abs(upsampled - down.backward(h)).max():.1e}")

# %% [markdown]
# Its backward, in turn, is that convolution's forward: im2col of $\mathrm{dout}$
# (padded, the adjoint of the crop), then a product. Checked the same way, on
# a smaller one:

# %%
small = ConvTranspose2D(3, 2, 3, stride=2, padding=1, output_padding=1, rng=rng, dtype=np.float64)
transpose_results = check_layer(small, rng.standard_normal((2, 3, 4, 5)), rng)
print(format_results(transpose_results))

# %% [markdown]
# ## What the layers do to a digit
#
# Four hand-set 3 x 3 kernels (vertical and horizontal edges, a diagonal, a
# blur) in one `Conv2D(1, 4, 3, stride=2, padding=1)`: each makes a 14 x 14
# feature map of an MNIST digit. The `ConvTranspose2D` with the same weights,
# applied to each map alone, spreads every value back over a 3 x 3 patch of a
# 28 x 28 image: the decoder's way up, here undoing the stride but not the
# filtering (it is the convolution's transpose, not its inverse).

# %%
import matplotlib.pyplot as plt  # noqa: E402

from npvae.data import load_mnist, to_unit_interval  # noqa: E402

digit = to_unit_interval(load_mnist().x_test[:1]).reshape(1, 1, 28, 28).astype(np.float64)
kernels = {
    "vertical edges": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "horizontal edges": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "diagonal": [[2, 1, 0], [1, 0, -1], [0, -1, -2]],
    "blur": [[1, 2, 1], [2, 4, 2], [1, 2, 1]],
}
down4 = Conv2D(1, 4, 3, stride=2, padding=1, rng=rng, dtype=np.float64)
down4.params["W"][...] = np.array(list(kernels.values()), dtype=np.float64)[:, None] / 4
down4.params["b"][...] = 0.0
maps = down4.forward(digit)                                          # (1, 4, 14, 14)
up1 = ConvTranspose2D(1, 1, 3, stride=2, padding=1, output_padding=1, rng=rng, dtype=np.float64)
up1.params["b"][...] = 0.0
fig, axes = plt.subplots(len(kernels), 4, figsize=(7.5, 2 * len(kernels)))
for row, name in enumerate(kernels):
    up1.params["W"][...] = down4.params["W"][row:row + 1]             # this kernel alone
    back = up1.forward(maps[:, row:row + 1])                          # (1, 1, 28, 28)
    panels = [(digit[0, 0], "the digit", "gray_r"), (down4.params["W"][row, 0], f"kernel: {name}", "RdBu_r"),
              (maps[0, row], "Conv2D: feature map 14 x 14", "RdBu_r"),
              (back[0, 0], "ConvTranspose2D: 28 x 28", "RdBu_r")]
    for ax, (image, title, cmap) in zip(axes[row], panels):
        limit = np.abs(image).max() or 1.0
        ax.imshow(image, cmap=cmap, vmin=0 if cmap == "gray_r" else -limit, vmax=limit)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
fig.tight_layout()
tutorial.savefig(fig, "12_feature_maps.png")


# %% [markdown]
# ## Check
#
# The loop, the im2col product and `Conv2D` agree; the backward by hand
# equals `Conv2D.backward`; both layers pass the finite-difference check; and
# the transposed convolution's forward is the convolution's input gradient.

# %%
assert np.allclose(out_vec, out_loop, atol=1e-12) and np.allclose(out, out_loop, atol=1e-12)
assert rel_error(dx, dx_npvae) < 1e-12 and rel_error(dW, grads_npvae["W"]) < 1e-12
assert rel_error(db, grads_npvae["b"]) < 1e-12
assert all(r.ok for r in results + transpose_results)
assert upsampled.shape == (2, 64, 14, 14) and np.allclose(upsampled, down.backward(h), atol=1e-12)
print("check passed: a convolution is an im2col product, its backward a product and col2im, "
      "and a transposed convolution is its backward")
tutorial.finish()  # the quick mode's temporary folder goes

# %% [markdown]
# ## Practise
#
# Write both layers' forward and backward yourself in `12_conv.py` and
# `12_conv_transpose.py` (in `tutorials/exercises/`), then grade them:
#
#     npvae exercises check conv conv_transpose
#
# The grader compares them with npvae's and with finite differences and, when
# one is wrong, says how (the kernel flipped in dx, a flipped sign, a missing
# 1/B); `npvae exercises list` shows every exercise.
