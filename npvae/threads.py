"""How many threads npvae uses: ``--threads N``, ``NPVAE_THREADS``, the default.

With N threads npvae splits its large matrix products and elementwise
passes into N parts itself (``npvae.parallel``), and keeps NumPy's BLAS
(OpenBLAS in NumPy's wheels) at one thread. BLAS's own threads are the
wrong tool here: after each product OpenBLAS's idle threads spin, waiting
for work, on cores that the next elementwise pass (or another process)
needs, and a product cannot finish until its slowest thread gets a core.
npvae's pool threads sleep while they wait, the elementwise passes run in
parallel too, and the results are the same, bit for bit, with any number
of threads (each part is the same computation on fewer rows or columns).
(Measured in ``benchmarks/threads_under_load.py`` and
``benchmarks/compare_conv_torch.py``; the guide's section on threads has the
tables.)

npvae's thread count is, in this order:

1. ``--threads N`` on ``npvae train``, ``evaluate`` and ``gradcheck``
   (``set_threads``);
2. the environment variable ``NPVAE_THREADS=N``;
3. ``auto`` for either: the CPUs idle now, ``default_threads()`` (CPUs less
   the one-minute load average, rounded, at least 1), and at most
   ``AUTO_MOST_THREADS`` (8);
4. a BLAS variable you set yourself (``OPENBLAS_NUM_THREADS`` etc.) is
   left alone, and npvae's pool stays at one thread;
5. otherwise ``DEFAULT_THREADS``: ``auto``.

Why ``auto`` (measured by ``benchmarks/threads_under_load.py``; the table is
in the guide's section on threads): on a quiet 2-core machine two threads
make a training step 1.3 to 1.5 (MLP) and 1.5 to 1.6 (conv) times faster;
beside busy processes ``auto`` counts fewer idle CPUs and takes fewer
threads, and a thread too many costs far less than OpenBLAS's did (its pool
thread sleeps instead of spinning): beside one busy loop 4 to 14% slower,
beside two from 32% slower (MLP) to 20% faster (conv), where a second
OpenBLAS thread cost 2 to 15 times. And since the results are the same with
any thread count, a default that follows the load changes how fast a run
goes, never its numbers. Why at most 8: on a 16-core Xeon, in each of
three runs (``benchmarks/scaling.py --threads-axis`` twice, ``benchmarks/
pool_parts.py``; ``results/*_16cpu*.json``), both presets' steps were slower
at 16 threads than at 8 (MLP 5.3 to 6.6 ms against 4.4 to 5.7, conv 55 to 58
against 46 to 48); between 4 and 8 the conv step was 0 to 21% faster at 8 and
the MLP's 1 to 27% faster at 4. ``--threads N`` still takes more.

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
DEFAULT_THREADS = "auto"
"""Threads when neither ``--threads``, ``NPVAE_THREADS`` nor a BLAS variable says otherwise:
the CPUs idle when npvae loads, at most ``AUTO_MOST_THREADS`` (``default_threads``)."""
AUTO_MOST_THREADS = 8
"""The most threads ``auto`` takes: beyond it the presets' training steps got slower."""
BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# OpenBLAS's entry points under the names NumPy's and SciPy's wheels build it with.
_SET = ("openblas_set_num_threads", "openblas_set_num_threads64_",
        "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_")
_GET = tuple(name.replace("_set_", "_get_") for name in _SET)


def default_threads(cpus=None, load=None):
    """``auto``'s thread count: the CPUs idle now (``idle_cpus``), at most
    ``AUTO_MOST_THREADS``."""
    return min(AUTO_MOST_THREADS, idle_cpus(cpus, load))


def idle_cpus(cpus=None, load=None):
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
                          "npvae splits its work across)")
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
    """Use ``threads`` threads from now on (a count or ``auto``); return the count.

    npvae splits its large products and elementwise passes across that many
    threads itself (``npvae.parallel``) and keeps BLAS at one thread: the BLAS
    variables are set to 1 (for NumPy not yet loaded, and for processes
    started from this one, which get ``NPVAE_THREADS`` too: ``auto`` stays
    ``auto``, so that they count the idle CPUs anew) and, where NumPy is
    loaded, OpenBLAS's own count.
    """
    exported = str(threads).strip().lower()
    threads = parse_threads(threads)
    for name in BLAS_VARIABLES:
        os.environ[name] = "1"
    os.environ[ENVIRONMENT] = exported if exported == "auto" else str(threads)
    if "numpy" in sys.modules:
        _call(_SET, ctypes.c_int(1))
    if threads > 1 or "npvae.parallel" in sys.modules:
        from . import parallel  # loads NumPy, now with the BLAS variables set

        parallel.set_workers(threads)
    return threads


def current_threads():
    """The threads npvae splits its work across now (``npvae.parallel``)."""
    parallel = sys.modules.get("npvae.parallel")
    return 1 if parallel is None else parallel.workers()


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
    """One line for stderr when ``threads`` threads (default: npvae's or BLAS's, the more)
    start on a machine with fewer CPUs idle (``idle``, default ``idle_cpus()``); None when
    there is no cause."""
    threads = max(current_threads(), blas_threads() or 1) if threads is None else threads
    idle = idle_cpus() if idle is None else idle
    if threads <= idle:
        return None
    return (f"npvae: note: only {idle} of {threads} CPUs look idle (load average); npvae's "
            f"{threads} threads will wait for each other. If this runs slowly, try "
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
            help="threads npvae splits its products and elementwise passes across, or auto: "
                 "the CPUs idle now, at most 8 (default: NPVAE_THREADS, else auto; the results "
                 "are the same with any count; if training is slow beside other jobs, try "
                 "--threads 1)")
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
