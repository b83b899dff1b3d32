"""Faults around a run: nothing lost, one line for every OS failure, every flag checked.

- Data loss: ``--overwrite`` replaces only npvae's own files in an npvae run
  folder; a run folder is claimed by one process at a time; stale temporary
  files are cleaned; metrics.csv never runs ahead of the checkpoint.
- OS failures: a read-only run folder, a full disk (ENOSPC simulated by
  making ``os.fsync`` fail, as a full disk does at the latest there), ``--out``
  pointing at a folder, under a file, or nowhere: exit 2, one line naming the
  path and the cause, and every file as it was.
- Flags: each bad value of each flag is one line and exit 2; a hypothesis fuzz
  of every flag of every subcommand ends in exit 0 or 2, never a traceback.
"""

import errno
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npvae import cli, runs
from npvae.checkpoint import load_checkpoint, save_checkpoint
from npvae.runs import read_metrics
from tests.helpers import copy_run, error_line, snapshot, train_args
from tests.timeouts import safety_net

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = safety_net(120)


@pytest.fixture
def run(trained_run, tmp_path):
    """A finished 2-epoch run in its own folder (a copy of the session's)."""
    return copy_run(trained_run, tmp_path)


# ---------------------------------------------------------------- data loss


def test_overwrite_refuses_a_folder_that_is_not_a_run(tiny, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.png").write_bytes(b"\x89PNG my photo")
    (photos / "metrics.csv").write_text("my own spreadsheet\n")
    before = snapshot(photos)
    assert cli.main(train_args(tiny, photos, "--overwrite")) == 2
    assert f"run_dir='{photos}' is not an npvae run folder" in error_line(capsys)
    assert snapshot(photos) == before


def test_overwrite_replaces_only_npvaes_own_files(run, tiny, capsys):
    (run / "holiday.png").write_bytes(b"\x89PNG my photo")
    (run / "notes.txt").write_text("mine")
    (run / "figures" / "mine.png").parent.mkdir(exist_ok=True)
    (run / "figures" / "mine.png").write_bytes(b"mine")
    (run / "samples_seed3.png").write_bytes(b"npvae's, from npvae sample")
    assert cli.main(train_args(tiny, run, "--overwrite", "--seed", "5")) == 0
    assert (run / "holiday.png").read_bytes() == b"\x89PNG my photo"
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "figures" / "mine.png").read_bytes() == b"mine"
    assert not (run / "samples_seed3.png").exists()
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 5


