"""Wall time of the whole test suite (``pytest tests -q``), gradient checks included.

Runs the suite in a fresh interpreter with the thread settings of
``--threads``, ``--repeats`` times, and reports each wall time, the median,
pytest's summary line and the slowest tests (``--durations``).

Usage: ``python benchmarks/gradcheck_suite.py [--repeats 1] [--threads 2]``
"""

if __name__ == "__main__":  # threads first, as in every script here
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks._common import threads_from_argv

    threads_from_argv()

import os
import re
import subprocess
import sys
import time

from benchmarks import _common

DURATION_LINE = re.compile(r"^\s*([0-9.]+)s\s+(call|setup|teardown)\s+(\S+)")


def run_suite(durations=10, extra=()):
    """One ``pytest tests -q`` run: (seconds, return code, output)."""
    command = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider",
               f"--durations={durations}", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=_common.REPO, capture_output=True, text=True,
                          env=dict(os.environ))
    return time.perf_counter() - start, done.returncode, done.stdout + done.stderr, command


def summary_line(output):
    """pytest's last line ("12 passed, 1 skipped in 3.4s"), without its decoration."""
    lines = [line.strip("= ") for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def slowest(output):
    return [{"seconds": float(m.group(1)), "when": m.group(2), "test": m.group(3)}
            for m in map(DURATION_LINE.match, output.splitlines()) if m]


def main(argv=None):
    parser = _common.script_parser(__doc__, epochs=0)
    parser.set_defaults(epochs=None)
    for action in parser._actions:
        if action.dest == "epochs":
            action.help = "accepted like every script's, but unused: the suite trains nothing"
    parser.add_argument("--repeats", type=int, default=1, help="runs of the suite (default 1)")
    parser.add_argument("--durations", type=int, default=10,
                        help="list this many slowest tests (default 10)")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="wait up to this many seconds for other processes to leave the "
                             "CPUs before each run (0: do not wait; default 60)")
    parser.add_argument("pytest_args", nargs="*", help="more arguments for pytest (after --)")
    args = parser.parse_args(argv)
    if args.epochs is not None:
        print("note: --epochs does not apply here (the suite trains nothing); ignored")

    runs = []
    for i in range(args.repeats):
        if args.quiet_wait > 0:
            _common.wait_for_quiet(timeout=args.quiet_wait)
        print(f"[{i + 1}/{args.repeats}] pytest tests -q ...", flush=True)
        with _common.OtherLoad() as load:
            seconds, code, output, command = run_suite(args.durations, args.pytest_args)
        runs.append({"seconds": seconds, "returncode": code, "summary": summary_line(output),
                     "slowest": slowest(output), "other_load_cpus": load.cpus})
        if code not in (0, 5):
            print(output[-4000:])

    rows = [(i + 1, r["seconds"], r["returncode"], f"{r['other_load_cpus']:.2f}", r["summary"])
            for i, r in enumerate(runs)]
    _common.print_table(rows, ["run", "wall s", "exit", "other CPUs", "pytest says"],
                        title=f"\n`pytest tests -q`, {args.threads} threads")
    med = _common.median([r["seconds"] for r in runs])
    print(f"median wall time: {med:.1f} s")
    top = runs[-1]["slowest"]
    if top:
        _common.print_table([(t["seconds"], t["when"], t["test"]) for t in top],
                            ["s", "phase", "test"], title="\nslowest tests (last run)")
    _common.write_json("gradcheck_suite", {
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": _common.machine_info(), "command": " ".join(command),
        "median_seconds": med, "runs": runs}, args.out)
    return 0 if all(r["returncode"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
