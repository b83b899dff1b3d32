# %% [markdown]
# # 18. From npvae to PyTorch
#
# Everything so far was NumPy and gradients derived by hand. The next model
# you meet will most likely be written in PyTorch, and PyTorch's own VAE
# example (`examples/vae/main.py`) is the model npvae's default preset
# reproduces. This tutorial crosses over: it trains that VAE in npvae,
# writes its weights in the format the ecosystem loads, loads them into the
# example's PyTorch class, checks that both give **the same numbers**, trains
# a few more epochs in PyTorch, and brings the result back to look at it with
# npvae's tools.
#
# The file format is **safetensors** (Hugging Face's): an 8-byte length, a
# JSON header naming each tensor's dtype, shape and byte range, then the raw
# little-endian numbers. Nothing in it is executed when it is read (a
# PyTorch `.pt` file is a pickle, which can run code). The command line does
# the same as this tutorial:
#
#     npvae export runs/pytorch-example vae.safetensors
#     npvae import vae.safetensors --run-dir runs/from-pytorch
#
# **How long it runs.** Default: one epoch of npvae on all of MNIST, then
# two in PyTorch, a couple of minutes. `NPVAE_QUICK=1` (the test suite): one
# epoch each on the first 2,000 digits, seconds. Runs and files go to
# `tutorials/runs/` (the quick mode: a temporary folder, removed at the
# end). It needs `pip install "npvae[torch]"` (PyTorch and safetensors);
# without PyTorch it stops after the npvae half, saying so.

# %%
import os
import sys
import time
from pathlib import Path

import numpy as np

# A checkout runs without installing npvae: put its root (the folder holding npvae/) on the
# path, found from this file or, in a notebook, from the notebook's folder.
here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(next((p for p in (here, *here.parents) if (p / "npvae").is_dir()), here)))

from npvae import cli  # noqa: E402
from npvae.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from npvae.data import load_mnist, to_unit_interval  # noqa: E402
from npvae.evaluate import evaluate_elbo  # noqa: E402
from npvae.export import export_run, import_run, layout  # noqa: E402
from npvae.train import TrainConfig, train  # noqa: E402
from npvae.tutorial import QUICK, Tutorial  # noqa: E402

tutorial = Tutorial("18_to_pytorch")  # its mode, its folders, and inline figures in a notebook
N_TRAIN, NPVAE_EPOCHS, TORCH_EPOCHS = (2_000, 1, 1) if QUICK else (None, 1, 2)
print("mode:", "quick" if QUICK else "default")  # no full version: NPVAE_FULL=1 runs the default
RUNS = tutorial.runs
started = time.perf_counter()


def skip_the_rest(err, checked):
    """Without safetensors or PyTorch: say what ran and stop (CI, NPVAE_REQUIRE_TORCH=1, fails)."""
    if os.environ.get("NPVAE_REQUIRE_TORCH") == "1":
        raise err
    print(f"check passed ({checked}; the rest is skipped: {err}; pip install \"npvae[torch]\")")
    tutorial.finish()
    raise SystemExit(0)


# %% [markdown]
# ## Train in npvae, export
#
# The `pytorch-example` preset is the example's model (784-400-20, ReLU,
# Bernoulli likelihood, `torch.nn.Linear`'s initialisation, Adam 1e-3, batch
# 128). `export_run` (the command `npvae export`) writes its weights under
# the example's own names: npvae's encoder output layer (400 -> 40) holds
# `fc21` (the first 20 columns, $\mu$) and `fc22` ($\log\sigma^2$), and every
# weight is transposed, since npvae computes $xW + b$ with $W$ (in, out) and
# `nn.Linear` computes $x W^\top + b$ with `weight` (out, in).

# %%
try:
    from safetensors import safe_open  # the format's own reader (the export and torch extras)
except ImportError as err:
    skip_the_rest(err, "nothing run")

config = TrainConfig.from_preset("pytorch-example", epochs=NPVAE_EPOCHS, n_train=N_TRAIN,
                                 progress=False, figures=False)
