"""Hostile and faulty files: refused with one line, exit code 2, bounded memory, nothing changed.

Each case builds a file meant to hurt (a deflate bomb, a header declaring 10^12
floats, a config asking for a huge model, JSON nested 100,000 deep, a FIFO, a
README) and runs the real command line on it in a child process, which
reports its exit code, its stderr and its peak memory above a baseline taken
after importing npvae (``ru_maxrss``). A case passes when the command ends
with exit code 2 and one line ``npvae: error: ...`` naming the problem, stays
under ``PEAK_LIMIT_MB`` above the baseline, and leaves every file that was
there before unchanged.

Run as a script, it prints every case's exit code, peak memory and error
line, for this checkout or another one (the numbers in issue 14):

    python -m tests.test_hostile                       # this checkout
    python -m tests.test_hostile --npvae /tmp/old      # another checkout's npvae
"""

import argparse
import gzip
import io
import json
import os
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from npvae import VAE, atomic
from npvae.checkpoint import load_checkpoint, save_checkpoint
from npvae.data import load_mnist, read_idx
from npvae.errors import ConfigError, DataError
from npvae.optim import Adam
from npvae.vae import parameter_shapes
from tests.helpers import TINY_FLAGS, idx_bytes, snapshot, write_tiny_mnist
from tests.timeouts import safety_net

REPO = Path(__file__).resolve().parents[1]
PEAK_LIMIT_MB = 300
BOMB_BYTES = 512 * 2**20      # what each bomb inflates to: more than PEAK_LIMIT_MB
CHILD_TIMEOUT = safety_net(120)
TINY_TRAIN = ["--epochs", "1", *TINY_FLAGS]

# The child: import npvae, note the peak memory, run the command, report.
CHILD = """
import contextlib, io, json, resource, sys
import numpy
import npvae.checkpoint, npvae.cli, npvae.data, npvae.train
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
err = io.StringIO()
with contextlib.redirect_stderr(err):
    rc = npvae.cli.main(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rc": rc, "stderr": err.getvalue(), "peak_mb": (peak - base) / 1024,
                  "base_mb": base / 1024}))
"""


