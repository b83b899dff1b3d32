"""Tests for npvae.checkpoint: round trips, atomic writes, and every refusal."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

from npvae import VAE, atomic, checkpoint
from npvae.checkpoint import (load_checkpoint, model_from_checkpoint, restore_model,
                              restore_optimizer, save_checkpoint)
from npvae.errors import CheckpointError
from npvae.optim import SGD, Adam
from tests.timeouts import safety_net

STATE = {"epoch": 3, "step_in_epoch": 0, "metrics": [{"epoch": 1, "train_loss": 1.5}],
         "rng": np.random.default_rng(7).bit_generator.state}


def trained(seed=0, hidden=(6,), latent=3, x_dim=9, steps=3):
    """A small model and its Adam after a few steps (so m, v and t are not trivial)."""
    model = VAE(x_dim, hidden, latent, seed=seed)
    optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta})
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        model.forward(rng.random((5, x_dim), dtype=np.float32), rng=rng)
        model.backward()
        optimizer.step()
    return model, optimizer


@pytest.fixture
def saved(tmp_path):
    model, optimizer = trained()
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, optimizer, STATE)
    return path, model, optimizer


def rewrite(path, change):
    """Rewrite the npz at ``path`` after ``change(arrays)`` edits its dict of arrays."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    np.savez(path, **arrays)


def edit_meta(path, change):
    def edit(arrays):
        meta = json.loads(arrays["meta"].item())
        change(meta)
        arrays["meta"] = np.array(json.dumps(meta))
    rewrite(path, edit)


# ---------------------------------------------------------------- round trip


def test_round_trip_restores_everything(saved):
    path, model, optimizer = saved
    ckpt = load_checkpoint(path)
    assert ckpt.model_config == model.config
    assert ckpt.state == json.loads(json.dumps(STATE))
    for k, p in model.params.items():
        assert np.array_equal(ckpt.params[k], p) and ckpt.params[k].dtype == p.dtype
    assert ckpt.optimizer["name"] == "adam" and ckpt.optimizer["t"] == 3
    assert ckpt.optimizer["hyperparameters"]["lr"] == optimizer.lr
    fresh = VAE(9, (6,), 3, seed=99)
    opt = Adam({"theta": fresh.theta}, {"theta": fresh.dtheta})
    restore_optimizer(ckpt, opt)
    assert opt.t == 3 and np.array_equal(opt.m_sum["theta"], optimizer.m_sum["theta"])
    assert np.array_equal(opt.v_sum["theta"], optimizer.v_sum["theta"])
    rng = np.random.default_rng(0)
    rng.bit_generator.state = ckpt.state["rng"]
    assert rng.random() == np.random.default_rng(7).random()


def test_a_version_1_checkpoint_resumes_with_its_adam_moments_converted(saved):
    """Version 1 stored the paper's m and v; loading rescales them to m_sum and v_sum."""
    path, model, optimizer = saved

    def to_version_1(arrays):
        arrays["optim/m.theta"] = arrays.pop("optim/m_sum.theta") * np.float32(1 - optimizer.beta1)
        arrays["optim/v.theta"] = arrays.pop("optim/v_sum.theta") * np.float32(1 - optimizer.beta2)
        meta = json.loads(arrays["meta"].item())
        meta["version"] = 1
        arrays["meta"] = np.array(json.dumps(meta))
    rewrite(path, to_version_1)
    opt = Adam({"theta": model.theta.copy()}, {"theta": model.dtheta})
    restore_optimizer(load_checkpoint(path), opt)
    for mine, theirs in ((opt.m_sum, optimizer.m_sum), (opt.v_sum, optimizer.v_sum)):
        np.testing.assert_allclose(mine["theta"], theirs["theta"], rtol=1e-6)
        assert not np.array_equal(mine["theta"], theirs["theta"] * np.float32(0.1))
    edit_meta(path, lambda m: m["optimizer"]["hyperparameters"].pop("beta2"))
    with pytest.raises(CheckpointError, match="beta1 and beta2"):
        load_checkpoint(path)


def test_the_file_is_plain_arrays_and_a_unicode_meta(saved):
    path, model, _ = saved
    with zipfile.ZipFile(path) as z:
        names = sorted(n[:-len(".npy")] for n in z.namelist())
    assert names == sorted(["meta", "optim/m_sum.theta", "optim/v_sum.theta"]
                           + [f"param/{k}" for k in model.params])
    with np.load(path, allow_pickle=False) as npz:
        meta = npz["meta"]
    assert meta.shape == () and meta.dtype.kind == "U"
    decoded = json.loads(meta.item())
    assert (decoded["format"], decoded["version"]) == ("npvae-checkpoint", 2)


