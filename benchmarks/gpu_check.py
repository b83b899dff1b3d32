"""npvae on a GPU (CuPy) beside PyTorch CUDA: gradient checks, an epoch of two presets, the IW bound.

One command for a machine with a GPU. On ``--backend cupy`` (the default):

1. the gradient checks of every preset's architecture (``npvae gradcheck``'s
   shrunk float64 copies: pytorch-example, conv, burda-iwae with its k-sample
   objective, cvae, burda2-iwae with two stochastic layers, vqvae) with the
   model's arrays on the backend, each gradient
   against central differences, relative error at most ``DEFAULT_TOL``;
2. one epoch (``--n-train`` examples, batch 128, float32) of the
   ``pytorch-example`` MLP and of the ``conv`` preset: npvae's
   ``npvae.train.train_step`` on the backend against the PyTorch replicas
   (``torch_vae.py``, ``torch_conv_vae.py``) on CUDA, from the same initial
   weights on the same batches, the device synchronised before each clock
   reading; seconds, npvae / PyTorch, and the training loss;
3. the importance-weighted bound (``npvae.evaluate.iw_bounds``) with
   ``--iw-k`` samples on the first ``--iw-examples`` test digits of the MLP
   after its epoch: seconds and the bound.

Writes ``results/gpu_check.json`` and prints a table. Without CuPy (or a GPU)
it says "skipped", writes nothing and exits 0. ``--backend numpy`` runs the
same steps on the CPU (PyTorch on its CPU device) as a smoke test of this
script; those numbers say nothing about a GPU.

Usage: ``python benchmarks/gpu_check.py [--n-train 60000] [--iw-k 100] [--iw-examples 1000]``;
``python benchmarks/gpu_check.py --backend numpy --n-train 512 --iw-examples 20`` (smoke test)
"""

if __name__ == "__main__":
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import sys
import time

import numpy as np

from benchmarks import _common

GRADCHECK_PRESETS = ("pytorch-example", "conv", "burda-iwae", "cvae", "burda2-iwae", "vqvae")


def backend_or_skip(name):
    """The array module ``name`` and its synchronise function; exit 0 with "skipped" if absent."""
    from npvae.backend import get_xp
    from npvae.errors import ConfigError

    try:
        xp = get_xp(name)
        if name == "cupy":
            xp.cuda.runtime.getDeviceCount()
            return xp, lambda: xp.cuda.Device().synchronize()
    except (ConfigError, Exception) as err:  # CuPy missing, or no CUDA device
        print(f"gpu_check: skipped: the {name} backend is not usable here ({err}); "
              "nothing was measured")
        sys.exit(0)
    return xp, lambda: None


def gpu_info(xp):
    """The CUDA device's name and memory, and CuPy's and CUDA's versions."""
    try:
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        name = props["name"]
    except Exception as err:   # a CuPy without these calls: the JSON still gets written
        return {"error": repr(err), "cupy": xp.__version__}
    return {"name": name.decode() if isinstance(name, bytes) else str(name),
            "memory_gib": props["totalGlobalMem"] / 2 ** 30, "cupy": xp.__version__,
            "cuda_runtime": xp.cuda.runtime.runtimeGetVersion()}


def gradient_checks(backend):
    """Every preset's shrunk float64 architecture checked on ``backend``: one row per preset."""
    from npvae.gradcheck import check_architecture, preset_architecture, shrink_architecture

    rows = []
    for name in GRADCHECK_PRESETS:
        base, objective, k = preset_architecture(name)
        config = shrink_architecture(base, 20)
        start = time.perf_counter()
        _, results = check_architecture(config, objective=objective, k=k, backend=backend)
        worst = max(r.rel_error for r in results)
        rows.append({"preset": name, "gradients": len(results), "worst_rel_error": worst,
                     "all_ok": all(r.ok for r in results),
                     "seconds": time.perf_counter() - start})
    return rows


def npvae_run(preset, backend, seed):
    from npvae.config import TrainConfig
    from npvae.optim import Adam
    from npvae.vae import VAE

    config = TrainConfig.from_preset(preset, seed=seed, figures=False, progress=False,
                                     backend=backend)
    model = VAE(**config.model_kwargs(784))
    return model, Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=config.lr)


