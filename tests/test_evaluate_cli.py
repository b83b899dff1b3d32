"""What ``npvae evaluate --iw-samples K`` shows while and after it runs: the
progress bar and the duration notice (on stderr), and with ``--limit`` the
standard error of the bound (on stdout).

The run is a one-epoch 784-8-2 model trained through the CLI on the first
200 shipped MNIST training digits (its test set: the first 40 test digits),
so the tests need nothing but the package.
"""

import io
import re

import numpy as np
import pytest

from npvae import cli
from npvae.checkpoint import model_from_checkpoint
from npvae.data import load_mnist, to_unit_interval
from npvae.evaluate import evaluate_elbo, iw_bounds
from npvae.progress import ProgressBar, format_duration

BOUND_RE = re.compile(r"importance-weighted bound, k=(\d+): log p\(x\) >= (-?[\d.]+)")
SE_RE = re.compile(r"standard error ([\d.]+) nats \(the (\d+) examples' bounds")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("evaluate_cli") / "run"
    assert cli.main(["train", "--n-train", "200", "--epochs", "1", "--hidden", "8", "--latent",
                     "2", "--batch-size", "50", "--n-test", "40", "--no-progress", "--no-figures",
                     "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_limit_prints_the_standard_error_of_the_per_example_bounds(run, capsys):
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--iw-samples", "20", "--limit", "30",
                     "--seed", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    k, bound = BOUND_RE.search(out).groups()
    se, n = SE_RE.search(out).groups()
    assert (int(k), int(n)) == (20, 30)
    # The same numbers from the library: the command draws the ELBO's noise first.
    model, _ = model_from_checkpoint(run)
    x = to_unit_interval(load_mnist().x_test[:30])
    rng = np.random.default_rng(4)
    evaluate_elbo(model, x, batch_size=1000, rng=rng)
    bounds = iw_bounds(model, x, 20, rng)
    assert float(bound) == pytest.approx(bounds.mean(), abs=1e-4)
    assert float(se) == pytest.approx(bounds.std(ddof=1) / np.sqrt(30), abs=1e-4)
    assert float(se) > 0


def test_no_standard_error_without_limit(run, capsys):
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--iw-samples", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test examples: 40" in out and BOUND_RE.search(out) and "standard error" not in out


def test_the_progress_bar_goes_to_stderr_and_no_progress_silences_it(run, capsys):
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--iw-samples", "10", "--limit", "25"]) == 0
    captured = capsys.readouterr()
    assert "importance-weighted bound, k=10: 100%" in captured.err
    assert "250/250" in captured.err                     # 10 samples x 25 examples
    assert "100%" not in captured.out and BOUND_RE.search(captured.out)
    assert cli.main(["evaluate", str(run), "--iw-samples", "10", "--limit", "25",
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