result = train(config, RUNS / "18_npvae", overwrite=True)
exported = RUNS / "18_npvae.safetensors"
print("layout:", layout(export_run(result.run_dir, exported, overwrite=True)))

with safe_open(str(exported), framework="numpy") as f:
    for name in f.keys():
        tensor = f.get_slice(name)
        print(f"  {name:<12} {str(tensor.get_shape()):<12} {tensor.get_dtype()}")
    print("metadata:", sorted(f.metadata()))

# %% [markdown]
# Importing the file straight back gives the same bits: the layout changes by
# transposes and a split only, which lose nothing.

# %%
model, _ = model_from_checkpoint(result.run_dir)
back = load_checkpoint(import_run(exported, RUNS / "18_roundtrip", overwrite=True)
                       / "checkpoint.npz")
same_bits = all(back.params[k].tobytes() == np.asarray(p).tobytes()
                for k, p in model.params.items())
print("export then import, bit for bit:", same_bits)

# %%
try:
    import torch
    from torch import nn, optim
    from torch.nn import functional as F
except ImportError as err:
    assert same_bits
    skip_the_rest(err, "the export imports back bit for bit")

# %% [markdown]
# ## The same VAE in PyTorch
#
# This is the model of `examples/vae/main.py`, layer for layer, with its loss
# (binary cross-entropy and the KL, summed over pixels, latents and the
# batch). `load_state_dict(..., strict=True)` fails unless every name and
# shape in the file is one the class has, and the other way round. (One
# version of the example clamps the decoder's probabilities to
# [1e-4, 1 - 1e-4] and adds the continuous Bernoulli's normaliser to the
# loss; its layers, and so the file it loads, are the same.)

# %%
class VAE(nn.Module):
    def __init__(self):
        super(VAE, self).__init__()

        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction='sum')
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


from safetensors.torch import load_file, save_file  # noqa: E402

net = VAE()
net.load_state_dict(load_file(str(exported)), strict=True)

# %% [markdown]
# ## The same numbers, side by side
#
# Eight test digits through both models: the encoder's $\mu$ and
# $\log\sigma^2$, the decoder's probabilities at $z = \mu$, and the loss with
# the **same noise** $\varepsilon$ (npvae's `forward` takes it; in PyTorch we
# form $z = \mu + \varepsilon\, e^{\log\sigma^2/2}$ by hand instead of
# `reparameterize`'s own draw). Both work in float32, adding in different
# orders, so they agree to float32's rounding: a few parts in $10^7$ of
# each number's size. A mistake in the layout (a weight not transposed, `fc21`
# and `fc22` swapped) would make them differ at the first decimal.

# %%
mnist = load_mnist()
x_test = to_unit_interval(mnist.x_test)
x = x_test[:8]
eps = np.random.default_rng(0).standard_normal((8, 20), dtype=np.float32)
terms = model.forward(x, eps=eps)                                  # npvae: nats per example
mu, logvar = model.encode(x)
with torch.no_grad():
    mu_t, logvar_t = net.encode(torch.from_numpy(x))
    z_t = mu_t + torch.from_numpy(eps) * torch.exp(0.5 * logvar_t)
    loss_t = loss_function(net.decode(z_t), torch.from_numpy(x), mu_t, logvar_t).item() / len(x)
    probs_t = net.decode(mu_t)
rows = [("mu", mu, mu_t), ("logvar", logvar, logvar_t), ("decode(mu)", model.decode(mu), probs_t)]
print(f"{'':<16} {'npvae':>12} {'PyTorch':>12} {'largest |difference|':>22}")
for name, ours, theirs in rows:
    diff = np.abs(ours - theirs.numpy()).max()
    print(f"{name + '[0, 0]':<16} {ours[0, 0]:12.6f} {theirs[0, 0].item():12.6f} {diff:22.2e}")
    assert diff <= 2.0**-19 * max(1.0, np.abs(ours).max()), (name, diff)
print(f"{'loss':<16} {float(terms.loss):12.4f} {loss_t:12.4f} "
      f"{abs(float(terms.loss) - loss_t):22.2e}   (nats per example, same eps)")
assert abs(float(terms.loss) - loss_t) <= 1e-4 * abs(loss_t)

