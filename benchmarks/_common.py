"""What the benchmark scripts share: thread settings, machine facts, tables, JSON.

Thread counts must be fixed before NumPy (and so OpenBLAS) is first imported:
OpenBLAS reads ``OPENBLAS_NUM_THREADS`` once, when it loads. So every script
calls ``threads_from_argv()`` at its very top, before importing NumPy; this
module imports nothing heavy at import time for that reason.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def threads_from_argv(argv=None):
    """Read ``--threads N`` from the command line and export it for every BLAS.

    Sets OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS to N
    (default: the number of CPUs) and returns N. Must run before NumPy is
    imported; if it was already, the variables cannot take effect and we say so.
    """
    argv = sys.argv[1:] if argv is None else argv
    threads = os.cpu_count() or 1
    engine = None
    for i, arg in enumerate(argv):
        if arg in ("--threads", "--engine") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(("--threads=", "--engine=")):
            value = arg.split("=", 1)[1]
        else:
            continue
        if arg.startswith("--threads"):
            threads = value
        else:
            engine = value
    try:
        threads = int(threads)
    except ValueError:
        threads = 0
    if threads < 1:
        sys.exit(f"--threads must be a positive integer, got {threads!r}")
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    # npvae's own count: split across its pool with BLAS at one thread (npvae.parallel); an
    # --engine from before that pool puts it into its BLAS instead
    os.environ["NPVAE_THREADS"] = str(threads)
    if "numpy" in sys.modules:
        print(f"warning: NumPy was imported before --threads={threads} was applied; "
              "its BLAS keeps the thread count it started with", file=sys.stderr)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if engine is not None:  # an npvae checkout to measure instead of this one
        if not (Path(engine) / "npvae" / "__init__.py").is_file():
            sys.exit(f"--engine {engine}: no npvae/ package there")
        sys.path.insert(0, str(Path(engine).resolve()))
    return threads


def script_parser(doc, epochs, training=False):
    """A script's argument parser: its docstring as the help (first line, then the
    rest as the epilogue), the common arguments and, with ``training``, the
    timed-training ones."""
    first, _, rest = doc.partition("\n")
    parser = argparse.ArgumentParser(description=first, epilog=rest,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, epochs)
    return add_training_arguments(parser) if training else parser


def add_common_arguments(parser, epochs):
    """``--epochs`` and ``--threads`` (read early by ``threads_from_argv``) and ``--out``."""
    parser.add_argument("--epochs", type=int, default=epochs,
                        help=f"training epochs to time (default: {epochs})")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for NumPy's BLAS and for PyTorch, the same for both "
                             "(sets OMP/OPENBLAS/MKL_NUM_THREADS before NumPy loads and "
                             "torch.set_num_threads; default: all CPUs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the JSON (default: benchmarks/results/<name>.json)")
    parser.add_argument("--engine", type=Path, default=None,
                        help="measure the npvae package in this folder (a scratch copy with "
                             "a proposed change) instead of this checkout's")
    return parser


def add_training_arguments(parser):
    """``--batch-size``, ``--seed``, ``--max-load`` and ``--quiet-wait``, for timed training runs."""
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-load", type=float, default=0.2,
                        help="an epoch counts (is clean) when other processes used fewer "
                             "CPUs than this meanwhile (default 0.2)")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="before each measurement, wait up to this many seconds for other "
                             "processes to leave the CPUs (0: do not wait; default 60)")
    return parser


def add_cpu_time_argument(parser):
    """``--cpu-time``: time by the process's CPU time, not the wall clock (``--threads 1``)."""
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with the process's CPU time, not the wall clock (needs "
                             "--threads 1): on a shared machine, what other processes' load "
                             "does not inflate")
    return parser


def check_cpu_time(parser, args):
    """``--cpu-time`` with more than one thread is an error: a second BLAS thread's spinning
    while it waits for a core counts as CPU time."""
    if args.cpu_time and args.threads != 1:
        parser.error("--cpu-time needs --threads 1 (a second BLAS thread's spinning counts as "
                     "CPU time)")


def parse_with_torch(parser, argv, name):
    """``(args, torch)``: the arguments parsed, ``--cpu-time`` checked (``check_cpu_time``),
    PyTorch at ``--threads`` (``torch_for``: without it the script says so and exits 0)."""
    args = parser.parse_args(argv)
    check_cpu_time(parser, args)
    return args, torch_for(name, args.threads)