def test_an_empty_run_dir_is_an_error(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.png").write_bytes(b"mine")
    before = snapshot(tmp_path)
    assert cli.main(train_args(tiny, "", "--overwrite")) == 2
    assert "argument --run-dir: an empty value" in error_line(capsys)
    with pytest.raises(runs.ConfigError, match="run_dir='' must name a folder"):
        runs.claim_run_dir("", "pytorch-example", overwrite=True)
    assert snapshot(tmp_path) == before


HOLD_LOCK = """
import sys, time
from npvae.runs import RunLock
lock = RunLock(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def test_a_run_folder_is_claimed_by_one_process_at_a_time(run, tiny, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline() == "locked\n"
        before = snapshot(run)
        for argv in (["train", "--resume", str(run), "--epochs", "3", "--no-progress"],
                     train_args(tiny, run, "--overwrite")):
            assert cli.main(argv) == 2
            assert f"run folder {run} is in use by process {holder.pid}" in error_line(capsys)
        assert snapshot(run) == before
    finally:
        holder.kill()  # SIGKILL: the OS releases the lock
        holder.wait(timeout=TIMEOUT)
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0


def test_two_runs_started_at_once_on_one_folder_never_both_finish(tiny, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for trial in range(3):
        run_dir = tmp_path / f"run{trial}"
        procs = [subprocess.Popen([sys.executable, "-m", "npvae", *train_args(tiny, run_dir),
                                   "--seed", str(seed)], cwd=tmp_path, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for seed in (1, 2)]
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
        done = [i for i, p in enumerate(procs) if p.returncode == 0]
        assert len(done) == 1, outs
        loser = outs[1 - done[0]][1]
        assert "is in use by process" in loser or "already exists" in loser, loser
        seed = json.loads((run_dir / "config.json").read_text())["train"]["seed"]
        assert load_checkpoint(run_dir / "checkpoint.npz").state["train_config"]["seed"] == seed
        assert seed == 1 + done[0]


def test_stale_temporary_files_of_npvae_are_removed_when_a_run_is_claimed(run):
    stale = [run / ".checkpoint.npz.k2j4h5g6.tmp", run / ".metrics.csv.abcdefgh.tmp",
             run / "figures" / ".samples_epoch001.png.a1b2c3d4.tmp"]
    others = [run / ".notes.txt.abcdefgh.tmp", run / ".checkpoint.npz.tmp", run / "x.tmp"]
    (run / "figures").mkdir(exist_ok=True)
    for path in stale + others:
        path.write_bytes(b"left behind")
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"left behind" for p in others)


def test_the_checkpoint_is_written_before_the_metrics(run, monkeypatch, capsys):
    """A failure between the two leaves the metrics behind, never ahead; resume repairs them."""
    def full_disk(path, metrics):
        raise runs.FileError(f"cannot write {path}: No space left on device")

    with monkeypatch.context() as m:
        m.setattr("npvae.train.write_metrics", full_disk)  # the trainer's end-of-epoch write
        assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 2
    assert "No space left on device" in error_line(capsys)
    assert load_checkpoint(run / "checkpoint.npz").state["epoch"] == 3
    assert len(read_metrics(run / "metrics.csv")) == 2  # behind: the checkpoint is the truth
    assert cli.main(["train", "--resume", str(run), "--epochs", "4", "--no-progress"]) == 0
    rows = read_metrics(run / "metrics.csv")
    state = load_checkpoint(run / "checkpoint.npz").state
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows == state["metrics"]


def test_metrics_ahead_of_the_checkpoint_are_repaired_on_resume(run):
    good = (run / "metrics.csv").read_text()
    lines = good.splitlines()
    (run / "metrics.csv").write_text(good + "3" + lines[-1][1:] + "\n")  # a row never saved
    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0  # finished: untouched
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    state = load_checkpoint(run / "checkpoint.npz").state
    assert read_metrics(run / "metrics.csv") == state["metrics"]
    assert len(state["metrics"]) == 3


def test_resuming_a_finished_run_says_so_before_anything_else(run, tiny, capsys):
    for path in tiny.iterdir():  # the data is not even read
        path.rename(path.with_suffix(".moved"))
    try:
        before = snapshot(run)
        assert cli.main(["train", "--resume", str(run)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"nothing to do: {run} is finished (2 of 2 epochs trained)")
        assert snapshot(run) == before
    finally:
        for path in tiny.iterdir():
            path.rename(path.with_suffix(""))


@pytest.mark.parametrize("change, problem", [
    (lambda s: s.update(metrics="not a list"), "metrics"),
    (lambda s: s.update(metrics=[{"epoch": "one"}, {"epoch": 2}]), "metrics (one row"),
    (lambda s: s["metrics"].pop(), "metrics (one row"),
    (lambda s: s.update(step_in_epoch=99, partial={"n": 1, "loss": 1.0, "recon": 1.0, "kl": 0.0,
                                                   "seconds": 1.0}, rng={"shuffle_epoch_start": {}}),
     "step_in_epoch (an epoch has 5 steps)"),
    (lambda s: s.update(global_step=7), "global_step"),
    (lambda s: s.update(epoch=1, metrics=s["metrics"][:1], step_in_epoch=2, global_step=7,
                        partial={"n": "ten", "loss": [], "recon": 1.0, "kl": 0.0, "seconds": 1.0},
                        rng={"shuffle_epoch_start": {}}), "partial"),
])
def test_an_inconsistent_training_state_is_refused_at_load(run, change, problem, capsys):
    from npvae.checkpoint import model_from_checkpoint
    from npvae.optim import Adam

    model, checkpoint = model_from_checkpoint(run)
    optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta})
    optimizer.load_state_dict(checkpoint.optimizer_state())
    state = json.loads(json.dumps(checkpoint.state))
    change(state)
    save_checkpoint(run / "checkpoint.npz", model, optimizer, state)
    before = snapshot(run)
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 2
    assert f"not a training checkpoint (missing or malformed: {problem}" in error_line(capsys)
    assert snapshot(run) == before


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_a_run_gets_the_permissions_the_umask_gives(tiny, tmp_path, mask):
    old = os.umask(mask)
    try:
        assert cli.main(train_args(tiny, tmp_path / "run")[:-1]) == 0  # with figures
    finally:
        os.umask(old)
    paths = list((tmp_path / "run").rglob("*"))
    assert any(p.suffix == ".png" for p in paths) and any(p.is_dir() for p in paths)
    for path in [tmp_path / "run", *paths]:
        expected = (0o777 if path.is_dir() else 0o666) & ~mask
        assert path.stat().st_mode & 0o777 == expected, path


# ---------------------------------------------------------------- OS failures


@contextmanager
def read_only(folder):
    """``folder`` made read-only for this process: a read-only bind mount when running as
    root (which ignores permission bits), else its permission bits."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
        for p in modes:
            p.chmod(0o555)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    for cmd in (["mount", "--bind", str(folder), str(folder)],
                ["mount", "-o", "remount,bind,ro", str(folder)]):
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(folder)], capture_output=True)
            pytest.skip("running as root, and no read-only bind mount available")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("argv", [["train", "--resume", "RUN", "--epochs", "3", "--no-progress"], ["plot", "RUN"],
                                  ["sample", "RUN"]])
