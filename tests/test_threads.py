"""Threads: ``--threads``, ``NPVAE_THREADS`` and the default (npvae's own pool, BLAS at one).

- ``auto`` is the CPUs idle now (CPUs less the load average, at least 1);
  without a setting npvae takes ``auto`` threads in its own pool and keeps
  BLAS at one (not BLAS's one per CPU); processes it starts count anew;
- a busy machine gets a one-line hint naming what to try;
- ``set_threads(N)`` gives npvae's own pool N threads (``npvae.parallel``) and
  keeps NumPy's loaded OpenBLAS at one (read back from OpenBLAS itself), in a
  fresh process;
- ``NPVAE_THREADS`` (a count or auto) decides at ``import npvae``, before
  NumPy loads; a BLAS variable the user set is left alone; a bad value is a
  one-line error;
- ``npvae train/evaluate/gradcheck --threads N`` apply N, and refuse 0.
"""

import os

import pytest

from npvae import cli, parallel, threads
from npvae.errors import ConfigError
from tests.helpers import REPO, fresh_python


def run_python(code, **env):
    """Run ``code`` in a fresh Python with ``env`` added (and no inherited thread variables)."""
    return fresh_python(code, 120, **env)


def needs_openblas():
    if threads.blas_threads() is None:
        pytest.skip("NumPy's BLAS here is not OpenBLAS: its thread count cannot be read back")


@pytest.mark.parametrize("cpus, load, idle, auto", [(2, 0.0, 2, 2), (2, 1.8, 1, 1), (2, 0.4, 2, 2),
                                                   (8, 3.2, 5, 5), (4, 50.0, 1, 1), (1, 0.0, 1, 1),
                                                   (16, 0.6, 15, 8), (16, 13.4, 3, 3),
                                                   (12, 0.0, 12, 8)])
def test_auto_is_the_cpus_idle_now_at_most_eight(cpus, load, idle, auto):
    assert threads.idle_cpus(cpus=cpus, load=load) == idle
    assert threads.default_threads(cpus=cpus, load=load) == auto == min(idle,
                                                                         threads.AUTO_MOST_THREADS)


def test_auto_parses_to_the_idle_cpus_and_the_hint_names_them():
    assert threads.parse_threads("auto") == threads.default_threads()
    hint = threads.busy_hint(threads=2, idle=1)
    assert "1 of 2 CPUs" in hint and "--threads 1" in hint and "\n" not in hint
    assert threads.busy_hint(threads=2, idle=2) is None
    assert threads.busy_hint(threads=1, idle=1) is None


STANDALONE = ("import importlib.util, sys\n"
              "spec = importlib.util.spec_from_file_location('t', {path!r})\n"
              "t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t)\n")
"""Loads npvae/threads.py alone (without ``import npvae``), to read OpenBLAS's own count."""


def test_without_a_setting_npvae_takes_the_idle_cpus_and_blas_one_thread():
    """No NPVAE_THREADS, no BLAS variable: ``import npvae`` sets OpenBLAS to one thread,
    whatever NumPy alone would start (one per CPU), also when NumPy came first, and its own
    pool to the idle CPUs (``auto``), which processes it starts count again."""
    needs_openblas()
    standalone = STANDALONE.format(path=os.path.join(REPO, "npvae", "threads.py"))
    alone = run_python(standalone + "import numpy; print(t.blas_threads())")
    assert alone.returncode == 0, alone.stderr
    if (os.cpu_count() or 1) > 1:   # else NumPy alone also starts one: nothing to tell apart
        assert int(alone.stdout) > 1
    assert threads.DEFAULT_THREADS == "auto"
    for first in ("import npvae, numpy", "import numpy, npvae"):
        result = run_python(first + "; import os; from npvae import threads; "
                            "print(threads.blas_threads(), os.environ['OPENBLAS_NUM_THREADS'], "
                            "os.environ['NPVAE_THREADS'], threads.current_threads())")
        blas, variable, exported, pool = result.stdout.split()
        assert (blas, variable, exported) == ("1", "1", "auto"), (first, result.stderr)
        assert 1 <= int(pool) <= (os.cpu_count() or 1)


def test_set_threads_sizes_npvaes_pool_and_keeps_openblas_at_one():
    needs_openblas()
    result = run_python("import numpy, sys; from npvae import threads\n"
                        "seen = []\n"
                        "for n in (1, 3, 1):\n"
                        "    threads.set_threads(n)\n"
                        "    seen += [threads.current_threads(), threads.blas_threads()]\n"
                        "print(*seen, threads.os.environ['OPENBLAS_NUM_THREADS'])",
                        NPVAE_THREADS="2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1", "3", "1", "1", "1", "1"]


@pytest.mark.parametrize("value", ["1", "2", "auto"])  # OpenBLAS caps it at the CPUs (2 in CI)
def test_npvae_threads_decides_at_import(value):
    needs_openblas()
    result = run_python("import npvae, os; from npvae import threads\n"
                        "print(threads.current_threads(), threads.blas_threads(), "
                        "os.environ['OMP_NUM_THREADS'])",
                        NPVAE_THREADS=value)
    assert result.returncode == 0, result.stderr
    pool, blas, variable = result.stdout.split()
    assert blas == variable == "1"
    if value != "auto":
        assert pool == value
    else:  # the idle CPUs when it started: between 1 and the CPUs
        assert 1 <= int(pool) <= (os.cpu_count() or 1)


@pytest.mark.parametrize("value", ["1", "2"])
def test_a_users_blas_variable_is_left_alone(value):
    needs_openblas()
    result = run_python("import npvae; from npvae import threads; "
                        "print(threads.blas_threads(), threads.current_threads())",
                        OPENBLAS_NUM_THREADS=value)
    expected = min(int(value), os.cpu_count() or 1)  # OpenBLAS caps it at the CPUs
    assert result.stdout.split() == [str(expected), "1"], result.stderr


@pytest.mark.parametrize("value", ["0", "-2", "two", ""])
def test_a_bad_npvae_threads_is_one_clear_error(value):
    result = run_python("import npvae", NPVAE_THREADS=value)
    assert result.returncode != 0
    assert "ConfigError: NPVAE_THREADS=" in result.stderr
    assert "must be a positive integer or auto" in result.stderr.splitlines()[-1]
    with pytest.raises(ConfigError, match="--threads='0' must be a positive integer or auto"):
        threads.parse_threads("0")


@pytest.fixture
def restore_threads():
    before, pool = threads.blas_threads(), threads.current_threads()
    saved = {k: os.environ.get(k) for k in threads.BLAS_VARIABLES + (threads.ENVIRONMENT,)}
    yield
    parallel.set_workers(pool)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if before is not None:
        threads._call(threads._SET, threads.ctypes.c_int(before))


@pytest.mark.parametrize("n", [1, 2])
def test_the_commands_apply_threads(n, restore_threads, capsys):
    needs_openblas()
    assert cli.main(["gradcheck", "--preset", "pytorch-example", "--threads", str(n)]) == 0
    assert threads.current_threads() == n and threads.blas_threads() == 1
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1" and os.environ["NPVAE_THREADS"] == str(n)
    parser = cli.build_parser()
    for command in ("train", "evaluate"):
        args = parser.parse_args([command, "RUN", "--threads", str(n)] if command == "evaluate"
                                 else [command, "--threads", str(n)])
        assert args.threads == n and args.func.__wrapped__ is not None


def test_threads_zero_is_refused_in_one_line(capsys):
    assert cli.main(["gradcheck", "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "--threads" in err and "'0'" in err and len(err.strip().splitlines()) == 1