def run_child(argv, cwd, pythonpath=REPO, baseline=False):
    """``(rc, stderr, peak MB above baseline)`` of ``npvae ARGV`` in a fresh process (and the
    baseline's MB with ``baseline``); a traceback (no report) is rc None with the child's
    whole stderr."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, *map(str, argv)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    lines = out.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        return (None, out.stderr, None) + ((None,) if baseline else ())
    return (report["rc"], report["stderr"], report["peak_mb"]) + \
        ((report["base_mb"],) if baseline else ())


# ---------------------------------------------------------------- building hostile files


def small_checkpoint(path):
    """A real checkpoint of a 9-6-3 VAE and its Adam: the raw material of the attacks."""
    model = VAE(9, (6,), 3, seed=0)
    save_checkpoint(path, model, Adam({"theta": model.theta}, {"theta": model.dtheta}),
                    {"epoch": 1})
    return path


def npy_header(shape, dtype):
    """The bytes of a ``.npy`` header (format 1.0) declaring ``shape`` and ``dtype``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                 "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def rebuild(source, target, replace=None, add=None, bomb=None):
    """Copy the members of the npz ``source`` to ``target``, with raw bytes ``replace``d,
    ``add``ed, and ``bomb = (name, header)``: ``header`` then BOMB_BYTES zeros, deflated."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            if bomb and info.filename == bomb[0]:
                continue
            zout.writestr(info.filename, replace.get(info.filename, zin.read(info.filename)))
        for name, data in add.items():
            zout.writestr(name, data)
        if bomb:
            info = zipfile.ZipInfo(bomb[0])
            info.compress_type = zipfile.ZIP_DEFLATED
            with zout.open(info, "w", force_zip64=True) as f:
                f.write(bomb[1])
                zeros = bytes(1 << 24)
                for _ in range(BOMB_BYTES // len(zeros)):
                    f.write(zeros)
    return target


def meta_of(path):
    with zipfile.ZipFile(path) as z, z.open("meta.npy") as f:
        return json.loads(np.lib.format.read_array(f).item())


def with_meta(source, target, change):
    """``source`` with its meta JSON edited by ``change(meta)`` (or replaced by a string)."""
    meta = meta_of(source)
    text = change(meta)
    buffer = io.BytesIO()
    np.save(buffer, np.array(json.dumps(meta) if text is None else text))
    return rebuild(source, target, replace={"meta.npy": buffer.getvalue()})


def with_array(source, target, name, array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return rebuild(source, target, replace={f"{name}.npy": buffer.getvalue()})


def gzip_bomb(header):
    """``header`` then BOMB_BYTES zeros, gzipped (about 0.5 MB)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as f:
        f.write(header)
        zeros = bytes(1 << 24)
        for _ in range(BOMB_BYTES // len(zeros)):
            f.write(zeros)
    return buffer.getvalue()


def idx_header(dims, code=0x08):
    return struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def build_cases(folder):
    """``{name: (argv, expected words in the error)}``, every file written under ``folder``."""
    good = small_checkpoint(folder / "good.npz")
    cases = {}

    def checkpoint(name, path, *words):
        cases[name] = (["evaluate", path], words)

    checkpoint("deflate bomb as an unexpected entry",
               rebuild(good, folder / "bomb-entry.npz",
                       bomb=("extra.npy", npy_header((BOMB_BYTES,), np.uint8))),
               "unexpected entries", "extra")
    checkpoint("deflate bomb as a parameter of the right name",
               rebuild(good, folder / "bomb-param.npz",
                       bomb=("param/encoder.0.W.npy", npy_header((BOMB_BYTES // 4,), "<f4"))),
               "encoder.0.W", "needs float32[9, 6]")
    checkpoint("deflate bomb as the metadata",
               rebuild(good, folder / "bomb-meta.npz",
                       bomb=("meta.npy", npy_header((), f"<U{BOMB_BYTES // 4}"))),
               "'meta' is", "bytes, more than")
    checkpoint("member declaring 10^12 floats",
               rebuild(good, folder / "huge-shape.npz",
                       replace={"param/encoder.0.W.npy": npy_header((10**6, 10**6), "<f4")
                                + bytes(216)}),
               "encoder.0.W", "implies")
    checkpoint("config hidden 10^5 at x_dim 784",
               with_meta(good, folder / "hidden-1e5.npz", lambda m: m["model"].update(
                   x_dim=784, hidden=[10**5], decoder_hidden=[10**5])),
               "more than the limit", "NPVAE_MAX_PARAMETERS")
    checkpoint("config hidden 10^6 at x_dim 9 (under the limit; arrays disagree)",
               with_meta(good, folder / "hidden-1e6.npz", lambda m: m["model"].update(
                   hidden=[10**6], decoder_hidden=[10**6])),
               "parameter 'encoder.0.W' is float32[9, 6]", "needs float32[9, 1000000]")
    checkpoint("config hidden 10^7",
               with_meta(good, folder / "hidden-1e7.npz", lambda m: m["model"].update(
                   hidden=[10**7], decoder_hidden=[10**7])),
               "more than the limit")
    checkpoint("config latent 10^9",
               with_meta(good, folder / "latent-1e9.npz", lambda m: m["model"].update(
                   latent=10**9)),
               "more than the limit")
    checkpoint("metadata nested 100,000 deep",
               with_meta(good, folder / "deep.npz", lambda m: "[" * 100_000 + "]" * 100_000),
               "'meta' nests")
    checkpoint("Adam's v_sum negative",
               with_array(good, folder / "negative-v.npz", "optim/v_sum.theta",
                          -np.ones(189, np.float32)),
               "v_sum.theta", "negative")
    checkpoint("Adam's m_sum NaN",
               with_array(good, folder / "nan-m.npz", "optim/m_sum.theta",
                          np.full(189, np.nan, np.float32)),
               "m_sum.theta", "NaN")
    (folder / "README.md").write_bytes((REPO / "README.md").read_bytes())
    checkpoint("a README as a checkpoint", folder / "README.md", "not an npvae checkpoint")
    os.mkfifo(folder / "fifo.npz")
    checkpoint("a FIFO as a checkpoint", folder / "fifo.npz", "not a regular file")

    def data(name, replace, *words):
        cases[name] = (["train", "--data-dir", write_tiny_mnist(folder / name.replace(" ", "-"),
                                                                replace=replace),
                        "--run-dir", folder / "never-made", *TINY_TRAIN], words)

    data("gzip bomb as labels", {"y_train": gzip_bomb(idx_header([48]))},
         "trailing bytes after the data of dims (48,)")
    data("IDX dims 2^31 x 2^31", {"x_train": idx_header([2**31, 2**31]) + bytes(16)},
         "truncated", "4611686018427387904")
    data("IDX dims 2^31 x 2^31 gzipped", {"x_train": gzip.compress(idx_header([2**31, 2**31]))},
         "more than its compressed data can hold")
    data("IDX dims four times 65536", {"x_train": idx_header([65536] * 4) + bytes(16)},
         "truncated", "18446744073709551616")
    data("IDX with zero images", {"x_train": idx_bytes(np.zeros((0, 4, 4), np.uint8)),
                                  "y_train": idx_bytes(np.zeros(0, np.uint8))},
         "no images")
    cases["--hidden 10000000"] = (["train", "--data-dir", write_tiny_mnist(folder / "ok-data"),
                                   "--run-dir", folder / "never-made", *TINY_TRAIN,
                                   "--hidden", "10000000"], ("more than the limit",))
    cases["--latent 10^30"] = (["gradcheck", "--latent", str(10**30), "--x-dim", "784"],
                               ("more than the limit",))
    checkpoint("config n_classes 10^12 (a conditional model's label rows)",
               with_meta(good, folder / "classes-1e12.npz", lambda m: m["model"].update(
                   n_classes=10**12)),
               "more than the limit")
    checkpoint("config n_classes 'ten'",
               with_meta(good, folder / "classes-ten.npz", lambda m: m["model"].update(
                   n_classes="ten")),
               "model config in the checkpoint is invalid", "n_classes")
    return cases


# ---------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return folder, build_cases(folder)


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", CASES)


CASES = ["deflate bomb as an unexpected entry", "deflate bomb as a parameter of the right name",
         "deflate bomb as the metadata", "member declaring 10^12 floats",
         "config hidden 10^5 at x_dim 784",
         "config hidden 10^6 at x_dim 9 (under the limit; arrays disagree)",
         "config hidden 10^7", "config latent 10^9",
         "config n_classes 10^12 (a conditional model's label rows)", "config n_classes 'ten'",
         "metadata nested 100,000 deep",
         "Adam's v_sum negative", "Adam's m_sum NaN", "a README as a checkpoint",
         "a FIFO as a checkpoint", "gzip bomb as labels", "IDX dims 2^31 x 2^31",
         "IDX dims 2^31 x 2^31 gzipped", "IDX dims four times 65536", "IDX with zero images",
         "--hidden 10000000", "--latent 10^30"]


def test_every_case_is_listed(cases):
    assert sorted(cases[1]) == sorted(CASES)


def test_a_hostile_input_is_one_line_exit_2_bounded_memory_and_changes_nothing(cases, case):
    folder, table = cases
    argv, words = table[case]
    before = snapshot(folder)
    rc, err, peak_mb = run_child(argv, cwd=folder)
    assert rc == 2, f"{case}: no clean exit 2:\n{err}"
    assert err.count("\n") == 1 and err.startswith("npvae: error: "), err
    for word in words:
        assert word in err, (word, err)
    assert peak_mb < PEAK_LIMIT_MB, f"{case}: {peak_mb:.0f} MB above the baseline"
    assert snapshot(folder) == before


def test_the_good_checkpoint_the_attacks_start_from_loads(cases):
    folder, _ = cases
    rc, err, _ = run_child(["gradcheck", folder / "good.npz"], cwd=folder)
    assert rc == 0, err


# ---------------------------------------------------------------- the pieces behind it


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_npvae_writes_get_the_permissions_the_umask_gives(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert atomic.umask() == mask
        atomic.atomic_write_text(tmp_path / "a.txt", "text")
        small_checkpoint(tmp_path / "checkpoint.npz")
    finally:
        os.umask(old)
    for name in ("a.txt", "checkpoint.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask


def test_a_compressed_checkpoint_still_loads(tmp_path):
    """Deflated members are read too (np.savez_compressed), within the same bounds."""
    path = small_checkpoint(tmp_path / "checkpoint.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    np.savez_compressed(path, **arrays)
    loaded = load_checkpoint(path)
    np.testing.assert_array_equal(loaded.params["encoder.0.W"], arrays["param/encoder.0.W"])


def test_the_parameter_limit_has_an_override(monkeypatch):
    with pytest.raises(ConfigError, match="more than the limit of 100,000,000"):
        VAE(784, (10**5,), 20)
    monkeypatch.setenv("NPVAE_MAX_PARAMETERS", "1000")
    with pytest.raises(ConfigError, match="13,396 parameters, more than the limit of 1,000"):
        VAE(784, (8,), 2)
    VAE(9, (6,), 3)  # 189 parameters
    monkeypatch.setenv("NPVAE_MAX_PARAMETERS", "lots")
    with pytest.raises(ConfigError, match="NPVAE_MAX_PARAMETERS='lots' must be a positive"):
        VAE(9, (6,), 3)


def test_parameter_shapes_are_the_models(tmp_path):
    model = VAE(9, (6, 5), 3, decoder_hidden=(4,))
    assert parameter_shapes(model.config) == {k: v.shape for k, v in model.params.items()}


@pytest.mark.parametrize("members", [1, 3])
def test_gzip_in_several_members_and_its_limits(tmp_path, members):
    array = np.arange(60, dtype=np.uint8).reshape(5, 3, 4)
    raw = idx_bytes(array)
    cuts = np.linspace(0, len(raw), members + 1).astype(int)
    (tmp_path / "a").write_bytes(b"".join(gzip.compress(raw[a:b]) for a, b in zip(cuts, cuts[1:])))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)
    (tmp_path / "b").write_bytes(gzip.compress(raw + b"x"))
    with pytest.raises(DataError, match="trailing bytes after the data of dims .5, 3, 4."):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(gzip.compress(raw)[:-12])
    with pytest.raises(DataError, match="corrupt gzip data"):
        read_idx(tmp_path / "c")
    (tmp_path / "d").write_bytes(gzip.compress(raw) + b"garbage")
    with pytest.raises(DataError, match="corrupt gzip data"):
        read_idx(tmp_path / "d")


def test_a_binary_checksum_file_is_a_data_error(tmp_path):
    write_tiny_mnist(tmp_path)
    (tmp_path / "checksums.sha256").write_bytes(bytes(range(256)))
    with pytest.raises(DataError, match="checksums.sha256: cannot read it as a text file"):
        load_mnist(tmp_path)


# ---------------------------------------------------------------- the report


def report(pythonpath):
    """Every case against the npvae at ``pythonpath``: exit code, peak MB, the error's end."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, (argv, _) in build_cases(Path(tmp)).items():
            try:
                rc, err, peak, base = run_child(argv, cwd=tmp, pythonpath=pythonpath,
                                                baseline=True)
            except subprocess.TimeoutExpired:
                rc, err, peak, base = "hang", f"no answer in {CHILD_TIMEOUT:.0f} s", None, None
            last = err.strip().splitlines()[-1] if err.strip() else ""
            shown = "traceback: " + last if rc is None else last
            memory = "-" if peak is None else f"{peak:5.0f} MB over {base:.0f} MB"
            print(f"{name:66} rc={rc!s:4} peak={memory:18}  {shown[:150]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--npvae", default=str(REPO), help="checkout whose npvae to run")
    report(parser.parse_args().npvae)