def test_a_read_only_run_folder_is_one_line(run, argv, capsys):
    before = snapshot(run)
    with read_only(run):
        assert cli.main([str(run) if a == "RUN" else a for a in argv]) == 2
        err = error_line(capsys)
    assert str(run) in err and ("Read-only file system" in err or "Permission denied" in err)
    assert snapshot(run) == before


@pytest.fixture
def full_disk(monkeypatch):
    """Every write fails as on a full disk: ``os.fsync`` raises ENOSPC (this process only)."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("argv", [["train", "--resume", "RUN", "--epochs", "3", "--no-progress"], ["plot", "RUN"],
                                  ["sample", "RUN"], "NEW"])
def test_a_full_disk_is_one_line_and_keeps_the_previous_files(run, tiny, argv, full_disk,
                                                               capsys):
    if argv == "NEW":
        argv = train_args(tiny, run.parent / "new")
    before = snapshot(run.parent)
    assert cli.main([str(run) if a == "RUN" else a for a in argv]) == 2
    err = error_line(capsys)
    assert "cannot write" in err and "No space left on device" in err
    after = snapshot(run.parent)
    assert {k: v for k, v in after.items() if k in before} == before
    new = set(after) - set(before)  # a new run's folder and its lock file, nothing else
    assert all(p.name in ("new", ".npvae-lock", "config.json") or p.suffix == ".png"
               for p in new) and not any(p.name.endswith(".tmp") for p in new)
    if argv[0] == "train" and "--resume" not in argv:
        assert not (run.parent / "new" / "config.json").exists()


@pytest.mark.parametrize("out, cause", [("RUN", "is a folder"),
                                        ("RUN/config.json/x.png", "is a file, not a folder"),
                                        ("/proc/npvae-test.png", "No such file or directory")])
def test_sample_out_that_cannot_be_written_is_one_line(run, out, cause, capsys):
    out = out.replace("RUN", str(run))
    before = snapshot(run)
    assert cli.main(["sample", str(run), "--out", out]) == 2
    err = error_line(capsys)
    assert cause in err and ("cannot write" in err or "cannot create folder" in err)
    assert snapshot(run) == before


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"epoch,step\n1,two\n",
                                     b"epoch,step\n1,2,3,4\n", "épocha\n".encode("latin-1")])
def test_a_corrupt_metrics_file_is_one_line_in_plot(run, content, capsys):
    (run / "metrics.csv").write_bytes(content)
    before = snapshot(run)
    assert cli.main(["plot", str(run)]) == 2
    assert f"{run / 'metrics.csv'}: not a metrics file npvae wrote" in error_line(capsys)
    assert snapshot(run) == before


# ---------------------------------------------------------------- every flag


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "RUN", "--seed", "-1"], "argument --seed: '-1' is not a non-negative integer"),
    (["sample", "RUN", "--seed", "-1"], "argument --seed: '-1' is not a non-negative integer"),
    (["plot", "RUN", "--seed", "-1"], "argument --seed: '-1' is not a non-negative integer"),
    (["gradcheck", "--seed", "-1"], "argument --seed: '-1' is not a non-negative integer"),
    (["train", "--seed", "-1"], "argument --seed: '-1' is not a non-negative integer"),
    *[(["evaluate", "RUN", "--threshold", v], f"argument --threshold: '{v}' is not a "
       "non-negative finite number") for v in ("nan", "inf", "1e400", "-1")],
    *[(["gradcheck", "--h", v], f"argument --h: '{v}' is not a number between 0 and 1")
      for v in ("0", "-1", "nan", "inf")],
    *[(["gradcheck", "--tol", v], f"argument --tol: '{v}' is not a number between 0 and 1")
      for v in ("inf", "1e400", "-1", "nan", "1")],
    (["sample", "RUN", "--n", str(10**30)], "argument --n: '1000000000000000000000000000000' is "
     "not a positive integer up to 10,000"),
    (["gradcheck", "--batch", str(10**30)], "is not a positive integer up to 10,000"),
    (["train", "--preset", ""], "argument --preset: '' is not one of pytorch-example"),
    (["gradcheck", "--preset", ""], "argument --preset: '' is not one of pytorch-example"),
    (["explore", "RUN", "--digit", "-1"], "argument --digit: '-1' is not a non-negative integer"),
    (["train", "--latent", "1e30"], "argument --latent: '1e30' is not a positive integer"),
    (["train", "--latent", str(10**30)], "parameters, more than the limit of 100,000,000"),
    (["train", "--hidden", "10000000"], "parameters, more than the limit of 100,000,000"),
    (["gradcheck", "--latent", str(10**30), "--x-dim", "784"], "more than the limit"),
    (["train", "--lattent", "3"], "unrecognized arguments: --lattent 3; did you mean --latent?"),
    (["train", "--epoch", "3"], "unrecognized arguments: --epoch 3; did you mean --epochs?"),
    (["evaluate", "RUN", "--iw", "5"], "unrecognized arguments: --iw 5"),
    (["sample", ""], "argument RUN: an empty value"),
    (["evaluate", "RUN", "--batch-size", "0"], "argument --batch-size: '0' is not a positive"),
])
def test_a_bad_flag_is_one_line_exit_2(run, tiny, argv, message, capsys, monkeypatch):
    monkeypatch.chdir(run.parent)
    argv = [str(run) if a == "RUN" else a for a in argv]
    if argv[0] == "train":
        argv += ["--data-dir", str(tiny), "--run-dir", str(run.parent / "never"),
                 "--batch-size", "10"]
    before = snapshot(run.parent)
    assert cli.main(argv) == 2
    assert message in error_line(capsys)
    assert snapshot(run.parent) == before


# ---------------------------------------------------------------- fuzzing the command line

NUMBERS = st.one_of(st.integers(-10**40, 10**40).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["", "0", "1", "-1", "2", "nan", "inf", "1e400", "1e-400",
                                     "0.5", "3,4", "x", " ", "1_000", "0x10"]),
                    st.text(max_size=6))
WORDS = st.one_of(NUMBERS, st.sampled_from(["relu", "tanh", "gaussian", "bernoulli", "dynamic",
                                            "threshold", "none", "float64", "float32", "numpy",
                                            "cupy", "seed", "iwae", "pytorch-example"]))


def _flags(command):
    sub = next(a for a in cli.build_parser()._actions if hasattr(a, "choices") and a.choices)
    parser = sub.choices[command]
    flags = {}
    for action in parser._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long and long[0] not in ("--help", "--resume", "--run-dir", "--data-dir", "--out",
                                    "--overwrite"):
            flags[long[0]] = action.nargs == 0
    return flags


FUZZ = {command: _flags(command) for command in ("train", "evaluate", "sample", "plot",
                                                  "gradcheck")}


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(FUZZ)))
    flags = draw(st.lists(st.sampled_from(sorted(FUZZ[command])), max_size=4, unique=True))
    argv = [command]
    for flag in flags:
        argv += [flag] if FUZZ[command][flag] else [flag, draw(WORDS)]
    return argv


# Valid but slow sizes, cut down to these (invalid values are kept, to be refused).
SLOW = {"--iw-samples": 20, "--x-dim": 24, "--batch": 8, "--hidden": 32, "--latent": 16,
        "--n": 64, "--limit": 16, "--epochs": 3, "--k": 4}


def _tame(argv):
    tamed = list(argv)
    for i, arg in enumerate(tamed[:-1]):
        if arg in SLOW:
            parts = tamed[i + 1].split(",")
            for j, part in enumerate(parts):
                try:
                    parts[j] = str(min(int(part), SLOW[arg])) if int(part) > 0 else part
                except ValueError:
                    pass
            tamed[i + 1] = ",".join(parts)
    return tamed


@settings(max_examples=int(os.environ.get("NPVAE_CLI_FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=command_lines())
def test_fuzzed_flags_end_in_exit_0_or_2_never_a_traceback(fuzz_run, argv, capsys):
    """Random values for every flag of every subcommand, on a tiny run and data set.

    Sizes that would only make the command slow (epochs, samples) are cut down
    afterwards: what is fuzzed is the checking, not the patience.
    """
    run_dir, tiny, scratch = fuzz_run
    argv = _tame(argv)
    command = argv[0]
    if command in ("evaluate", "sample", "plot"):
        argv.insert(1, str(run_dir))
        argv += ["--data-dir", str(tiny)] if command != "sample" else \
            ["--out", str(scratch / "s.png")]
    elif command == "train":
        argv += ["--data-dir", str(tiny), "--run-dir", str(scratch / "r"), "--overwrite",
                 "--max-steps", "3", "--no-progress", "--no-figures"]
        if "--max-steps" in argv[:-6]:
            argv = argv[:-6] + argv[-4:]
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse's own exits (never expected: main returns codes)
        pytest.fail(f"SystemExit({exit.code}) escaped main for {argv}")
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (argv, code, err)   # 1: a gradient check failed (its verdict)
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("npvae: error: "), (argv, err)


@pytest.fixture(scope="module")
def fuzz_run(tiny, trained_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    copy_run(trained_run, folder)
    return folder / "run", tiny, folder