def test_model_from_checkpoint_gives_the_same_model(saved, tmp_path):
    path, model, _ = saved
    for where in (path, tmp_path):  # the file, or the folder holding checkpoint.npz
        copy, ckpt = model_from_checkpoint(where)
        assert copy.config == model.config and np.array_equal(copy.theta, model.theta)
    x = np.random.default_rng(1).random((4, 9), dtype=np.float32)
    eps = np.zeros((4, 3), np.float32)
    assert model.forward(x, eps=eps).loss == copy.forward(x, eps=eps).loss


def test_sgd_and_no_optimizer_round_trip(tmp_path):
    model, _ = trained()
    sgd = SGD(model.params, model.grads, lr=0.1, momentum=0.9)
    save_checkpoint(tmp_path / "a.npz", model, sgd, {})
    ckpt = load_checkpoint(tmp_path / "a.npz")
    assert ckpt.optimizer["name"] == "sgd" and set(ckpt.optimizer_arrays) == {
        f"velocity.{k}" for k in model.params}
    save_checkpoint(tmp_path / "b.npz", model, None, {})
    assert load_checkpoint(tmp_path / "b.npz").optimizer is None
    with pytest.raises(CheckpointError, match="holds optimizer 'sgd', not 'adam'"):
        restore_optimizer(ckpt, Adam({"theta": model.theta}, {"theta": model.dtheta}))


def test_state_that_is_not_json_is_refused_before_writing(tmp_path):
    model, optimizer = trained()
    with pytest.raises(CheckpointError, match="not JSON-able"):
        save_checkpoint(tmp_path / "c.npz", model, optimizer, {"x": np.float32(1)})
    with pytest.raises(CheckpointError, match="not JSON-able"):
        save_checkpoint(tmp_path / "c.npz", model, optimizer, {"loss": float("nan")})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- atomic writes


def test_a_failure_while_writing_leaves_the_previous_checkpoint(saved, monkeypatch):
    path, model, optimizer = saved
    before = path.read_bytes()

    def savez_that_dies_half_way(f, **arrays):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", savez_that_dies_half_way)
    other, other_opt = trained(seed=5)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, other, other_opt, {"epoch": 4})
    assert path.read_bytes() == before
    assert load_checkpoint(path).state["epoch"] == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.npz"]  # no debris


def test_a_failure_at_the_rename_leaves_the_previous_checkpoint(saved, monkeypatch):
    path, _, _ = saved
    before = path.read_bytes()

    def replace_fails(src, dst):
        raise KeyboardInterrupt  # even Ctrl-C at the worst moment

    monkeypatch.setattr(atomic.os, "replace", replace_fails)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, *trained(seed=5), {"epoch": 4})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.npz"]


def test_the_write_is_fsynced_before_the_rename(saved, monkeypatch):
    path, model, optimizer = saved
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"),
                                                            real_fsync(fd)))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("replace"),
                                                                real_replace(a, b)))
    save_checkpoint(path, model, optimizer, STATE)
    assert events[:2] == ["fsync", "replace"]


# ---------------------------------------------------------------- refusals


