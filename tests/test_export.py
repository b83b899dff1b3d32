"""npvae export / import: every preset's weights load strictly into their PyTorch module and give
npvae's numbers; export then import is the identity; hostile files are refused in one line.

The PyTorch modules are ``benchmarks/torch_models.py``'s (and, for ``pytorch-example``, the
example's own class in ``benchmarks/torch_vae.py``). Models are untrained (their initial
weights): the mapping of names and layouts is what is tested, not training.
"""

import functools
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npvae import cli
from npvae.checkpoint import load_checkpoint, save_checkpoint
from npvae.cvae import model_from_config, set_condition
from npvae.data import load_mnist, to_unit_interval
from npvae.errors import CheckpointError, ConfigError
from npvae.evaluate import iw_bounds
from npvae.export import (MAX_HEADER_BYTES, MAX_TENSORS, export_run, import_run, load_into,
                          read_export)
from npvae.hvae import is_hierarchical
from npvae.presets import PRESETS
from tests.torch_or_skip import import_torch, load_benchmark

try:
    import safetensors  # noqa: F401  (the export extra: writing needs it)
except ImportError as err:
    if os.environ.get("NPVAE_REQUIRE_TORCH") == "1":
        raise ImportError("NPVAE_REQUIRE_TORCH=1 but safetensors cannot be imported; install "
                          "the extra: python -m pip install -e \".[torch]\"") from err
    pytest.skip(f"safetensors is not available ({err})", allow_module_level=True)

N, K = 12, 6  # test digits, importance samples
# npvae and PyTorch differ by summation order only. float64: within 1e-10. float32: within
# 2^-19 of the largest magnitude compared, 16 times float32's epsilon (2^-23): rounding of sums
# of up to 3,136 products (measured, every preset: at most 6 epsilons, burda-iwae's logvar; the
# two-layer presets at most 5, mu_1; a wrong layout is off by far more).
TOL = {"float64": 1e-10, "float32": 2.0**-19}
# The presets with a torch.nn module: all but the VQ-VAE's (npvae export refuses a VQ run,
# tests/test_vqvae_train.py).
EXPORTED = [name for name, p in PRESETS.items() if p["model"].get("architecture") != "vqvae"]


def preset_config(name, dtype="float32"):
    preset = PRESETS[name]
    labels = {"n_classes": 10} if preset["training"].get("conditional") else {}
    return {"x_dim": 784, **preset["model"], **labels, "dtype": dtype}


@pytest.fixture(scope="module")
def digits():
    data = load_mnist()
    return data.x_test[:N], np.asarray(data.y_test[:N], dtype=np.int64)


@pytest.fixture(scope="module")
def torch():
    return import_torch()


@pytest.fixture(scope="module")
def torch_models(torch):
    return load_benchmark("torch_models")


def export_model(model, folder, name="model"):
    """``model`` saved as a checkpoint in ``folder``, then exported: the .safetensors path."""
    save_checkpoint(folder / f"{name}.npz", model, None, {})
    export_run(folder / f"{name}.npz", folder / f"{name}.safetensors")
    return folder / f"{name}.safetensors"


def close(found, expected, dtype):
    """Whether two arrays agree to ``TOL[dtype]`` of the larger's largest magnitude (float64:
    absolutely)."""
    found, expected = np.asarray(found, np.float64), np.asarray(expected, np.float64)
    scale = 1.0 if dtype == "float64" else max(1.0, np.abs(expected).max())
    return np.abs(found - expected).max() <= TOL[dtype] * scale


def npvae_numbers(model, x):
    """npvae's encoder means and log-variances (every stochastic layer's, through the means)
    and the decoder's output (logits or means) at the top layer's mu: name -> array."""
    if is_hierarchical(model.config):
        layers = model.encode_layers(x)
        decoder_out = model.decoder_out(layers[-1][0])
    else:
        layers = [model.encode(x)]
        decoder_out = model.decoder.forward(layers[0][0])
    return {**{f"{name}_{l + 1}": a for l, pair in enumerate(layers)
               for name, a in zip(("mu", "logvar"), pair)}, "decoder output": decoder_out}