# %% [markdown]
# ## A few more epochs in PyTorch
#
# The example's training loop, from npvae's weights. Adam starts afresh: the
# file holds the weights, not the optimizer's moments (npvae's checkpoint
# keeps those, for `npvae train --resume`). The loss printed is the
# example's "Average loss", summed over each batch and divided by the
# number of digits: nats per example, the unit npvae reports.

# %%
torch.manual_seed(1)
optimizer = optim.Adam(net.parameters(), lr=1e-3)
x_train = torch.from_numpy(to_unit_interval(mnist.x_train[:N_TRAIN]))
x_test_t = torch.from_numpy(x_test)


def test_loss():
    """The example's test loss: BCE + KLD summed over the test set (z sampled), divided by N."""
    net.eval()
    total = 0.0
    with torch.no_grad():
        for data in x_test_t.split(1000):
            recon_batch, mu_b, logvar_b = net(data)
            total += loss_function(recon_batch, data, mu_b, logvar_b).item()
    return total / len(x_test_t)


before = test_loss()
print(f"====> Test set loss from npvae's weights: {before:.4f}")
for epoch in range(1, TORCH_EPOCHS + 1):
    net.train()
    train_loss = 0
    for data in x_train[torch.randperm(len(x_train))].split(128):
        optimizer.zero_grad()
        recon_batch, mu_b, logvar_b = net(data)
        loss = loss_function(recon_batch, data, mu_b, logvar_b)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
    print(f"====> Epoch: {epoch} Average loss: {train_loss / len(x_train):.4f}")
    after = test_loss()
    print(f"====> Test set loss: {after:.4f}")

# %% [markdown]
# ## Back to npvae
#
# `save_file(net.state_dict(), path)` is how a PyTorch user saves weights as
# safetensors; the file has no npvae metadata, and needs none: `import_run`
# (the command `npvae import`) recognises the example's names and reads the
# sizes off the shapes. It checks the file before reading any number (the
# header's length, the JSON, each tensor's dtype, shape and byte range, and
# that the names are exactly the model's), so a damaged or hostile file is
# one line of error and no run folder. The run it writes is one that
# `npvae evaluate`, `sample`, `plot` and `explore` read.

# %%
trained = RUNS / "18_from_pytorch.safetensors"
save_file(net.state_dict(), str(trained))
run = import_run(trained, RUNS / "18_from_pytorch", overwrite=True)
imported, _ = model_from_checkpoint(run)
with torch.no_grad():
    mu_t = net.encode(torch.from_numpy(x))[0].numpy()
print("largest |mu difference| after the PyTorch epochs:",
      f"{np.abs(imported.encode(x)[0] - mu_t).max():.2e}")
elbo = evaluate_elbo(imported, x_test, rng=np.random.default_rng(0))
print(f"npvae's test loss of the imported model: {elbo['loss']:.4f} nats per example "
      f"(PyTorch's: {after:.4f}; each draws its own z)")

# %% [markdown]
# `npvae explore RUN` opens the explorer on it: the test digits' means on a
# plane of latent space, the digit decoded where you click, sliders for the
# most active dimensions. Without a screen, `--out` writes a still:
#
#     npvae explore tutorials/runs/18_from_pytorch

# %%
still = tutorial.figures / "18_explore.png"
assert cli.main(["explore", str(run), "--n", "500", "--out", str(still)]) == 0
tutorial.show(still)

# %% [markdown]
# ## Check

# %%
print(f"total time {time.perf_counter() - started:.1f} s")
assert same_bits
assert np.abs(imported.encode(x)[0] - mu_t).max() <= 2.0**-19 * max(1.0, np.abs(mu_t).max())
assert after < before, (before, after)
assert abs(elbo["loss"] - after) < 0.05 * after
print(f"check passed: npvae's weights give PyTorch's numbers to float32 rounding, and "
      f"{TORCH_EPOCHS} PyTorch epoch(s) later (test loss {before:.1f} -> {after:.1f}) the model "
      "is back in npvae")
tutorial.finish()  # the quick mode's temporary folder goes