def import_torch(threads=None):
    """PyTorch, with its intra-op threads set, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    if threads is not None:
        torch.set_num_threads(threads)
    return torch


def torch_for(name, threads):
    """PyTorch with ``threads`` intra-op threads; without it, say that ``name`` was skipped
    and exit with status 0 (``skip_without_torch``)."""
    torch = import_torch(threads)
    if torch is None:
        skip_without_torch(name)
    return torch


def skip_without_torch(name):
    """Print why and exit with status 0: a missing optional dependency is a skip."""
    print(f"{name}: skipped: PyTorch is not installed (pip install torch); "
          "nothing was measured")
    sys.exit(0)


def openblas_info():
    """NumPy's OpenBLAS as it runs: threads, kernel (core) and build config, when findable."""
    import ctypes
    import glob

    import numpy as np

    info = {}
    try:
        from threadpoolctl import threadpool_info
        info["threadpoolctl"] = [{k: d.get(k) for k in ("internal_api", "num_threads", "version",
                                                         "architecture", "prefix")}
                                 for d in threadpool_info()]
    except ImportError:
        pass
    libs = glob.glob(str(Path(np.__file__).parent.parent / "numpy.libs" / "*openblas*.so*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""),
                               ("openblas_", "")):
            get_threads = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
            if get_threads is None:
                continue
            get_threads.restype = ctypes.c_int
            info["num_threads"] = get_threads()
            for key in ("corename", "config"):
                fn = getattr(lib, f"{prefix}get_{key}{suffix}", None)
                if fn is not None:
                    fn.restype = ctypes.c_char_p
                    info[key] = fn().decode()
            info["library"] = Path(path).name
            return info
    return info


def _npvae_threads():
    """The threads npvae splits its work across (``npvae.parallel``), or None for an engine
    without that pool (its BLAS threads are then ``numpy_blas``'s)."""
    try:
        from npvae.threads import current_threads
    except ImportError:
        return None
    return current_threads()


def machine_info(torch=None):
    """CPU model, core count, library versions and BLAS: what the numbers were measured on."""
    import numpy as np

    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import npvae

    info = {
        "npvae": str(Path(npvae.__file__).parent),
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": openblas_info(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "env": {name: os.environ.get(name) for name in THREAD_VARIABLES + ("NPVAE_THREADS",
                                                                           "NPVAE_KEEP_MEMORY")},
        "npvae_threads": _npvae_threads(),
    }
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_blas"] = "MKL" if torch.backends.mkl.is_available() else "other"
    return info


class TimedArrayModule:
    """An array module with its ``matmul`` wrapped (everything else passed through)."""

    def __init__(self, xp, wrap):
        self._xp = xp
        self.matmul = wrap(xp.matmul)

    def __getattr__(self, name):
        return getattr(self._xp, name)


def engine_pool():
    """``npvae.parallel`` as the measured engine's layers call it, or None for an --engine
    from before that module (its threads are BLAS's). Looked up through the loaded
    ``npvae.layers``, not imported: an editable install would find this checkout's
    ``npvae.parallel`` beside an older engine."""
    return getattr(sys.modules.get("npvae.layers"), "parallel", None)


def time_products(layers, wrap):
    """Put ``wrap`` (function -> timed function) around every matrix product ``layers`` make;
    return a function that takes it off again.

    npvae's layers call ``npvae.parallel.matmul`` and ``matmuls``, which share products out
    across npvae's threads: ``matmuls`` (which ``matmul`` calls) is wrapped whole, so the
    products are timed once, by the wall clock, whatever the threads. An --engine from
    before that module calls ``layer.xp.matmul``: each layer's array module is wrapped
    instead.
    """
    parallel = engine_pool()
    if parallel is not None:  # every product goes through matmuls (matmul calls it)
        name = "matmuls" if hasattr(parallel, "matmuls") else "matmul"
        original = getattr(parallel, name)
        setattr(parallel, name, wrap(original))
        return lambda: setattr(parallel, name, original)
    saved = [(layer, layer.xp) for layer in layers]
    for layer, xp in saved:
        layer.xp = TimedArrayModule(xp, wrap)
    return lambda: [setattr(layer, "xp", xp) for layer, xp in saved]


def median(values):
    return float(statistics.median(values))


def print_table(rows, headers, title=None):
    """A plain text table: ``rows`` are sequences; floats get 3 significant decimals."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:.1f}"
        return str(v)
    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    if title:
        print(title)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in text:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def alternating_ms(ways, rounds, warmup=1):
    """{name: [ms of each round]} for ``ways`` {name: function()}: ``warmup`` untimed rounds,
    then ``rounds`` rounds, each calling every way once in turn (so drift in the machine's
    speed reaches every way alike)."""
    times = {name: [] for name in ways}
    for round_ in range(warmup + rounds):
        for name, function in ways.items():
            start = time.perf_counter()
            function()
            if round_ >= warmup:
                times[name].append(1e3 * (time.perf_counter() - start))
    return times


def report(name, table, headers, title, args, **payload):
    """Print ``table`` (rows under ``headers``) and write ``{"args", "machine", **payload}``
    to ``name``'s JSON (``write_json``, to ``args.out`` when set)."""
    print_table(table, headers, title=title)
    return write_json(name, {"args": vars(args), "machine": machine_info(), **payload},
                      args.out)