def torch_side(preset, host_model, device):
    """PyTorch's replica of ``preset`` on ``device`` from ``host_model``'s weights, and its step."""
    import torch

    if preset == "conv":
        from benchmarks import torch_conv_vae as replica

        model = replica.make_model(tuple(host_model.config["hidden"]),
                                   latent=host_model.latent,
                                   weights=replica.weights_from_npvae(host_model)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(x):
            optimizer.zero_grad()
            eps = torch.randn((len(x), host_model.latent), device=device)
            loss = replica.loss_terms(model, x, eps, host_model.latent)[0]
            loss.backward()
            optimizer.step()
            return loss
    else:
        from benchmarks import torch_vae as replica

        model = replica.make_model(replica.weights_from_npvae(host_model)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(x):
            optimizer.zero_grad()
            recon, mu, logvar = model(x)
            loss = replica.loss_function(recon, x, mu, logvar)
            loss.backward()
            optimizer.step()
            return loss / len(x)
    return step


def epochs(args, xp, sync, torch, device):
    """One epoch of each preset, npvae on the backend and PyTorch on ``device``."""
    from npvae.train import train_step

    x_train, x_test = _common.mnist_arrays()
    x_train = x_train[:args.n_train]
    order = np.random.default_rng(args.seed).permutation(len(x_train))
    batches = [order[i:i + 128] for i in range(0, len(order), 128)]
    rows, mlp = [], None
    for preset in ("pytorch-example", "conv"):
        model, optimizer = npvae_run(preset, args.backend, args.seed)
        host_model, _ = npvae_run(preset, "numpy", args.seed)  # the same initial weights
        x_dev = xp.asarray(x_train)
        rng = (xp.random.default_rng(args.seed) if hasattr(xp.random, "default_rng")
               else np.random.default_rng(args.seed))
        train_step(model, optimizer, x_dev[batches[0]], rng=rng, check=False)  # warm-up
        sync()
        start, loss = time.perf_counter(), 0.0
        for index in batches:
            loss += float(train_step(model, optimizer, x_dev[index], rng=rng, check=False).loss)
        sync()
        row = {"preset": preset, "npvae_seconds": time.perf_counter() - start,
               "npvae_train_loss": loss / len(batches)}
        if torch is not None:
            step = torch_side(preset, host_model, device)
            x_torch = torch.from_numpy(np.ascontiguousarray(x_train)).to(device)
            step(x_torch[torch.as_tensor(batches[0], device=device)])
            if device == "cuda":
                torch.cuda.synchronize()
            start, loss = time.perf_counter(), 0.0
            for index in batches:
                loss += step(x_torch[torch.as_tensor(index, device=device)]).item()
            if device == "cuda":
                torch.cuda.synchronize()
            row.update(torch_seconds=time.perf_counter() - start,
                       torch_train_loss=loss / len(batches))
            row["npvae_over_torch"] = row["npvae_seconds"] / row["torch_seconds"]
        rows.append(row)
        if preset == "pytorch-example":
            mlp = model
    return rows, mlp, x_test


def iw_bound(args, xp, sync, model, x_test):
    from npvae.evaluate import iw_bounds

    x = xp.asarray(x_test[:args.iw_examples])
    rng = (xp.random.default_rng(0) if hasattr(xp.random, "default_rng")
           else np.random.default_rng(0))
    sync()
    start = time.perf_counter()
    bounds = iw_bounds(model, x, args.iw_k, rng)
    sync()
    return {"k": args.iw_k, "examples": args.iw_examples,
            "seconds": time.perf_counter() - start, "bound": float(np.mean(bounds))}


def main(argv=None):
    first, _, rest = __doc__.partition("\n")
    parser = argparse.ArgumentParser(description=first, epilog=rest,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("cupy", "numpy"), default="cupy")
    parser.add_argument("--n-train", type=int, default=60000,
                        help="examples in each timed epoch (default: all 60,000)")
    parser.add_argument("--iw-k", type=int, default=100)
    parser.add_argument("--iw-examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    xp, sync = backend_or_skip(args.backend)
    torch = _common.import_torch()
    device = "cpu"
    if torch is not None and args.backend == "cupy":
        device = "cuda" if torch.cuda.is_available() else None
        if device is None:
            torch = None
            print("PyTorch has no CUDA device here: npvae's side only")

    checks = gradient_checks(args.backend)
    _common.print_table([(r["preset"], r["gradients"], f"{r['worst_rel_error']:.2e}",
                          "ok" if r["all_ok"] else "FAILED", r["seconds"]) for r in checks],
                        ["preset (shrunk, float64)", "gradients", "worst rel. error", "check",
                         "seconds"], title=f"gradient checks on {args.backend}")
    rows, mlp, x_test = epochs(args, xp, sync, torch, device)
    _common.print_table([(r["preset"], r["npvae_seconds"], r.get("torch_seconds", "-"),
                          r.get("npvae_over_torch", "-"), r["npvae_train_loss"],
                          r.get("torch_train_loss", "-")) for r in rows],
                        ["preset", f"npvae ({args.backend}) s", f"PyTorch ({device}) s",
                         "npvae / PyTorch", "npvae train loss", "PyTorch train loss"],
                        title=f"\none epoch of {args.n_train} examples, batch 128, float32")
    bound = iw_bound(args, xp, sync, mlp, x_test)
    print(f"\nIW bound, k = {bound['k']}, first {bound['examples']} test digits, after the "
          f"MLP's epoch: {bound['bound']:.3f} nats in {bound['seconds']:.2f} s")
    _common.write_json("gpu_check" if args.backend == "cupy" else "gpu_check_numpy_smoke",
                       {"args": vars(args), "machine": _common.machine_info(torch),
                        "gpu": gpu_info(xp) if args.backend == "cupy" else None,
                        "torch_device": device, "gradient_checks": checks, "epochs": rows,
                        "iw_bound": bound}, args.out)
    return 0 if all(r["all_ok"] for r in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
