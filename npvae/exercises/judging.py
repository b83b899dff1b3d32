"""Judging one exercise: the verdict line of each tensor, and the diagnosis of a wrong one.

An ``Attempt`` is the learner's file being graded against one ``Exercise``:
its ``checks(attempt)`` calls the learner's functions (in a child process,
``isolation.Learner``) on copies of small float64 inputs, and ``judge``s
every returned tensor against a reference the grader computed itself:
npvae's value (within ``VALUE_TOL``) or, for a gradient, central differences
(within ``DEFAULT_TOL``). Before any comparison a returned value is checked
for type (an array of numbers, not None, a tuple, a str or an object),
dtype (float64: complex is named, float32 with the digits it loses), shape
and finiteness, each with its own message. A wrong tensor is compared with
the exercise's usual wrong answers (``candidates``), then with the general
ones (sign, factor of 2 or 1/2, B or 1/B, transpose, a constant shift); the
first it equals names the mistake. A function that changes an input array in
place gets a line of its own.
"""

import ast
import textwrap
from dataclasses import dataclass, field

import numpy as np

from ..gradcheck import DEFAULT_TOL, numerical_gradient, rel_error
from .isolation import Learner, Opaque

OK, TODO, WRONG, PARTLY = "ok", "not implemented yet", "WRONG", "partly done"
VALUE_TOL = 1e-8  # a value against npvae's, both in float64
SAME = 1e-6       # "equals this wrong answer" when within this relative error
B = 4             # the batch size of every exercise (not 2, so 1/B is no factor of 1/2)


# ------------------------------------------------------------------ one tensor


def _close(a, b):
    """Same shape, non-finite in the same places (NaN with NaN, inf with inf), and within ``SAME``."""
    if a.shape != b.shape:
        return False
    finite = np.isfinite(b)
    if not (np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(a[~finite & ~np.isnan(b)],
                                                                       b[~finite & ~np.isnan(b)])):
        return False
    return not finite.any() or rel_error(a[finite], b[finite], floor=1e-12) <= SAME


def _index(idx):
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _plain(got, integers=False):
    """``(array, problem)``: the returned value as a float64 array, or the sentence why it is not one.

    ``problem`` is None for a float64 array (or a number, or, with
    ``integers``, an integer or boolean array); for float32 or float16 the
    array comes with ``problem = "float32"``, its dtype, for ``judge`` to weigh.
    """
    if got is None:
        return None, "is None: return the array"
    if isinstance(got, Opaque) and got.shape is not None:
        return None, f"has shape {got.shape}: {got.description}, far more than the answer's"
    if isinstance(got, Opaque):
        return None, f"is {got.description}, not an array of numbers"
    if isinstance(got, (tuple, list)):
        return None, f"is a {type(got).__name__} of {len(got)} values, not one array"
    a = np.asarray(got)
    kind = a.dtype.kind
    if kind == "c":
        return None, (f"is complex (dtype {a.dtype}): an imaginary part appeared, from the square root "
                      "or the log of a negative number, or a complex constant; every value here is real")
    if kind in "biu":
        if integers:
            return a.astype(np.float64), None
        return None, (f"has dtype {a.dtype}, not float64: integers cannot hold the answer (an array "
                      "made from integers, np.zeros_like of one, or a // division?)")
    if a.dtype.itemsize < 8:
        return a.astype(np.float64), str(a.dtype)
    if a.dtype != np.float64:
        return None, f"has dtype {a.dtype}: return float64, the dtype of the inputs"
    return a, None