def torch_numbers(module, x, y):
    """The same numbers from the PyTorch module, same names."""
    layers = module.encode_layers(x) if hasattr(module, "encode_layers") else [module.encode(x, y)]
    return {**{f"{name}_{l + 1}": a for l, pair in enumerate(layers)
               for name, a in zip(("mu", "logvar"), pair)},
            "decoder output": module.decoder_out(layers[-1][0], y)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("preset", EXPORTED)
def test_every_preset_loads_strictly_into_its_torch_module_with_the_same_numbers(
        preset, dtype, tmp_path, digits, torch, torch_models):
    """Every stochastic layer's mu and logvar, the decoder's output and L_k with the same
    noise (for two stochastic layers, noise for both: (k, B, Z_1 + Z_2))."""
    from safetensors.torch import load_file

    model = model_from_config(**preset_config(preset, dtype), seed=3)
    module = torch_models.module_for(model.config)
    module.load_state_dict(load_file(str(export_model(model, tmp_path))), strict=True)
    x = to_unit_interval(digits[0], dtype)
    y = digits[1] if model.n_classes else None
    set_condition(model, y)
    expected = npvae_numbers(model, x)
    expected["L_k"] = iw_bounds(model, x, K, np.random.default_rng(5), batch_size=N, chunk=K, y=y)
    width = getattr(model, "noise_dim", model.latent)
    eps = np.random.default_rng(5).standard_normal((K, N, width), dtype=dtype)
    yt = None if y is None else torch.from_numpy(y)
    with torch.no_grad():
        found = torch_numbers(module, torch.from_numpy(x), yt)
        found["L_k"] = torch_models.iw_bounds(module, torch.from_numpy(x), torch.from_numpy(eps),
                                              model.config, yt)
    assert found.keys() == expected.keys()
    assert len(found) == 2 * len(getattr(model, "latents", [1])) + 2
    for name, value in found.items():
        assert value.dtype == getattr(torch, dtype), name
        assert close(value.numpy(), expected[name], dtype), (
            f"{name}: largest difference {np.abs(value.numpy() - expected[name]).max():.3g}")


def test_the_published_example_class_loads_a_pytorch_example_export(tmp_path, digits, torch):
    """``VAE().load_state_dict(load_file(path), strict=True)`` on the example's class; a file
    with mu and logvar swapped (fc21 <-> fc22) would be caught by the same comparison."""
    from safetensors.torch import load_file

    model = model_from_config(**preset_config("pytorch-example"), seed=4)
    state = load_file(str(export_model(model, tmp_path)))
    published = load_benchmark("torch_vae").model_class()()
    published.load_state_dict(state, strict=True)
    x = to_unit_interval(digits[0])
    mu, logvar = model.encode(x)
    with torch.no_grad():
        mu_t, logvar_t = published.encode(torch.from_numpy(x))
        probs_t = published.decode(mu_t)
    assert close(mu_t.numpy(), mu, "float32") and close(logvar_t.numpy(), logvar, "float32")
    assert close(probs_t.numpy(), model.decode(mu), "float32")
    swapped = {**state, "fc21.weight": state["fc22.weight"], "fc22.weight": state["fc21.weight"],
               "fc21.bias": state["fc22.bias"], "fc22.bias": state["fc21.bias"]}
    published.load_state_dict(swapped, strict=True)
    with torch.no_grad():
        assert not close(published.encode(torch.from_numpy(x))[0].numpy(), mu, "float32")


@pytest.mark.parametrize("preset, name, key", [("conv", "ConvVAE", "decoder.3.weight"),
                                               ("burda2-iwae", "HVAE", "p_h1.4.weight")])
def test_torch_models_load_builds_the_module_a_file_names(preset, name, key, tmp_path, torch,
                                                          torch_models):
    from safetensors.torch import load_file

    model = model_from_config(**preset_config(preset, "float64"), seed=2)
    path = export_model(model, tmp_path)
    module, config = torch_models.load(path)
    assert config == json.loads(json.dumps(model.config)) and type(module).__name__ == name
    state, expected = module.state_dict(), load_file(str(path))
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state)
    assert state[key].dtype == torch.float64


MODULES = {"pytorch-example": "examples/vae/main.py VAE, or benchmarks/torch_models.py's "
                              "ExampleVAE", "conv": "ConvVAE", "cvae": "MLPVAE",
           "burda2-vae": "benchmarks/torch_models.py's HVAE", "burda2-iwae": "HVAE"}