def test_truncated_and_garbage_files_are_refused(saved, tmp_path):
    path, _, _ = saved
    data = path.read_bytes()
    for name, content in [("truncated.npz", data[:len(data) // 2]), ("empty.npz", b""),
                          ("garbage.npz", b"not a checkpoint at all" * 10),
                          ("tail.npz", data[:-30])]:
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(CheckpointError, match=name) as info:
            load_checkpoint(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="not an .npz archive"):
        load_checkpoint(tmp_path / "single.npy")


def test_a_corrupted_byte_inside_is_refused(saved):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # inside the first array's data: the zip CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_another_architecture_is_refused_naming_the_fields(saved):
    path, _, _ = saved
    other = VAE(9, (5, 4), 2)
    with pytest.raises(CheckpointError) as info:
        restore_model(load_checkpoint(path), other)
    message = str(info.value)
    assert str(path) in message
    for field in ("hidden", "latent", "decoder_hidden"):
        assert f"{field}:" in message
    assert "x_dim" not in message and "activation" not in message


@pytest.mark.parametrize("change, match", [
    (lambda m: m.update(version=checkpoint.VERSION + 1),
     f"newer npvae .checkpoint version {checkpoint.VERSION + 1}"),
    (lambda m: m.update(version="1"), "bad checkpoint version"),
    (lambda m: m.update(format="something-else"), "format is 'something-else'"),
    (lambda m: m.pop("model"), "lacks a 'model' object"),
    (lambda m: m["model"].update(latent=4), "parameter 'encoder.2.W' is float32\\[6, 6\\]"),
    (lambda m: m["model"].update(activation="swish"), "model config in the checkpoint is invalid"),
    (lambda m: m["optimizer"].update(name="lbfgs"), "unknown optimizer 'lbfgs'"),
    (lambda m: m["optimizer"].update(t=-1), "bad optimizer step count"),
])
def test_bad_meta_is_refused(saved, change, match):
    path, _, _ = saved
    edit_meta(path, change)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


@pytest.mark.parametrize("change, match", [
    (lambda a: a.pop("meta"), "missing the 'meta' entry"),
    (lambda a: a.update(meta=np.array(["{}"])), "must be a 0-d unicode array"),
    (lambda a: a.update(meta=np.array("{not json")), "not valid JSON"),
    (lambda a: a.pop("param/decoder.2.b"), "missing \\['decoder.2.b'\\]"),
    (lambda a: a.update({"param/encoder.0.W": np.zeros((9, 7), np.float32)}),
     "parameter 'encoder.0.W' is float32\\[9, 7\\]"),
    (lambda a: a.update({"param/encoder.0.b": np.zeros(6, np.float64)}),
     "parameter 'encoder.0.b' is float64"),
    (lambda a: a.update({"param/encoder.0.b": np.full(6, np.nan, np.float32)}), "NaN"),
    (lambda a: a.pop("optim/v_sum.theta"), "optimizer state incomplete"),
    (lambda a: a.update({"optim/m_sum.theta": np.zeros(3, np.float32)}), "optimizer array 'm_sum.theta'"),
    (lambda a: a.update(extra=np.zeros(1)), "unexpected entries \\['extra'\\]"),
])
def test_bad_entries_are_refused(saved, change, match):
    path, _, _ = saved
    rewrite(path, change)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


class Payload:
    """Unpickling this would create a file: the proof that nothing was executed."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_an_object_array_is_refused_and_nothing_is_executed(saved, tmp_path):
    path, _, _ = saved
    target = tmp_path / "pwned"
    rewrite(path, lambda a: a.update({"param/encoder.0.W": np.array([Payload(target)],
                                                                   dtype=object)}))
    with pytest.raises(CheckpointError, match="object array .pickled"):
        load_checkpoint(path)
    assert not target.exists()


def test_an_archive_without_npvae_meta_is_refused(saved):
    path, _, _ = saved
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array("{}"))
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="format is None, not 'npvae-checkpoint'"):
        load_checkpoint(path)


KILL_WRITER = """
import sys
import numpy as np
from npvae import VAE
from npvae.checkpoint import save_checkpoint
from npvae.optim import Adam

model = VAE(784, (400,), 20, seed=0)
optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta})
path = sys.argv[1]
save_checkpoint(path, model, optimizer, {"step": 0})
print("first checkpoint written", flush=True)
step = 0
while True:  # rewrite it over and over until killed
    step += 1
    model.theta += 1.0
    save_checkpoint(path, model, optimizer, {"step": step})
"""


def test_sigkill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    """A real process rewriting a 5 MB checkpoint in a loop, killed with
    SIGKILL at several moments: what is on disk always loads whole, and is
    one of the checkpoints that were completely written."""
    # Several kills, at different moments: some land mid-write.
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))
    path = tmp_path / "checkpoint.npz"
    for delay in (0.05, 0.13, 0.21, 0.34):
        proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(path)], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().startswith("first checkpoint written")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=safety_net(30))
        assert proc.returncode == -signal.SIGKILL
        checkpoint = load_checkpoint(path)
        step = checkpoint.state["step"]
        W = checkpoint.params["encoder.0.W"]
        reference = VAE(784, (400,), 20, seed=0).params["encoder.0.W"] + np.float32(step)
        np.testing.assert_allclose(W, reference, rtol=1e-5, atol=1e-3)
        # (A write cut by SIGKILL may leave its .tmp file behind; nothing reads it.)
