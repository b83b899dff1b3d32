"""Tests for the command line: every subcommand, exit codes, evaluate's progress, Ctrl-C and kill -9.

Commands run in-process through ``cli.main(argv)`` (which returns the exit
code), except ``python -m npvae --help`` and the signal tests, which need a
real process.
"""

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from npvae import cli
from npvae.checkpoint import load_checkpoint, model_from_checkpoint
from npvae.config import TrainConfig
from npvae.data import load_mnist, to_unit_interval
from npvae.evaluate import evaluate_elbo, iw_bounds
from npvae.progress import ProgressBar, format_duration
from npvae.train import train
from tests.helpers import copy_run, error_line, tiny_config, train_args
from tests.timeouts import safety_net

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory):
    """A finished 2-epoch CLI run, with its figures (this module's copy: tests change it)."""
    return copy_run(trained_run, tmp_path_factory.mktemp("cli"))


# ---------------------------------------------------------------- help


def test_python_dash_m_npvae_help_in_a_real_process():
    out = subprocess.run([sys.executable, "-m", "npvae", "--help"], cwd=REPO, text=True,
                         capture_output=True, timeout=safety_net(60))
    assert out.returncode == 0, out.stderr
    for command in ("train", "evaluate", "sample", "plot", "gradcheck"):
        assert command in out.stdout


@pytest.mark.parametrize("command", ["train", "evaluate", "sample", "plot", "gradcheck"])
def test_every_subcommand_has_help(command, capsys):
    assert cli.main([command, "--help"]) == 0
    assert f"usage: npvae {command}" in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys):
    assert cli.main([]) == 2
    assert "arguments are required: COMMAND (see npvae --help)" in error_line(capsys)


# ---------------------------------------------------------------- the subcommands


def test_train_writes_a_run_with_its_figures(run):
    assert {"config.json", "metrics.csv", "checkpoint.npz"} <= {p.name for p in run.iterdir()}
    assert (run / "samples.png").is_file() and (run / "curves.png").is_file()
    assert (run / "figures" / "reconstructions_epoch002.png").is_file()
    state = load_checkpoint(run / "checkpoint.npz").state
    assert state["epoch"] == 2 and state["train_config"]["hidden"] == [8]


def test_train_with_no_arguments_uses_the_default_preset(monkeypatch, capsys):
    seen = {}

    def fake_train(config, run_dir, overwrite=False):
        seen.update(config=config, run_dir=run_dir)
        return SimpleNamespace(completed=True, run_dir="runs/pytorch-example",
                               state={"epoch": 10, "global_step": 4690})

    monkeypatch.setattr("npvae.train.train", fake_train)
    assert cli.main(["train"]) == 0
    assert seen["config"] == TrainConfig.from_preset("pytorch-example").validate()
    assert seen["run_dir"] is None
    assert "done: runs/pytorch-example (10 epochs, 4690 steps)" in capsys.readouterr().out


def test_resume_continues_and_refuses_changed_settings(run, tmp_path, capsys):
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--no-progress",
                     "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "epoch 3/3" in out
    assert cli.main(["train", "--resume", str(run), "--lr", "0.1"]) == 2
    assert "--lr cannot be changed when resuming" in error_line(capsys)


def test_evaluate_prints_the_bounds_and_the_kl_table(run, capsys):
    assert cli.main(["evaluate", str(run), "--iw-samples", "5", "--limit", "8"]) == 0
    out = capsys.readouterr().out
    for part in ("test examples: 8", "test ELBO:", "importance-weighted bound, k=5",
                 "active units:", "KL per latent dimension"):
        assert part in out


