"""PyTorch's VAE example (``examples/vae/main.py``) as functions, fed npvae's MNIST arrays.

The model, loss, optimizer and the train and test loops are those of the
example, line for line:

    fc1 784->400, ReLU, fc21 / fc22 400->20 (mu, logvar), z = mu + eps * exp(logvar / 2),
    fc3 20->400, ReLU, fc4 400->784, sigmoid
    loss = binary_cross_entropy(recon, x, reduction="sum") + KLD,  both summed over the batch
    Adam(lr=1e-3), batch 128, float32, torch.manual_seed(seed)

The example's test loss is the sum over the test set of BCE + KLD divided by
N, with z *sampled* (its ``reparameterize`` draws eps in eval mode too).

Two deliberate differences, both to compare like with like:

- the data are the arrays npvae trains on (``npvae.data.load_mnist`` then
  ``to_unit_interval``: (N, 784) float32 in [0, 1], identical to
  ``transforms.ToTensor()``), indexed a batch at a time, instead of a
  ``DataLoader`` that converts 128 PIL images per batch. The timings are
  the model's, not the loader's. ``loader="dataloader"`` restores the
  example's input pipeline (torchvision's MNIST ``__getitem__`` and
  ``ToTensor``, re-created with Pillow since torchvision is not needed
  here, in a ``DataLoader`` with the example's CPU settings) to time the
  example as shipped, loader included;
- ``order`` can fix each epoch's shuffle (the DataLoader draws
  ``torch.randperm``, which is what happens when it is not given), and
  ``weights`` can fix the initial weights, so npvae can start from the
  same point and see the same batches.

PyTorch is optional: it is imported inside the functions, and running this
file without it prints a message and exits with status 0.
"""

if __name__ == "__main__":  # threads first: OpenBLAS reads them once, when NumPy loads
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import threads_from_argv

    threads_from_argv()

import time

import numpy as np

BATCH_SIZE = 128
LAYERS = {"fc1": (784, 400), "fc21": (400, 20), "fc22": (400, 20), "fc3": (20, 400),
          "fc4": (400, 784)}

_model_class = None


def model_class():
    """The example's ``VAE(nn.Module)``, defined on first use (PyTorch is imported here)."""
    global _model_class
    if _model_class is not None:
        return _model_class
    import torch
    from torch import nn
    from torch.nn import functional as F

    class VAE(nn.Module):
        def __init__(self, hidden=400):  # hidden: ours, for benchmarks/scaling.py (the example: 400)
            super(VAE, self).__init__()

            self.fc1 = nn.Linear(784, hidden)
            self.fc21 = nn.Linear(hidden, 20)
            self.fc22 = nn.Linear(hidden, 20)
            self.fc3 = nn.Linear(20, hidden)
            self.fc4 = nn.Linear(hidden, 784)

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

    _model_class = VAE
    return VAE


def loss_function(recon_x, x, mu, logvar):
    """Reconstruction + KL divergence losses summed over all elements and batch (the example's)."""
    import torch
    from torch.nn import functional as F

    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction='sum')

    # see Appendix B from VAE paper:
    # Kingma and Welling. Auto-Encoding Variational Bayes. ICLR, 2014
    # https://arxiv.org/abs/1312.6114
    # 0.5 * sum(1 + log(sigma^2) - mu^2 - sigma^2)
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())

    return BCE + KLD


def weights_from_npvae(vae):
    """npvae's 784-400-20 VAE weights under the example's names, as NumPy arrays.

    npvae computes ``x @ W + b`` with W (n_in, n_out); ``nn.Linear`` computes
    ``x @ weight.T + bias`` with weight (n_out, n_in). npvae's encoder output
    layer (400 -> 40) holds fc21 (the first 20 columns, mu) and fc22 (logvar).
    """
    p = {k: np.asarray(v) for k, v in vae.params.items()}
    Z = vae.latent
    W2, b2 = p["encoder.2.W"], p["encoder.2.b"]
    return {
        "fc1.weight": p["encoder.0.W"].T, "fc1.bias": p["encoder.0.b"],
        "fc21.weight": W2[:, :Z].T, "fc21.bias": b2[:Z],
        "fc22.weight": W2[:, Z:].T, "fc22.bias": b2[Z:],
        "fc3.weight": p["decoder.0.W"].T, "fc3.bias": p["decoder.0.b"],
        "fc4.weight": p["decoder.2.W"].T, "fc4.bias": p["decoder.2.b"],
    }