@pytest.mark.parametrize("preset", EXPORTED)
def test_export_then_import_is_the_identity_bit_for_bit(preset, tmp_path, capsys):
    """Through the commands, for every preset (iwae's in float64); export names the module
    that loads the file (the one the test above loads it into)."""
    model = model_from_config(**preset_config(preset, "float64" if preset == "iwae" else "float32"),
                        seed=6)
    save_checkpoint(tmp_path / "model.npz", model, None, {})
    path, run = tmp_path / "model.safetensors", tmp_path / "imported"
    assert cli.main(["export", str(tmp_path / "model.npz"), str(path)]) == 0
    said = capsys.readouterr().out
    assert f"into {load_into(model.config)})" in said and MODULES.get(preset, "MLPVAE") in said
    assert cli.main(["import", str(path), "--run-dir", str(run)]) == 0
    checkpoint = load_checkpoint(run / "checkpoint.npz")
    assert checkpoint.model_config == load_checkpoint(tmp_path / "model.npz").model_config
    for name, p in model.params.items():
        assert checkpoint.params[name].dtype == p.dtype
        assert checkpoint.params[name].tobytes() == p.tobytes(), name
    export_run(run, tmp_path / "again.safetensors")  # the same header and data
    assert split((tmp_path / "again.safetensors").read_bytes()) == split(path.read_bytes())


def test_a_pytorch_example_state_dict_without_metadata_imports(tmp_path, digits, torch):
    """A model trained in PyTorch (``save_file(model.state_dict(), path)``, no npvae metadata)
    becomes a run whose encoder and decoder give PyTorch's numbers."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = load_benchmark("torch_vae").model_class()()
    save_file(net.state_dict(), str(tmp_path / "trained.safetensors"))
    run = import_run(tmp_path / "trained.safetensors", tmp_path / "run")
    model = model_from_config(**load_checkpoint(run / "checkpoint.npz").model_config)
    assert model.config["hidden"] == [400] and model.latent == 20
    _, params, train = read_export(tmp_path / "trained.safetensors")
    assert train is None
    for name, p in model.params.items():
        p[...] = params[name]
    x = to_unit_interval(digits[0])
    with torch.no_grad():
        mu_t, logvar_t = net.encode(torch.from_numpy(x))
    assert close(model.encode(x)[0], mu_t.numpy(), "float32")
    assert close(model.encode(x)[1], logvar_t.numpy(), "float32")


# ---------------------------------------------------------------- the commands on a trained run


def test_the_commands_export_import_and_the_tools_read_the_imported_run(tmp_path, tiny, capsys):
    run = tmp_path / "trained"
    assert cli.main(["train", "--data-dir", str(tiny), "--hidden", "8", "--latent", "2",
                     "--epochs", "1", "--batch-size", "16", "--binarize", "dynamic",
                     "--run-dir", str(run), "--no-progress", "--no-figures"]) == 0
    file = tmp_path / "trained.safetensors"
    assert cli.main(["export", str(run), str(file)]) == 0
    assert cli.main(["export", str(run), str(file)]) == 2           # exists: refused
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["export", str(run), str(file), "--overwrite"]) == 0
    assert cli.main(["import", str(file), "--run-dir", str(tmp_path / "back")]) == 0
    back = tmp_path / "back"
    _, _, train = read_export(file)
    assert train["binarize"] == "dynamic" and train["data_dir"] is None
    assert load_checkpoint(back / "checkpoint.npz").state["train_config"] == json.loads(
        json.dumps(train))
    data = ["--data-dir", str(tiny)]
    assert cli.main(["evaluate", str(back), *data, "--iw-samples", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test ELBO" in out and "importance-weighted bound, k=5" in out
    assert cli.main(["sample", str(back), "--n", "4"]) == 0
    assert cli.main(["plot", str(back), *data]) == 0
    assert (back / "reconstructions.png").is_file()
    assert cli.main(["explore", str(back), *data, "--n", "16", "--out",
                     str(tmp_path / "explore.png")]) == 0
    # the same file into the same folder again: an existing run is not overwritten
    before = {p.name: p.read_bytes() for p in back.iterdir() if p.is_file()}
    before_params = load_checkpoint(back / "checkpoint.npz").params.keys()
    capsys.readouterr()
    assert cli.main(["import", str(file), "--run-dir", str(back)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--resume" not in err
    assert {p.name: p.read_bytes() for p in back.iterdir() if p.is_file()} == before
    # --overwrite replaces it, but only with a file that reads whole
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(file.read_bytes()[:-4])
    assert cli.main(["import", str(bad), "--run-dir", str(back), "--overwrite"]) == 2
    assert {p.name: p.read_bytes() for p in back.iterdir() if p.is_file()} == before
    assert cli.main(["import", str(file), "--run-dir", str(back), "--overwrite"]) == 0
    assert load_checkpoint(back / "checkpoint.npz").params.keys() == before_params


def test_import_takes_a_new_folder_under_runs_by_default(tmp_path, monkeypatch):
    path = export_model(model_from_config(x_dim=16, hidden=(8,), latent=2), tmp_path, "tiny")
    monkeypatch.chdir(tmp_path)
    assert import_run(path) == Path("runs", "tiny")
    assert import_run(path) == Path("runs", "tiny-2")  # taken: the next free name
    assert (Path("runs", "tiny-2") / "checkpoint.npz").is_file()


def test_export_refuses_a_missing_run_in_one_line(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "nothing"), str(tmp_path / "x.safetensors")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "x.safetensors").exists()


# ---------------------------------------------------------------- hostile files


def split(raw):
    """A safetensors file's (header dict, data bytes)."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def join(header, data, length=None):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def edit(change):
    """A hostile file made by ``change(header, data)`` -> bytes, from a valid export."""
    def make(raw):
        header, data = split(raw)
        return change(header, data)
    return make