def diagnose(got, ref, candidates=None, batch=B):
    """What is wrong with ``got`` (a float64 array), given the right answer ``ref``.

    ``candidates`` maps a message to a usual wrong answer computed from the
    reference; the first that ``got`` equals names the mistake. Then the
    general ones: a shape, non-finite entries, a constant factor (-1, 2,
    1/2, B, 1/B), a transpose, an added constant; else the relative error and
    the worst entry.
    """
    for message, wrong in (candidates or {}).items():
        if _close(got, np.asarray(wrong, dtype=np.float64)):
            return message
    if got.shape != ref.shape:
        if got.ndim == 2 and got.shape == ref.shape[::-1]:
            if _close(got.T, ref):
                return f"is the transpose of the right answer: shape {got.shape}, expected {ref.shape}"
            return f"has shape {got.shape}, expected {ref.shape}: transposed, and its values are wrong too"
        return f"has shape {got.shape}, expected {ref.shape}"
    bad = ~np.isfinite(got)
    if bad.any():
        what = "NaN" if np.isnan(got).any() else "inf"
        first = _index(np.argwhere(bad)[0]) if got.ndim else "the value"
        return f"contains {what} ({int(bad.sum())} of {got.size} entries, the first at {first})"
    err = rel_error(got, ref, floor=1e-12)
    if got.size == 1:
        value, right = float(got.reshape(())), float(ref.reshape(()))
        return f"is {value:.8g} where {right:.8g} is right (off by {value - right:+.6g})"
    if err <= 1e-3:
        return (f"is close but not right: relative error {err:.1e} against npvae (a right answer is "
                "within 1e-8): a small term too many or missing, or an epsilon in the wrong place?")
    if ref.any() and not got.any():
        return "is all zeros"
    if ref.any():
        c = float(np.vdot(got, ref) / np.vdot(ref, ref))
        if _close(got, c * ref):
            for k, message in [(-1, "has its sign flipped: it is -1 times the right answer"),
                               (2, "is twice the right answer: a factor of 2 too many"),
                               (0.5, "is half the right answer: a factor of 1/2 too many (or a 2 missing)"),
                               (batch, f"is B = {batch} times the right answer: the 1/B of the batch "
                                       "mean is missing"),
                               (1 / batch, f"is 1/B = 1/{batch} of the right answer: divided by the "
                                           "batch size once too often")]:
                if abs(c - k) <= SAME * abs(k):
                    return message
            return f"is {c:.4g} times the right answer: a constant factor is wrong"
    if got.ndim == 2 and got.shape[0] == got.shape[1] and _close(got, ref.T):
        return "is the transpose of the right answer"
    shift = float(np.mean(got - ref))
    if _close(got, ref + shift):
        return f"is off by a constant {shift:+.6g} in every entry"
    worst = np.unravel_index(np.argmax(np.abs(got - ref)), ref.shape)
    return (f"is wrong: relative error {err:.2e} against npvae; worst entry "
            f"{_index(worst) if ref.ndim else 'the value'}: {got[worst]:.6g} where {ref[worst]:.6g} is right")


def judge(got, ref, numeric=None, floor=1e-8, candidates=None, batch=B, integers=False):
    """``(status, detail)`` for the learner's returned value ``got``.

    Right when it is a float64 array (``integers``: or an integer one) of
    ``ref``'s shape, finite, and within ``DEFAULT_TOL`` of the finite
    differences ``numeric`` (a gradient, relative to at least ``floor``) or
    within ``VALUE_TOL`` of npvae's ``ref`` (a value).
    """
    ref = np.asarray(ref, dtype=np.float64)
    a, problem = _plain(got, integers)
    if a is None:
        return WRONG, problem + (f" (expected {ref.shape})" if problem.startswith("has shape") else "")
    if a.shape == ref.shape and np.isfinite(a).all():
        err = (rel_error(a, numeric, floor) if numeric is not None else rel_error(a, ref, floor))
        if err <= (DEFAULT_TOL if numeric is not None else VALUE_TOL) and not problem:
            return OK, f"rel error {err:.1e} against {'finite differences' if numeric is not None else 'npvae'}"
        lost = rel_error(a, ref, floor=1e-12)
        if problem and lost <= 1e-3:
            return WRONG, (f"is {problem}, not float64: right to about {-np.log10(max(lost, 1e-17)):.0f} "
                           f"significant digits (relative error {lost:.1e}) where float64 keeps about 16: "
                           "keep float64 throughout (no astype, no float32 arrays)")
    detail = diagnose(a, ref, candidates, batch)
    return WRONG, detail + (f" (and it is {problem}: keep float64)" if problem else "")


def outcome(lines):
    """``WRONG`` if any line is; else ``ok`` or ``not implemented yet`` if every line is; else partly done."""
    statuses = {line.status for line in lines}
    if WRONG in statuses:
        return WRONG
    return statuses.pop() if len(statuses) == 1 else PARTLY


@dataclass
class Line:
    """One tensor's (or function's) result: its name, ``ok`` / ``not implemented yet`` / ``WRONG``, and why."""

    tensor: str
    status: str
    detail: str = ""

    def __str__(self):
        return f"  {self.tensor:<28} {self.status:<20} {self.detail}".rstrip()


def fd(loss, *arrays):
    """Central differences of ``loss()`` with respect to each of ``arrays`` (perturbed in place)."""
    return [numerical_gradient(loss, a) for a in arrays]


def inputs(rng, shape, away_from_zero=0.0):
    """Standard normal float64 values, at least ``away_from_zero`` from 0 (off ReLU's kink)."""
    a = rng.standard_normal(shape)
    return np.sign(a) * (np.abs(a) + away_from_zero)


# ------------------------------------------------------------------ one exercise


@dataclass
class Exercise:
    """One exercise: its stub file, the functions to write, how they are checked, a solution.

    ``checks(attempt)`` calls the learner's functions through ``attempt`` and
    judges what they return; ``solution`` maps each function to a body that
    passes, shown by ``--show-solution`` and tested by pasting it into the stub.
    """

    name: str
    file: str                 # in tutorials/exercises/, named NN_... by its tutorial's number
    functions: tuple          # what the learner writes
    anchor: str               # its section of tutorials/derivations.md
    checks: object            # checks(attempt) adds the lines
    solution: dict = field(default_factory=dict, repr=False)
    summary: str = ""

    @property
    def tutorial(self):
        return int(self.file[:2])


