"""How many threads npvae's matrix products use: ``--threads N``, ``NPVAE_THREADS``, the default.

NumPy's matrix products run in its BLAS (OpenBLAS in NumPy's wheels), which
starts one thread per CPU unless told otherwise. On a quiet machine the
extra threads make the products faster. On a busy one they make everything
slower: after each product OpenBLAS's idle threads spin, waiting for work,
on cores that other processes need, and a product cannot finish until its
slowest thread gets a core. (Measured in ``benchmarks/threads_under_load.py``;
the README's speed section has the table.)

So npvae picks the thread count itself, in this order:

1. ``--threads N`` on ``npvae train``, ``evaluate`` and ``gradcheck``
   (``set_threads``);
2. the environment variable ``NPVAE_THREADS=N``;
3. a BLAS variable the user set (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``,
   ``MKL_NUM_THREADS``): left as it is;
4. otherwise the default, ``default_threads()``: the CPUs that were idle when
   npvae was imported (CPUs less the one-minute load average, at least 1).
   An idle laptop gets every core; a shared machine whose load already fills
   its cores gets one thread, which spins against nobody.

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
    """``value`` as a positive int; a ConfigError naming ``source`` otherwise."""
    from .errors import ConfigError

    try:
        threads = int(str(value).strip())
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError(f"{source}={value!r} must be a positive integer (threads for the "
                          "matrix products)")
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
    """Apply ``NPVAE_THREADS``, a user's BLAS variable, or the default; return the count chosen
    (None when the user's BLAS variable decides). Called by ``import npvae``."""
    value = os.environ.get(ENVIRONMENT)
    if value is not None:
        return set_threads(parse_threads(value, ENVIRONMENT))
    if any(name in os.environ for name in BLAS_VARIABLES):
        return None
    return set_threads(default_threads())


def threads_argument(value):
    """argparse type of ``--threads``: a positive int (argparse names the flag in its error)."""
    return parse_threads(value)


threads_argument.__name__ = "positive integer"  # argparse: "invalid positive integer value"


def add_threads_flag(subparsers, commands=("train", "evaluate", "gradcheck")):
    """Give each of ``commands`` a ``--threads N`` flag, applied before the command runs.

    The self-contained block ``npvae.cli`` calls once: the flag, its help, and
    a wrapper around the command's function that calls ``set_threads`` first.
    """
    for name in commands:
        parser = subparsers.choices[name]
        parser.add_argument(
            "--threads", type=threads_argument, default=None, metavar="N",
            help="threads for the matrix products (default: NPVAE_THREADS, else the CPUs idle "
                 "at start, at least 1; on a busy machine try --threads 1)")
        parser.set_defaults(func=_applying_threads(parser.get_default("func")))


def _applying_threads(command):
    def run(args):
        if args.threads is not None:
            set_threads(args.threads)
        return command(args)
    run.__wrapped__ = command
    return run