def with_meta(**changes):
    def change(header, data):
        header["__metadata__"].update(changes)
        return join(header, data)
    return edit(change)


def with_model(**changes):
    def change(header, data):
        model = json.loads(header["__metadata__"]["npvae.model"])
        header["__metadata__"]["npvae.model"] = json.dumps({**model, **changes})
        return join(header, data)
    return edit(change)


def with_tensor(name, **changes):
    def change(header, data):
        header[name].update(changes)
        return join(header, data)
    return edit(change)


def renamed(header, data):
    header["fc5.bias"] = header.pop("fc4.bias")
    return join(header, data)


def extra(header, data):
    header["extra"] = {"dtype": "F32", "shape": [0], "data_offsets": [len(data), len(data)]}
    return join(header, data)


def overlapping(header, data):
    header["fc22.weight"]["data_offsets"] = header["fc21.weight"]["data_offsets"]
    return join(header, data)


def nan(header, data):
    begin = header["fc1.weight"]["data_offsets"][0]
    return join(header, data[:begin] + struct.pack("<f", math.nan) + data[begin + 4:])


def without_metadata(header, data):
    del header["__metadata__"]
    return join(header, data)


HOSTILE = {
    "empty": (lambda raw: b"", "truncated"),
    "shorter than the length": (lambda raw: raw[:5], "truncated"),
    "truncated data": (lambda raw: raw[:-10], "truncated, or the header lies"),
    "a longer file": (lambda raw: raw + b"\0" * 8, "truncated, or the header lies"),
    "a huge header length": (edit(lambda h, d: join(h, d, 2**60)), f"more than {MAX_HEADER_BYTES}"),
    "a length past the end": (edit(lambda h, d: join(h, d, len(json.dumps(h)) + len(d) + 1)),
                              "truncated, or the length lies"),
    "a header that is not JSON": (lambda raw: struct.pack("<Q", 4) + b"{{{{", "not valid JSON"),
    "a header that is a list": (lambda raw: struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    "a key twice": (lambda raw: struct.pack("<Q", 15) + b'{"a": 1, "a":2}', "appears twice"),
    "non-string metadata": (with_meta(**{"npvae.version": 1}), "strings to strings"),
    "a huge shape": (with_tensor("fc1.weight", shape=[10**12, 10**12]), "data_offsets hold"),
    "a huge shape and range": (with_tensor("fc1.weight", shape=[2**40],
                                           data_offsets=[0, 2**42]), "overlaps"),
    "a negative shape": (with_tensor("fc1.bias", shape=[-8]), "bad shape"),
    "bad offsets": (with_tensor("fc1.bias", data_offsets=[8, 4]), "bad data_offsets"),
    "overlapping tensors": (edit(overlapping), "overlaps the tensor before it"),
    "an unknown dtype": (with_tensor("fc1.bias", dtype="F128"), "unknown dtype"),
    "a wrong dtype": (with_tensor("fc1.bias", dtype="I32"), "the model config needs F32"),
    "a missing tensor": (edit(renamed), "missing ['fc4.bias'], unexpected ['fc5.bias']"),
    "an extra tensor": (edit(extra), "unexpected ['extra']"),
    "NaN weights": (edit(nan), "NaN"),
    "another format": (with_meta(**{"npvae.format": "other"}), "npvae.format"),
    "a newer version": (with_meta(**{"npvae.version": "99"}), "npvae.version"),
    "a config that is not JSON": (with_meta(**{"npvae.model": "{"}), "not valid JSON"),
    "a bad latent": (with_model(latent=-1), "model config in its metadata is invalid"),
    "a huge model": (with_model(hidden=[10**9]), "model config in its metadata is invalid"),
    "float16": (with_model(dtype="float16"), "not float32 or float64"),
    "an extra config field": (with_model(colour="red"), "model config in its metadata is invalid"),
    "a config without decoder_hidden": (with_model(decoder_hidden=None, latent=3),
                                        "the model config needs"),
    "a deeply nested config": (with_meta(**{"npvae.model": "[" * 100 + "]" * 100}),
                               "nests more than"),
    "too many tensors": (lambda raw: join({f"t{i}": {"dtype": "F32", "shape": [0],
                                                     "data_offsets": [0, 0]}
                                           for i in range(MAX_TENSORS + 1)}, b""),
                         f"more than {MAX_TENSORS}"),
    "a wrong layout": (with_meta(**{"npvae.layout": "torch.nn"}), "npvae.layout"),
    "a bad training config": (with_meta(**{"npvae.train": json.dumps({"batch_size": 0})}),
                              "npvae.train"),
    "shapes of another model": (with_model(latent=3), "the model config needs"),
    "no config, other tensors": (edit(lambda h, d: renamed({k: v for k, v in h.items()
                                                            if k != "__metadata__"}, d)),
                                 "no npvae model config"),
}


@pytest.fixture(scope="module")
def valid_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("valid")
    return export_model(model_from_config(x_dim=16, hidden=(8,), latent=2, seed=0), folder).read_bytes()


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_file_is_refused_in_one_line_and_creates_nothing(case, valid_export, tmp_path,
                                                                    capsys):
    make, message = HOSTILE[case]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(make(valid_export))
    with pytest.raises(CheckpointError) as caught:
        import_run(bad, tmp_path / "run")
    text = str(caught.value)
    assert message in text and str(bad) in text and "\n" not in text, text
    assert not (tmp_path / "run").exists()
    assert cli.main(["import", str(bad), "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"npvae: error: {text}\n"
    assert not (tmp_path / "run").exists()


def test_the_valid_file_the_hostile_ones_come_from_imports(valid_export, tmp_path):
    """The control: each hostile file above differs from this one by its one change."""
    (tmp_path / "good.safetensors").write_bytes(valid_export)
    assert import_run(tmp_path / "good.safetensors", tmp_path / "run").is_dir()
    header, data = split(valid_export)
    (tmp_path / "same.safetensors").write_bytes(join(header, data))  # the helpers change nothing
    assert import_run(tmp_path / "same.safetensors", tmp_path / "run2").is_dir()


def test_a_pytorch_example_file_without_metadata_is_read_as_the_example(valid_export, tmp_path):
    bad = tmp_path / "plain.safetensors"
    bad.write_bytes(edit(without_metadata)(valid_export))
    config, _, train = read_export(bad)
    assert (config["x_dim"], config["hidden"], config["latent"]) == (16, [8], 2) and train is None


def test_import_refuses_a_folder_a_fifo_and_a_missing_file_in_one_line(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo")
    for target in (tmp_path, tmp_path / "fifo", tmp_path / "missing.safetensors"):
        assert cli.main(["import", str(target), "--run-dir", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(target) in err, err
    assert not (tmp_path / "run").exists()


def test_export_without_safetensors_names_the_extra(tmp_path, monkeypatch):
    import sys

    save_checkpoint(tmp_path / "m.npz", model_from_config(x_dim=16, hidden=(8,), latent=2), None, {})
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ConfigError, match=r"npvae\[export\]"):
        export_run(tmp_path / "m.npz", tmp_path / "m.safetensors")


@settings(max_examples=200)
@given(data=st.data())
def test_any_damage_to_a_file_is_refused_in_one_line_or_reads_whole(data, tmp_path_factory):
    """Random bytes overwritten (mostly in the header) or the file cut short: import reads the
    file or raises CheckpointError in one line, never another exception."""
    raw = bytearray(valid_tiny())
    n = 8 + struct.unpack("<Q", raw[:8])[0]
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, n - 1) | st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    raw = raw[:data.draw(st.integers(0, len(raw)))]
    bad = tmp_path_factory.mktemp("fuzz") / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    try:
        read_export(bad)
    except CheckpointError as err:
        assert str(err) and "\n" not in str(err)


@functools.cache
def valid_tiny():
    """The bytes of a tiny model's export (hypothesis runs the test many times; made once)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return export_model(model_from_config(x_dim=16, hidden=(8,), latent=2, seed=0),
                            Path(folder)).read_bytes()