def make_model(weights=None, dtype=None, hidden=400):
    """The example's model; ``weights`` (name -> array, ``weights_from_npvae``) replace its init.

    ``hidden`` widens or narrows the two hidden layers (the example: 400).
    """
    import torch

    model = model_class()(hidden)
    if dtype is not None:
        model = model.to(dtype)
    if weights is not None:
        state = model.state_dict()
        missing = set(state) - set(weights)
        if missing:
            raise ValueError(f"weights lacks {sorted(missing)}")
        model.load_state_dict({k: torch.as_tensor(np.ascontiguousarray(weights[k]),
                                                  dtype=state[k].dtype) for k in state})
    return model


def count_subnormals(optimizer):
    """Entries of Adam's exp_avg and exp_avg_sq that are subnormal (0 < |a| < tiny)."""
    import torch

    counts = {"exp_avg": 0, "exp_avg_sq": 0}
    for state in optimizer.state.values():
        for key in counts:
            a = state.get(key)
            if a is not None:
                tiny = torch.finfo(a.dtype).tiny
                counts[key] += int(((a != 0) & (a.abs() < tiny)).sum())
    return counts


def to_tensor(pic):
    """torchvision's ``transforms.functional.to_tensor`` for a mode-"L" PIL image: (1, H, W)."""
    import torch

    img = torch.from_numpy(np.array(pic, np.uint8, copy=True))
    img = img.view(pic.size[1], pic.size[0], 1).permute((2, 0, 1)).contiguous()
    return img.to(dtype=torch.get_default_dtype()).div(255)


def mnist_dataset(x):
    """torchvision's ``datasets.MNIST(transform=ToTensor())`` over images ``x`` (N, 784) in [0, 1].

    Stores them as uint8 (N, 28, 28), as torchvision does; each item is a
    PIL image made from its row and converted by ``to_tensor``, so the
    pixels equal ``x``'s exactly (k / 255 in float32 either way).
    """
    import torch
    from PIL import Image

    class MNIST(torch.utils.data.Dataset):
        def __init__(self, images):
            self.data = torch.from_numpy(images)
            self.targets = torch.zeros(len(images), dtype=torch.int64)

        def __len__(self):
            return len(self.data)

        def __getitem__(self, index):
            img, target = self.data[index], int(self.targets[index])
            img = Image.fromarray(img.numpy())  # mode "L" for 2-D uint8
            return to_tensor(img), target

    side = int(round(np.sqrt(x.shape[1])))
    images = np.rint(np.asarray(x, np.float64) * 255).astype(np.uint8).reshape(-1, side, side)
    return MNIST(images)


def batches_of(x, batch_size, order=None, loader="arrays"):
    """An epoch's batches: (B, 784) rows of tensor ``x``, or a DataLoader's (B, 1, 28, 28)."""
    import torch

    if loader == "dataloader":
        return (data for data, _ in torch.utils.data.DataLoader(
            x, batch_size=batch_size, shuffle=False,
            sampler=None if order is None else order.tolist()))
    if order is None:
        return (x[start:start + batch_size] for start in range(0, len(x), batch_size))
    return (x[order[start:start + batch_size]] for start in range(0, len(x), batch_size))


def test(model, x_test, batch_size=BATCH_SIZE, loader="arrays"):
    """The example's ``test``: sum of the batch losses over the test set, divided by N."""
    import torch

    model.eval()
    test_loss = 0
    with torch.no_grad():
        for data in batches_of(x_test, batch_size, loader=loader):
            recon_batch, mu, logvar = model(data)
            test_loss += loss_function(recon_batch, data, mu, logvar).item()
    return test_loss / len(x_test)


