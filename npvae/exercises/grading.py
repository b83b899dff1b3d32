"""Grading files: each in its own child process, a verdict per file, the summary, the exit code.

``grade_file`` grades one file against one exercise; ``check`` is
``npvae exercises check``: it grades every file asked for, whatever any of
them does, prints each exercise's lines and then the summary, and returns
the exit code (0 when every exercise is right, 1 otherwise). The exit code
and the output are the grader's alone: the learner's code runs in a child
process (``isolation``), and what it prints is shown under its exercise.
"""

import ast
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .catalogue import EXERCISES
from .isolation import DEFAULT_TIMEOUT, Learner
from .judging import OK, PARTLY, TODO, WRONG, Attempt, Line, outcome, solution_text

EXIT_OK, EXIT_WRONG = 0, 1
PRINTED_LINES = 20   # of the learner's own output, shown under its exercise


@dataclass
class Graded:
    """One file graded: its lines, its verdict (``outcome``), and what the learner's code printed."""

    lines: list
    status: str
    printed: str = ""


def grade_file(exercise, path, timeout=DEFAULT_TIMEOUT):
    """Grade the file at ``path`` against ``exercise``, its code run in a child process: a ``Graded``."""
    path = Path(path)
    with Learner(path, timeout) as learner:
        loaded = learner.loaded
        if loaded.kind == "loaded":
            attempt = Attempt(learner)
            try:
                with np.errstate(all="ignore"):
                    exercise.checks(attempt)
            except Exception as err:  # the grader's own bug: said, and the other files still graded
                attempt.add(["(the grader)"], WRONG, f"failed on this answer, a bug in npvae's grader: "
                            f"{type(err).__name__}: {' '.join(str(err).split())}")
            lines = attempt.lines
        elif loaded.kind == "todo":
            lines = [Line(f, TODO) for f in exercise.functions]
        else:
            lines = [Line(path.name, WRONG, f"could not be loaded: {loaded.message}")]
    return Graded(lines, outcome(lines), learner.output)


def default_dir():
    """tutorials/exercises of the current checkout (or, failing that, of npvae's)."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / "tutorials" / "exercises").is_dir():
            return root / "tutorials" / "exercises"
    return Path.cwd() / "tutorials" / "exercises"


def _shown(path):
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def exercise_of_file(path):
    """The exercise a file is for: by its name, else by the functions it defines.

    Its exact file name first, then the longest exercise name its stem ends
    with (``02_leaky_relu`` ends with ``relu`` too, ``17_masked_dense`` with ``dense``).
    """
    named = [ex for ex in EXERCISES.values() if path.name == ex.file] or sorted(
        (ex for ex in EXERCISES.values() if path.stem.endswith(ex.name)), key=lambda ex: -len(ex.name))
    if named:
        return named[0]
    try:
        defined = {n.name for n in ast.parse(path.read_text(encoding="utf-8")).body
                   if isinstance(n, ast.FunctionDef)}
    except (SyntaxError, UnicodeDecodeError, ValueError):
        defined = set()
    found = [ex for ex in EXERCISES.values() if set(ex.functions) <= defined]
    return found[0] if len(found) == 1 else None


def list_exercises():
    """``npvae exercises list``: the table of exercises."""
    print(f"{'exercise':<16} {'file':<24} {'write':<52} derivation")
    for ex in EXERCISES.values():
        print(f"{ex.name:<16} {ex.file:<24} {', '.join(ex.functions):<52} derivations.md#{ex.anchor}")
    print("\nnpvae exercises check NAME  grades tutorials/exercises/<file>; --show-solution prints a "
          "solution that passes")
    return EXIT_OK


def show_solutions(names):
    """``--show-solution``: each function of each exercise as it passes, to paste over its stub."""
    for name in names:
        ex = EXERCISES[name]
        stub = default_dir() / ex.file
        print(solution_text(ex, stub.read_text(encoding="utf-8")) if stub.is_file() else
              "\n".join(f"# {ex.file}, {f}: its body\n{ex.solution[f].strip()}\n" for f in ex.functions))
    return EXIT_OK


def _jobs(names, folder, file):
    """``[(exercise, path)]`` to grade, or a ``ConfigError`` naming what is wrong."""
    if file:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"--file {file}: no such file")
        if len(names) > 1:
            raise ConfigError("--file grades one exercise; give at most one NAME")
        ex = EXERCISES[names[0]] if names else exercise_of_file(path)
        if ex is None:
            raise ConfigError(f"cannot tell which exercise {file} is; give its NAME")
        return [(ex, path)]
    folder = Path(folder) if folder else default_dir()
    if not folder.is_dir():
        raise ConfigError(f"no exercise folder {folder} (give --dir or --file)")
    jobs = [(EXERCISES[n], folder / EXERCISES[n].file) for n in (names or EXERCISES)]
    missing = [str(p) for _, p in jobs if not p.is_file()]
    if missing:
        raise ConfigError(f"no exercise file {missing[0]}")
    return jobs


def check(names=(), folder=None, file=None, show_solution=False, timeout=DEFAULT_TIMEOUT):
    """``npvae exercises check``: grade, print, and return the exit code (0 all right, 1 not)."""
    unknown = [n for n in names if n not in EXERCISES]
    if unknown:
        raise ConfigError(f"unknown exercise {unknown[0]!r}; choose one of {', '.join(EXERCISES)}")
    if show_solution:
        if not names:
            raise ConfigError("--show-solution needs the NAME of an exercise")
        return show_solutions(names)
    jobs = _jobs(names, folder, file)
    counts = {OK: 0, WRONG: 0, TODO: 0, PARTLY: 0}
    for ex, path in jobs:
        print(f"{ex.name} ({_shown(path)}): ", end="", flush=True)  # the header first, the verdict after
        graded = grade_file(ex, path, timeout)
        counts[graded.status] += 1
        print(graded.status)
        print("\n".join(map(str, graded.lines)))
        printed = graded.printed.rstrip("\n").splitlines()
        if printed:
            print("  your code printed:" + (f" (the first {PRINTED_LINES} lines of {len(printed)})"
                                            if len(printed) > PRINTED_LINES else ""))
            print("\n".join(f"  | {line}" for line in printed[:PRINTED_LINES]))
        print(flush=True)
    if len(jobs) > 1:
        print(f"{len(jobs)} exercises: {counts[OK]} ok, {counts[WRONG]} wrong, {counts[PARTLY]} partly "
              f"done, {counts[TODO]} not implemented yet")
    return EXIT_OK if counts[OK] == len(jobs) else EXIT_WRONG
