"""How many threads npvae's matrix products use: ``--threads N``, ``NPVAE_THREADS``, the default.

NumPy's matrix products run in its BLAS (OpenBLAS in NumPy's wheels), which
starts one thread per CPU unless told otherwise. On a quiet machine the
extra threads make the products faster. On a busy one they make everything
slower: after each product OpenBLAS's idle threads spin, waiting for work,
on cores that other processes need, and a product cannot finish until its
slowest thread gets a core. (Measured in ``benchmarks/threads_under_load.py``;
the README's speed section has the table.)

So npvae uses ONE thread unless told otherwise, in this order:

1. ``--threads N`` on ``npvae train``, ``evaluate`` and ``gradcheck``
   (``set_threads``);
2. the environment variable ``NPVAE_THREADS=N``;
3. ``auto`` for either: the CPUs idle now, ``default_threads()`` (CPUs less
   the one-minute load average, rounded, at least 1);
4. a BLAS variable you set yourself (``OPENBLAS_NUM_THREADS`` etc.) is
   left alone;
5. otherwise ``DEFAULT_THREADS``, one.

Why one by default (measured by ``benchmarks/threads_under_load.py``, the
table in README's speed section): on a busy machine one thread is never
the slow choice (two threads made a training step 2 to 15 times slower
there), on a quiet 2-core machine it costs about 1.3x against two threads,
and it makes a run's numbers the same on every machine with the same CPU
kernels, whatever its core count or load: the thread count changes how
OpenBLAS splits a product, and so the last bits of float32 results (a
two-epoch ``fit`` prints 158.8525 with one thread and 158.8526 with two).
A default that followed the load (``auto``) would make the numbers depend
on what else was running. On a quiet machine with cores to spare, ask for
them: ``--threads auto``. A command started from a terminal with more
threads than idle CPUs says so on stderr, with what to try (``busy_hint``).

BLAS reads its variables once, when NumPy loads, so ``configure`` (called by
``import npvae``) sets them when NumPy is not loaded yet; once it is,
``set_threads`` calls OpenBLAS's own ``openblas_set_num_threads`` through
ctypes. This module imports nothing heavy, so that it can run first.
"""

import ctypes
import glob
import os
import sys

ENVIRONMENT = "NPVAE_THREADS"
DEFAULT_THREADS = 1
"""Threads when neither ``--threads``, ``NPVAE_THREADS`` nor a BLAS variable says otherwise."""
BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# OpenBLAS's entry points under the names NumPy's and SciPy's wheels build it with.
_SET = ("openblas_set_num_threads", "openblas_set_num_threads64_",
        "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_")
_GET = tuple(name.replace("_set_", "_get_") for name in _SET)


def default_threads(cpus=None, load=None):
    """The CPUs idle now: ``cpus`` less the one-minute load average, rounded, at least 1.

    ``cpus`` defaults to the CPUs this process may use, ``load`` to
    ``os.getloadavg()[0]`` (0 where the system has none, e.g. Windows).
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cpus, int(cpus - load + 0.5)))


def parse_threads(value, source="--threads"):
    """``value`` as a positive int (``auto``: ``default_threads()``); a ConfigError naming
    ``source`` otherwise."""
    from .errors import ConfigError

    if str(value).strip().lower() == "auto":
        return default_threads()
    try:
        threads = int(str(value).strip())
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError(f"{source}={value!r} must be a positive integer or auto (threads "
                          "for the matrix products)")
    return threads


def _openblas_libraries():
    """The OpenBLAS libraries loaded in this process (or shipped beside NumPy), as CDLLs."""
    paths = set()
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps
                     if "openblas" in line.lower() and line.split()[-1].startswith("/")}
    except OSError:  # not Linux: look where NumPy's wheels put it
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            root = os.path.dirname(os.path.dirname(numpy.__file__))
            for folder in ("numpy.libs", "numpy/.dylibs", "numpy/_core"):
                paths.update(glob.glob(os.path.join(root, folder, "*openblas*")))
    libraries = []
    for path in sorted(paths):
        try:
            libraries.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libraries


def _call(names, *args):
    """Call the first of ``names`` found in each loaded OpenBLAS; return the results."""
    results = []
    for library in _openblas_libraries():
        for name in names:
            function = getattr(library, name, None)
            if function is not None:
                results.append(function(*args))
                break
    return results


def blas_threads():
    """The threads NumPy's OpenBLAS uses now, or None if no OpenBLAS is loaded."""
    results = _call(_GET)
    return results[0] if results else None


def set_threads(threads):
    """Use ``threads`` threads for the matrix products from now on; return it.

    Sets the BLAS variables (for NumPy not yet loaded, and for processes
    started from this one) and, where NumPy is loaded, OpenBLAS's own count.
    """
    threads = parse_threads(threads)
    for name in BLAS_VARIABLES:
        os.environ[name] = str(threads)
    if "numpy" in sys.modules:
        _call(_SET, ctypes.c_int(threads))
    return threads


def configure():
    """Apply ``NPVAE_THREADS`` if set, else ``DEFAULT_THREADS`` unless a BLAS variable is set;
    return the count, or None (a BLAS variable decides). Called by ``import npvae``, before
    NumPy loads."""
    value = os.environ.get(ENVIRONMENT)
    if value is not None:
        return set_threads(parse_threads(value, ENVIRONMENT))
    if any(os.environ.get(name) for name in BLAS_VARIABLES):
        return None
    return set_threads(DEFAULT_THREADS)


def busy_hint(threads=None, idle=None):
    """One line for stderr when ``threads`` BLAS threads start on a machine with fewer CPUs
    idle (``idle``, default ``default_threads()``); None when there is no cause."""
    threads = blas_threads() if threads is None else threads
    idle = default_threads() if idle is None else idle
    if threads is None or threads <= idle:
        return None
    return (f"npvae: note: only {idle} of {threads} CPUs look idle (load average); the matrix "
            f"products' {threads} threads will wait for each other. If this runs slowly, try "
            f"--threads {idle} (or NPVAE_THREADS={idle}, or auto).")


def threads_argument(value):
    """argparse type of ``--threads``: a positive int or ``auto`` (argparse names the flag in
    its error)."""
    return parse_threads(value)


threads_argument.__name__ = "thread count"  # argparse: "invalid thread count value"


def add_threads_flag(subparsers, commands=("train", "evaluate", "gradcheck")):
    """Give each of ``commands`` a ``--threads N`` flag, applied before the command runs.

    The self-contained block ``npvae.cli`` calls once: the flag, its help, and
    a wrapper around the command's function that calls ``set_threads`` first.
    """
    for name in commands:
        parser = subparsers.choices[name]
        parser.add_argument(
            "--threads", type=threads_argument, default=None, metavar="N",
            help="threads for the matrix products, or auto: the CPUs idle now (default: "
                 "NPVAE_THREADS, else a BLAS variable you set, else 1; on a quiet machine with "
                 "cores to spare try --threads auto)")
        parser.set_defaults(func=_applying_threads(parser.get_default("func")))


def _applying_threads(command):
    def run(args):
        if args.threads is not None:
            set_threads(args.threads)
        if sys.stderr.isatty():  # a hint for a person
            hint = busy_hint()
            if hint:
                print(hint, file=sys.stderr)
        return command(args)
    run.__wrapped__ = command
    return run