def write_json(name, payload, out=None):
    """Write ``payload`` to ``out`` or ``benchmarks/results/<name>.json``; return the path."""
    path = Path(out) if out is not None else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def mnist_arrays():
    """MNIST train and test images as npvae loads them: (N, 784) float32 in [0, 1]."""
    from npvae.data import load_mnist, to_unit_interval

    data = load_mnist()
    return to_unit_interval(data.x_train), to_unit_interval(data.x_test)


def epoch_orders(n, epochs, seed):
    """One shuffle (a permutation of range(n)) per epoch, from a seeded NumPy Generator."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(epochs)]


def _cpu_times():
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / hz, sum(fields[:8]) / hz


class OtherLoad:
    """How many CPUs *other* processes kept busy while a block ran.

    Other engineers run tests on the same 2 cores; a benchmark that shares
    them measures the contention, not the code. ``with OtherLoad() as load:``
    then ``load.cpus`` (0: we had the machine; 1: a whole core was taken).
    The machine's busy time comes from /proc/stat, ours from getrusage.
    """

    cpus = None

    def start(self):
        import resource
        import time

        self._resource, self._time = resource, time
        self._start = (_cpu_times()[0], self._own(), time.perf_counter())
        return self

    def stop(self):
        busy, own, wall = _cpu_times()[0], self._own(), self._time.perf_counter()
        wall -= self._start[2]
        self.cpus = max(0.0, ((busy - self._start[0]) - (own - self._start[1])) / max(wall, 1e-9))
        return self.cpus

    def _own(self):
        r = self._resource.getrusage(self._resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def measured(function, quiet_wait=0.0):
    """``(function(), facts)``: a measurement and what the machine did meanwhile.

    First waits up to ``quiet_wait`` seconds for a quiet machine
    (``wait_for_quiet``; 0: no wait). ``facts``: the load average just before
    (``loadavg``), the process's CPU seconds (``cpu_seconds``), of them the
    seconds spent in the kernel (``system_seconds``) and the page faults
    (``page_faults``, minor ones: memory mapped in anew; both None where the
    system does not count them), and the CPUs other processes used meanwhile
    (``other_load_cpus``, ``OtherLoad``).
    """
    import time

    if quiet_wait > 0:
        wait_for_quiet(timeout=quiet_wait)
    loadavg = os.getloadavg()[0]
    monitor = OtherLoad().start()
    kernel = _kernel_counts()
    cpu = time.process_time()
    result = function()
    cpu = time.process_time() - cpu
    after = _kernel_counts()
    system, faults = (None, None) if kernel is None else \
        (after[0] - kernel[0], after[1] - kernel[1])
    return result, {"loadavg": loadavg, "cpu_seconds": cpu, "system_seconds": system,
                    "page_faults": faults, "other_load_cpus": monitor.stop()}


def _kernel_counts():
    """(system CPU seconds, minor page faults) of this process so far, or None (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_stime, usage.ru_minflt


def clean_median(seconds, loads, max_cpus=0.2):
    """Median of the ``seconds`` whose other load was under ``max_cpus`` (all, if none was).

    Returns ``(median, number of clean epochs)``; 0 means the median is of contended ones.
    """
    clean = [s for s, load in zip(seconds, loads) if load is not None and load < max_cpus]
    use = clean or list(seconds)
    return median(use), len(clean)


def wait_for_quiet(max_cpus=0.15, timeout=120.0, interval=1.0):
    """Wait (up to ``timeout`` s) until other processes use under ``max_cpus`` CPUs.

    Returns the load last seen. Only a wait: it never stops anyone's process.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        with OtherLoad() as load:
            time.sleep(interval)
        if load.cpus < max_cpus or time.monotonic() > deadline:
            return load.cpus


class timed_matmul:
    """``numpy.matmul`` replaced by a timed wrapper while a ``with`` block runs.

    npvae calls ``xp.matmul`` with ``xp`` the numpy module, looked up at each
    call, so every product it computes (layers, likelihoods) goes through the
    wrapper: ``seconds`` and ``calls`` add up their time and number. (Adds
    about a microsecond a call: use it in a run of its own, not a timed one.)
    ``clock``: a function of seconds (default ``time.perf_counter``; with one
    thread, ``time.process_time`` counts only the time the process ran).
    """

    def __init__(self, clock=None):
        import time

        self.clock = time.perf_counter if clock is None else clock

    def __enter__(self):
        import numpy as np

        self.seconds, self.calls, self._np, self._original = 0.0, 0, np, np.matmul
        original, clock = np.matmul, self.clock

        def matmul(*args, **kwargs):
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += clock() - start
                self.calls += 1

        np.matmul = matmul
        return self

    def __exit__(self, *exc):
        self._np.matmul = self._original
        return False