class Attempt:
    """The learner's file being graded against one exercise: calls into it, and the lines so far."""

    def __init__(self, learner):
        self.learner = learner
        self.lines = []
        self.extra = {}       # read back after the last call (a model's grads)
        self._told = set()    # functions (and changed inputs) whose line is already there
        self._gone = None     # the learner's child, once gone (timeout, died): said once

    def add(self, names, status, detail=""):
        self.lines += [Line(n, status, detail) for n in names]

    def call(self, fname, tensors, *args, read_back=None, **kwargs):
        """``fname(*args, **kwargs)``, run by the learner's code: a tuple of ``len(tensors)`` results, or None.

        None when the function is missing, not implemented, raises, exits,
        hangs, or returns the wrong number of values; one line says so (once
        per function, however often it is called). Array arguments the call
        changed in place get a line each.
        """
        reply = self.learner.call(fname, args, kwargs, read_back)
        if reply.kind != "returned":
            if fname not in self._told and reply is not self._gone:
                status = TODO if reply.kind == "todo" else WRONG
                detail = (f"(returns {', '.join(tensors)})" if reply.kind == "todo" else
                          f"{fname} {reply.message}" if reply.kind in ("raised", "exit") else
                          reply.message if reply.kind == "missing" else
                          f"{reply.message}; the checks after it were not run")  # timeout, died
                self.add([fname], status, detail)
            self._told.add(fname)
            self._gone = self.learner.gone
            return None
        self.extra = reply.extra
        names = self.learner.signatures.get(fname, [])
        for key, after in reply.inputs.items():
            before = args[key] if isinstance(key, int) else kwargs[key]
            if not (isinstance(after, np.ndarray) and after.shape == before.shape
                    and np.array_equal(after, before, equal_nan=True)):
                name = key if isinstance(key, str) else names[key] if key < len(names) else f"argument {key + 1}"
                if (fname, name) in self._told:
                    continue  # (a function called several times: said once)
                self._told.add((fname, name))
                self.add([f"{name} (an input)"], WRONG,
                         f"was changed in place by {fname} ({name}[...] = ..., {name} *= ...): the caller "
                         f"still needs it; compute a new array (np.where, or {name}.copy() first)")
        result = reply.value
        if len(tensors) == 1:
            if isinstance(result, (tuple, list)):
                numbers = all(isinstance(v, np.ndarray) and v.ndim == 0 for v in result)
                self.add(tensors, WRONG, f"{fname} returned a {type(result).__name__} of {len(result)} " + (
                    "numbers where one array belongs: np.array(...) of them, or better, array arithmetic"
                    if numbers else f"values; it returns one array: return {tensors[0]} alone"))
                return None
            return (result,)
        if not isinstance(result, (tuple, list)) or len(result) != len(tensors):
            got = (f"{len(result)} values" if isinstance(result, (tuple, list))
                   else "None" if result is None else
                   result.description if isinstance(result, Opaque) else "one array")
            self.add([fname], WRONG, f"{fname} must return ({', '.join(tensors)}); it returned {got}")
            return None
        return tuple(result)

    def call_by_name(self, fname, tensors, available, **kwargs):
        """Call ``fname`` with the arguments it names (by its signature), taken from ``available``."""
        wanted = self.learner.signatures.get(fname, [])
        return self.call(fname, tensors, **{k: v for k, v in available.items() if k in wanted}, **kwargs)

    def check(self, tensor, got, ref, **kwargs):
        """Judge ``got`` (see ``judge``), add its line, and return whether it is right."""
        self.lines.append(Line(tensor, *judge(got, ref, **kwargs)))
        return self.lines[-1].status == OK


# ------------------------------------------------------------------ the stub and its solution


def fill(stub_text, bodies):
    """The stub's text with the ``raise NotImplementedError`` line of each function in ``bodies``
    replaced by that body (indented as a function body)."""
    lines = stub_text.splitlines()
    for node in ast.parse(stub_text).body:
        if isinstance(node, ast.FunctionDef) and node.name in bodies:
            (raise_line,) = [n.lineno for n in ast.walk(node) if isinstance(n, ast.Raise)]
            lines[raise_line - 1] = textwrap.indent(textwrap.dedent(bodies[node.name]).strip("\n"), "    ")
    return "\n".join(lines) + "\n"


def solution_text(exercise, stub_text):
    """Each function of ``exercise`` as it passes: its stub's definition with the solution's body."""
    filled = fill(stub_text, exercise.solution)
    tree = ast.parse(filled)
    lines = filled.splitlines()
    parts = [f"# {exercise.file}: paste each function over its stub"]
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in exercise.solution:
            parts.append("\n".join(lines[node.lineno - 1:node.end_lineno]))
    return "\n\n\n".join(parts) + "\n"