def test_sample_writes_a_png(run, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert cli.main(["sample", str(run), "--n", "9", "--out", str(out), "--seed", "3"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_redraws_every_figure(run, capsys):
    (run / "curves.png").unlink()
    assert cli.main(["plot", str(run / "checkpoint.npz")]) == 0
    assert (run / "curves.png").is_file() and (run / "manifold.png").is_file()  # latent 2


@pytest.mark.parametrize("args", [["--preset", "mlp-mse"], ["--preset", "iwae"],
                                  ["--hidden", "30,20", "--activation", "softplus"]])
def test_gradcheck_passes_on_a_shrunk_copy(args, capsys):
    assert cli.main(["gradcheck", *args]) == 0
    out = capsys.readouterr().out
    assert "shrunk copy" in out and "all ok" in out


def test_gradcheck_of_a_run(run, capsys):
    assert cli.main(["gradcheck", str(run)]) == 0  # x_dim 16 is below the default 20: full size
    out = capsys.readouterr().out
    assert "shrunk" not in out and "VAE(16-8 / 2 / 8-16" in out and "all ok" in out


def test_gradcheck_fails_with_exit_1_on_a_wrong_backward(monkeypatch, capsys):
    from npvae import vae

    monkeypatch.setattr(vae, "reparameterize_backward",
                        lambda dz, logvar, eps: (dz, dz * eps * np.exp(logvar)))  # the classic bug
    assert cli.main(["gradcheck"]) == 1
    assert "FAILED" in capsys.readouterr().out


# ---------------------------------------------------------------- errors: exit 2, one line


@pytest.mark.parametrize("args, message", [
    (["train", "--lr", "-1"], "argument --lr: '-1' is not a positive finite number"),
    (["train", "--preset", "nope"], "argument --preset: 'nope' is not one of pytorch-example, "),
    (["train", "--binarize", "maybe"], "argument --binarize: 'maybe' is not one of none, dynamic, "
                                       "threshold"),
    (["train", "--likelihood", "poisson"], "argument --likelihood: 'poisson' is not one of "
                                           "bernoulli, gaussian"),
    (["train", "--backend", "tpu"], "argument --backend: 'tpu' is not one of numpy, cupy"),
    (["train", "--activation", "gelu"], "argument --activation: 'gelu' is not one of relu, "),
    (["gradcheck", "--objective", "iw"], "argument --objective: 'iw' is not one of elbo, elbo-sampled, iwae"),
    (["explore", "RUN", "--n", "0"], "argument --n: '0' is not a positive integer"),
    (["explore", "RUN", "--sliders", "-1"], "argument --sliders: '-1' is not a non-negative"),
    (["train", "--epochs", "0"], "argument --epochs: '0' is not a positive integer"),
    (["train", "--batch-size", "100000"], "batch_size=100000 is larger than the 48"),
    (["train", "--data-dir", "/no/such/folder"], "data directory not found"),
    (["evaluate", "/no/such/run"], "no such run folder or checkpoint file"),
    (["gradcheck", "--x-dim", "0"], "argument --x-dim: '0' is not a positive integer"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, tiny, tmp_path, capsys):
    if args[0] == "train" and "--data-dir" not in args:
        args = args + ["--data-dir", str(tiny)]
    args = args + (["--run-dir", str(tmp_path / "r")] if args[0] == "train" else [])
    assert cli.main(args) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["train", "--hidden", "4x4"], "argument --hidden: '4x4' is not a comma-separated list"),
    (["train", "--bogus"], "unrecognized arguments: --bogus (see npvae train --help)"),
    (["train", "--epochs", "two"], "argument --epochs: 'two' is not a positive integer"),
    (["train", "--lattent", "3"], "unrecognized arguments: --lattent 3; did you mean --latent?"),
    (["train", "--epoch", "3"], "unrecognized arguments: --epoch 3; did you mean --epochs?"),
])
def test_unparseable_arguments_exit_2_with_one_line(args, message, capsys):
    assert cli.main(args) == 2
    assert message in error_line(capsys)


def test_an_existing_run_dir_is_an_error_unless_overwrite(run, tiny, capsys):
    before = (run / "checkpoint.npz").read_bytes()
    assert cli.main(train_args(tiny, run)) == 2
    assert "already exists; pass --overwrite" in error_line(capsys)
    assert (run / "checkpoint.npz").read_bytes() == before


def test_a_corrupt_checkpoint_is_exit_2(tmp_path, capsys):
    (tmp_path / "checkpoint.npz").write_bytes(b"PK\x03\x04 broken")
    for command in ("evaluate", "sample", "plot"):
        assert cli.main([command, str(tmp_path)]) == 2
        assert "truncated or corrupt checkpoint" in error_line(capsys)


# ---------------------------------------------------------------- evaluate --iw-samples: what it
# shows while and after it runs: the progress bar and the duration notice (on stderr), and with
# --limit the standard error of the bound (on stdout)


BOUND_RE = re.compile(r"importance-weighted bound, k=(\d+): log p\(x\) >= (-?[\d.]+)")
SE_RE = re.compile(r"standard error ([\d.]+) nats \(the (\d+) examples' bounds")


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """A one-epoch 784-8-2 model trained by the CLI on the first 200 shipped MNIST training
    digits (its test set: the first 40 test digits), for the importance-weighted bound."""
    run_dir = tmp_path_factory.mktemp("evaluate_cli") / "run"
    assert cli.main(["train", "--n-train", "200", "--epochs", "1", "--hidden", "8", "--latent",
                     "2", "--batch-size", "50", "--n-test", "40", "--no-progress", "--no-figures",
                     "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_limit_prints_the_standard_error_of_the_per_example_bounds(mnist_run, capsys):
    capsys.readouterr()
    assert cli.main(["evaluate", str(mnist_run), "--iw-samples", "20", "--limit", "30",
                     "--seed", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    k, bound = BOUND_RE.search(out).groups()
    se, n = SE_RE.search(out).groups()
    assert (int(k), int(n)) == (20, 30)
    # The same numbers from the library: the command draws the ELBO's noise first.
    model, _ = model_from_checkpoint(mnist_run)
    x = to_unit_interval(load_mnist().x_test[:30])
    rng = np.random.default_rng(4)
    evaluate_elbo(model, x, batch_size=1000, rng=rng)
    bounds = iw_bounds(model, x, 20, rng)
    assert float(bound) == pytest.approx(bounds.mean(), abs=1e-4)
    assert float(se) == pytest.approx(bounds.std(ddof=1) / np.sqrt(30), abs=1e-4)
    assert float(se) > 0


def test_no_standard_error_without_limit(mnist_run, capsys):
    capsys.readouterr()
    assert cli.main(["evaluate", str(mnist_run), "--iw-samples", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test examples: 40" in out and BOUND_RE.search(out) and "standard error" not in out


def test_the_progress_bar_goes_to_stderr_and_no_progress_silences_it(mnist_run, capsys):
    capsys.readouterr()
    assert cli.main(["evaluate", str(mnist_run), "--iw-samples", "10", "--limit", "25"]) == 0
    captured = capsys.readouterr()
    assert "importance-weighted bound, k=10: 100%" in captured.err
    assert "250/250" in captured.err                     # 10 samples x 25 examples
    assert "100%" not in captured.out and BOUND_RE.search(captured.out)
    assert cli.main(["evaluate", str(mnist_run), "--iw-samples", "10", "--limit", "25",
                     "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("chunk_seconds, notice", [(0.5, True), (0.01, False)])
def test_the_duration_notice_comes_from_the_first_chunks(chunk_seconds, notice):
    clock, file = FakeClock(), io.StringIO()
    bar = ProgressBar("importance-weighted bound, k=5000", notice_after=10.0, file=file,
                      clock=clock)
    clock.now = 3.2                                      # a slow first chunk: warm-up, not rate
    bar(2_000, 800_000)
    assert file.getvalue() == ""
    clock.now += chunk_seconds                           # the second: 1/400 of the run
    bar(4_000, 800_000)
    head = file.getvalue()
    for done in range(6_000, 800_001, 2_000):
        bar(done, 800_000)
    bar.close()
    lines = file.getvalue()
    if not notice:                                       # 3.21 + 3.98 s: under 10
        assert "about" not in lines
    else:   # 3.7 s so far + 398 chunks of 0.5 s = 202.7 s, printed once, before the bar
        assert head.startswith("importance-weighted bound, k=5000: about 3 min 23 s in all "
                               "(from the first chunks)\n")
        assert lines.count("about") == 1
    assert "800k/800k" in lines


def test_a_run_of_one_chunk_gets_its_bar_and_no_notice():
    file = io.StringIO()
    bar = ProgressBar("importance-weighted bound, k=3", notice_after=0.0, file=file)
    bar(300, 300)
    bar.close()
    assert "about" not in file.getvalue() and "300/300" in file.getvalue()


def test_format_duration():
    assert [format_duration(s) for s in (4.4, 59.6, 200, 3599, 3600, 5 * 3600 + 7 * 60)] == \
        ["4 s", "1 min 0 s", "3 min 20 s", "59 min 59 s", "1 h 00 min", "5 h 07 min"]


# ---------------------------------------------------------------- Ctrl-C and kill -9


SIGNAL_RUN = ["--hidden", "8", "--latent", "2", "--batch-size", "2", "--epochs", "150"]


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    config = tiny_config(tiny, batch_size=2, epochs=150)
    return train(config, tmp_path_factory.mktemp("signal") / "run", log=lambda *_: None)


# ``python -m npvae`` with one change: after its first checkpoint the run waits (between two
# steps) until Ctrl-C arrives, so the signal always finds it mid-run, however busy the machine.
# (Ctrl-C's default action is restored first: a shell starts background jobs ignoring it.)
WAIT_AFTER_FIRST_CHECKPOINT = """
import runpy, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import npvae.train as training
save = training.Run.save
def save_then_wait(self):
    save(self)
    if not getattr(training, "waited", False):
        training.waited = True
        while not self.stop_requested:
            time.sleep(0.01)
training.Run.save = save_then_wait
sys.argv[0] = "npvae"
runpy.run_module("npvae", run_name="__main__")
"""


def start_training(tiny, run_dir):
    """A real ``npvae train`` process, once its first checkpoint is on disk.

    It waits on the file, not on an output line or a time; the process waits
    there for the signal (``WAIT_AFTER_FIRST_CHECKPOINT``), so it cannot finish
    first on a busy machine (``tests/timeouts.py`` bounds the wait generously).
    """
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", WAIT_AFTER_FIRST_CHECKPOINT, "train", "--data-dir", str(tiny),
         "--run-dir", str(run_dir), "--no-progress", "--no-figures", *SIGNAL_RUN],
        cwd=run_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    limit = time.monotonic() + safety_net(120)
    while not (run_dir / "checkpoint.npz").is_file():
        if proc.poll() is not None or time.monotonic() > limit:
            proc.kill()
            pytest.fail(f"no checkpoint from the training process: {proc.communicate()}")
        time.sleep(0.01)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_killed_run_resumes_to_the_same_weights(sig, tiny, tmp_path, uninterrupted, capsys):
    run_dir = tmp_path / "run"
    proc = start_training(tiny, run_dir)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=safety_net(60))
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "npvae: interrupted at epoch" in err
        assert f"continue with: npvae train --resume {run_dir}" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(run_dir / "checkpoint.npz").state
    assert 1 <= state["epoch"] and (state["epoch"], state["step_in_epoch"]) < (150, 0)
    assert cli.main(["train", "--resume", str(run_dir), "--no-progress", "--no-figures"]) == 0
    assert "done:" in capsys.readouterr().out
    final = load_checkpoint(run_dir / "checkpoint.npz")
    model = uninterrupted.model
    for k, p in model.params.items():
        assert np.array_equal(final.params[k], p), k
    assert np.array_equal(final.optimizer_arrays["m_sum.theta"], uninterrupted.optimizer.m_sum["theta"])