def train_torch(x_train, x_test, epochs, batch_size=BATCH_SIZE, seed=1, flush_denormal=False,
                order=None, weights=None, threads=None, log_interval=0, load_monitor=None,
                loader="arrays"):
    """Train PyTorch's VAE example; return its per-epoch losses and seconds.

    Parameters
    ----------
    x_train, x_test : (N, 784) float32 arrays in [0, 1] (``to_unit_interval``).
    epochs : number of passes over ``x_train``.
    batch_size, seed : the example's ``--batch-size`` and ``--seed``.
    flush_denormal : ``torch.set_flush_denormal(True)`` for the run (restored
        to False after): subnormal floats are treated as zero by the CPU.
    order : ``epochs`` index arrays, the shuffle of each epoch; default a
        ``torch.randperm`` per epoch, as the example's DataLoader does.
    weights : initial weights by the example's names (``weights_from_npvae``).
    threads : ``torch.set_num_threads`` for the run, if given.
    log_interval : print the example's progress line every this many
        batches (0: never; printing is not what we time).
    load_monitor : a factory of context managers with a ``cpus`` attribute
        (``benchmarks._common.OtherLoad``) to watch each training pass.
    loader : ``"arrays"`` (index the arrays, the default) or ``"dataloader"``
        (the example's own input pipeline: PIL images, ToTensor, DataLoader).

    Returns a dict of lists, one entry per epoch: ``train_loss`` (the
    example's "Average loss": summed batch losses / N), ``test_loss``,
    ``epoch_seconds`` (the training pass), ``optimizer_seconds`` (the part
    in ``optimizer.step``), ``test_seconds``, ``subnormal_moments`` (Adam
    state entries that are subnormal at the end of the epoch) and, with a
    ``load_monitor``, ``other_load_cpus``.
    """
    import torch
    from torch import optim

    if order is not None and len(order) < epochs:
        raise ValueError(f"order has {len(order)} epochs of indices, need {epochs}")
    if threads is not None:
        torch.set_num_threads(threads)
    if flush_denormal and not torch.set_flush_denormal(True):
        raise RuntimeError("torch.set_flush_denormal(True) is not supported on this CPU")
    try:
        torch.manual_seed(seed)
        model = make_model(weights)
        optimizer = optim.Adam(model.parameters(), lr=1e-3)
        if loader == "dataloader":
            x_train, x_test = mnist_dataset(x_train), mnist_dataset(x_test)
        elif loader == "arrays":
            x_train = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
            x_test = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32))
        else:
            raise ValueError(f"loader={loader!r} must be 'arrays' or 'dataloader'")
        n = len(x_train)
        history = {k: [] for k in ("train_loss", "test_loss", "epoch_seconds",
                                   "optimizer_seconds", "test_seconds", "subnormal_moments")}
        for epoch in range(1, epochs + 1):
            perm = (torch.randperm(n) if order is None
                    else torch.as_tensor(np.asarray(order[epoch - 1]), dtype=torch.int64))
            train_loader = batches_of(x_train, batch_size, perm, loader)
            model.train()
            train_loss = 0
            optimizer_seconds = 0.0
            monitor = load_monitor().start() if load_monitor else None
            start_time = time.perf_counter()
            for batch_idx, data in enumerate(train_loader):
                optimizer.zero_grad()
                recon_batch, mu, logvar = model(data)
                loss = loss_function(recon_batch, data, mu, logvar)
                loss.backward()
                train_loss += loss.item()
                step_start = time.perf_counter()
                optimizer.step()
                optimizer_seconds += time.perf_counter() - step_start
                if log_interval and batch_idx % log_interval == 0:
                    print('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                        epoch, batch_idx * len(data), n, 100. * batch_idx * batch_size / n,
                        loss.item() / len(data)))
            history["epoch_seconds"].append(time.perf_counter() - start_time)
            if monitor is not None:
                history.setdefault("other_load_cpus", []).append(monitor.stop())
            history["optimizer_seconds"].append(optimizer_seconds)
            history["train_loss"].append(train_loss / n)
            history["subnormal_moments"].append(count_subnormals(optimizer))
            start_time = time.perf_counter()
            history["test_loss"].append(test(model, x_test, batch_size, loader))
            history["test_seconds"].append(time.perf_counter() - start_time)
        return history
    finally:
        if flush_denormal:
            torch.set_flush_denormal(False)


def main(argv=None):
    """Train the example alone on npvae's MNIST and print its epochs."""
    from benchmarks import _common

    parser = _common.script_parser(__doc__, epochs=3)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flush-denormal", action="store_true",
                        help="torch.set_flush_denormal(True) during training")
    parser.add_argument("--loader", choices=("arrays", "dataloader"), default="arrays",
                        help="index the arrays (default) or use the example's DataLoader")
    args = parser.parse_args(argv)
    torch = _common.torch_for("torch_vae", args.threads)
    x_train, x_test = _common.mnist_arrays()
    h = train_torch(x_train, x_test, args.epochs, args.batch_size, args.seed,
                    flush_denormal=args.flush_denormal, loader=args.loader)
    rows = [(e + 1, h["epoch_seconds"][e], h["optimizer_seconds"][e], h["train_loss"][e],
             h["test_loss"][e], h["subnormal_moments"][e]["exp_avg"])
            for e in range(args.epochs)]
    _common.print_table(rows, ["epoch", "train s", "optimizer s", "train loss", "test loss",
                               "subnormal exp_avg"],
                        title=f"PyTorch VAE example, loader={args.loader}, "
                              f"flush_denormal={args.flush_denormal}, "
                              f"{torch.get_num_threads()} threads")
    _common.write_json("torch_vae", {"args": vars(args), "machine": _common.machine_info(torch),
                                     "history": h}, args.out)


if __name__ == "__main__":
    main()
