"""The learner's code, run apart from the grader: a child process per exercise file.

The grader (the parent) never imports the learner's file. A child process
(``multiprocessing``'s forkserver context, spawn where there is none: never a
fork of the grader) loads it and calls its functions when the parent asks,
one call at a time; the parent computes
every reference value from its own data and sends the child copies. What the
learner's code does to its process (an endless loop, a sleep, a stray thread,
``exit()``, ``os._exit``, a changed global or an npvae object it was handed)
cannot reach the grader's values, its output or its exit code.

- Time: one limit for the whole exercise (``DEFAULT_TIMEOUT``, ``--timeout``),
  counting the time the learner's code takes (loading the file and every
  call), not the child's start nor the grader's own work; when it runs out
  the child is killed and the line names the function that had not returned
  and how long it ran.
- Memory: on Linux the child's address space is capped (``RLIMIT_AS``) at
  what it holds after loading numpy plus ``MEMORY_LIMIT``; a larger array is a
  ``MemoryError`` in the learner's code.
- What comes back is plain data only (``sanitize``): arrays of numbers
  (copies, never views or subclasses), tuples and lists of them, None, or an
  ``Opaque`` description of anything else; an array of more than
  ``MAX_ELEMENTS`` numbers comes back as its shape alone.
- What the learner's code prints goes to a file the parent shows under the
  exercise's lines.
"""

import multiprocessing
import os
import signal
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_TIMEOUT = 30.0      # seconds for one exercise file, loading and every call
MEMORY_LIMIT = 2 * 2**30    # bytes of address space the learner's code may add (Linux)
STARTUP_LIMIT = 120.0      # seconds for the child to start, before the time limit counts
MAX_ELEMENTS = 10**7        # a larger returned array comes back as its shape alone
MAX_ITEMS = 64              # a longer returned tuple or list comes back described
OUTPUT_BYTES = 8192         # of the learner's printed output, shown under the lines


@dataclass(frozen=True)
class Opaque:
    """A value the learner's code returned that is no array of numbers, described in words."""

    description: str        # "a str", "an array of dtype object (Python objects)", ...
    shape: tuple = None     # the shape of an array too large to bring back


@dataclass(frozen=True)
class Built:
    """An argument the child builds itself with ``builder(*args)`` (an npvae model: never pickled).

    ``builder`` is a module-level function, so the parent can call it too and
    hold its own, untouched, copy.
    """

    builder: object
    args: tuple = ()

    def make(self):
        return self.builder(*self.args)


@dataclass
class Reply:
    """What became of one request to the child.

    ``kind``: "loaded" (value: {function: its parameter names}), "returned"
    (value: the sanitized result; ``inputs``: the array arguments after the
    call, by position or keyword; ``extra``: what ``read_back`` found),
    "todo" (NotImplementedError), "raised", "exit", "missing" (no such
    function), "timeout" or "died" (the child is gone). ``message`` is the
    sentence for a line.
    """

    kind: str
    value: object = None
    inputs: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    message: str = ""


# ------------------------------------------------------------------ the child


def sanitize(value, depth=0):
    """``value`` as plain data the grader can judge: see the module docstring.

    A tuple or list (a tuple subclass too) becomes a tuple or list of
    sanitized items, one level deep; anything else an array of numbers or
    an ``Opaque`` description. Nothing of the learner's types comes back.
    """
    kind = type(value).__name__
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        if depth or len(value) > MAX_ITEMS:
            return Opaque(f"a {kind} of {len(value)} values")
        return (list if isinstance(value, list) else tuple)(sanitize(v, depth + 1) for v in value)
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except BaseException as err:  # a learner's __array__, __float__ or __len__ that raise
            return Opaque(f"a {kind}, which is no array: converting it raised {type(err).__name__}: "
                          f"{_text(err)}")
        if value.dtype.kind not in "biufc":
            return Opaque(f"a {kind}")
    if value.size > MAX_ELEMENTS:  # (a broadcast view of 10^12 zeros is not copied)
        return Opaque(f"an array of {value.size:,} numbers", value.shape)
    if value.dtype.kind not in "biufc":
        return Opaque(f"an array of dtype {value.dtype}" + (" (Python objects)" if value.dtype.kind == "O" else ""))
    try:
        return np.array(value, copy=True, subok=False)
    except BaseException as err:
        return Opaque(f"a {kind} that could not be copied: {type(err).__name__}: {_text(err)}")


def _text(err):
    try:
        return " ".join(str(err).split())
    except BaseException:
        return "(its message could not be printed)"


def _where(err, path):
    """", at FILE line N: CODE" for the last frame of ``err``'s traceback in the learner's file."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == path]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {Path(path).name} line {f.lineno}" + (f": {f.line.strip()}" if f.line else "")


def _run(path, thunk):
    """``thunk()``'s result as a Reply: returned, todo, raised or exit."""
    try:
        return Reply("returned", thunk())
    except NotImplementedError as err:
        return Reply("todo", message=_text(err))
    except SystemExit as err:
        return Reply("exit", message=f"called exit() (SystemExit, code {err.code!r}){_where(err, path)}: "
                     "an exit never counts as a pass; remove it")
    except MemoryError as err:
        return Reply("raised", message=f"raised MemoryError{_where(err, path)}: the grader lets your code "
                     f"use {MEMORY_LIMIT / 2**30:g} GiB more memory; an array far larger than the exercise's?")
    except BaseException as err:  # the learner's bug, reported as a line
        return Reply("raised", message=f"raised {type(err).__name__}: {_text(err)}{_where(err, path)}")


def _isolate(output, memory):
    """The child's own session, its output into the file ``output``, its memory capped (Linux)."""
    if hasattr(os, "setsid"):
        os.setsid()  # a process group of its own: the parent kills it and anything it started
    fd = os.open(output, os.O_WRONLY | os.O_APPEND)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    if memory and sys.platform.startswith("linux"):
        import resource

        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = used + memory if hard == resource.RLIM_INFINITY else min(hard, used + memory)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _call(module, path, fname, args, kwargs, read_back):
    fn = getattr(module, fname, None)
    if not callable(fn):
        return Reply("missing", message=f"the file has no function {fname}")
    args = [a.make() if isinstance(a, Built) else a for a in args]
    kwargs = {k: a.make() if isinstance(a, Built) else a for k, a in kwargs.items()}
    with np.errstate(all="ignore"):  # the learner's overflows show as inf in the lines
        reply = _run(path, lambda: fn(*args, **kwargs))
    if reply.kind == "returned":
        reply.value = sanitize(reply.value)
        reply.inputs = {key: sanitize(a) for key, a in [*enumerate(args), *kwargs.items()]
                        if isinstance(a, np.ndarray)}
        if read_back is not None:
            try:
                reply.extra = {k: sanitize(v, 1) for k, v in read_back(*args, **kwargs).items()}
            except BaseException as err:
                reply.extra = {"": Opaque(f"unreadable after the call: {type(err).__name__}: {_text(err)}")}
    return reply


def serve(conn, path, output, memory):
    """The child: load the learner's file, then answer ``(fname, args, kwargs, read_back)`` requests."""
    _isolate(output, memory)
    conn.send(Reply("ready"))  # the time limit counts from here: the learner's time, not the start's
    module = types.ModuleType(f"npvae_exercise_{Path(path).stem}")
    module.__file__ = path
    source = Path(path).read_text(encoding="utf-8")
    reply = _run(path, lambda: exec(compile(source, path, "exec"), module.__dict__))
    if reply.kind == "returned":
        reply = Reply("loaded", {name: _parameters(fn) for name, fn in vars(module).items()
                                 if isinstance(fn, types.FunctionType)})
    conn.send(reply)
    while reply.kind == "loaded":
        try:
            request = conn.recv()
        except (EOFError, OSError):
            break
        if request is None:
            break
        answer = _call(module, path, *request)
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send(answer)
    os._exit(0)  # whatever threads the learner left running


def _parameters(fn):
    import inspect

    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


# ------------------------------------------------------------------ the parent


def _context():
    """forkserver where there is one (each child a fork of a server that has loaded numpy and npvae:
    fast), else spawn (a fresh interpreter); never a fork of the grader itself."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["npvae.exercises"])
        return context
    return multiprocessing.get_context("spawn")


class Learner:
    """The learner's file, loaded in a child process: ``call`` its functions, within one time limit.

    ``loaded`` is the loading's Reply ("loaded", or why not); once the child
    is gone (the time ran out, it exited or died), every later ``call``
    returns the same "timeout" or "died" Reply without asking it.
    """

    def __init__(self, path, timeout=DEFAULT_TIMEOUT, memory=MEMORY_LIMIT):
        self.path, self.timeout, self.gone = Path(path), timeout, None
        handle, self._output = tempfile.mkstemp(prefix="npvae-exercise-", suffix=".txt")
        os.close(handle)
        context = _context()
        self._conn, child = context.Pipe()
        self._process = context.Process(target=serve, daemon=True, name=f"npvae exercise {self.path.name}",
                                        args=(child, str(self.path.resolve()), self._output, memory))
        self._used = 0.0      # seconds spent waiting on the learner's code, against the limit
        self._process.start()
        child.close()
        if not self._conn.poll(STARTUP_LIMIT):  # (a machine so busy that a process cannot start)
            self._kill()
            self.gone = Reply("died", message=f"the process for your code did not start within "
                              f"{STARTUP_LIMIT:g} s; nothing of yours ran")
        self.loaded = self.gone or self._receive("loading the file", "the file did not finish loading",
                                                 ready=True)
        self.signatures = self.loaded.value if self.loaded.kind == "loaded" else {}

    def call(self, fname, args=(), kwargs=None, read_back=None):
        """The Reply of ``fname(*args, **kwargs)`` in the child; ``read_back(*args, **kwargs)``, run
        there after the call, returns {name: array} to bring back (a model's grads)."""
        if self.gone:
            return self.gone
        try:
            self._conn.send((fname, tuple(args), dict(kwargs or {}), read_back))
        except (BrokenPipeError, OSError):
            return self._receive(f"running {fname}", f"{fname} did not return")
        return self._receive(f"running {fname}", f"{fname} did not return")

    def _receive(self, doing, stopped, ready=False):
        if ready:  # the child's "ready", sent before it loads the learner's file
            try:
                self._conn.recv()
            except (EOFError, OSError):
                return self._died(doing)
        began = time.monotonic()
        left = self.timeout - self._used
        arrived = left > 0 and self._conn.poll(left)
        self._used += time.monotonic() - began
        if arrived:
            try:
                return self._conn.recv()
            except (EOFError, OSError):
                pass
        else:
            self._kill()
            self.gone = Reply("timeout", message=(
                f"{stopped}: stopped after {time.monotonic() - began:.1f} s, when the time limit of "
                f"{self.timeout:g} s for the exercise ran out (--timeout SECONDS changes it): an endless "
                "loop (a while whose counter never changes), a sleep, or input() waiting"))
            return self.gone
        return self._died(doing)

    def _died(self, doing):
        self._process.join(5)
        code = self._process.exitcode
        if code == 0:
            how = "with exit code 0 (os._exit(0)? an exit never counts as a pass)"
        elif code is not None and code < 0:
            how = f"killed by signal {-code}" + (" (SIGKILL: out of memory?)" if -code == 9 else "")
        else:
            how = f"with exit code {code}"
        self._kill()
        self.gone = Reply("died", message=f"the process running your code ended while {doing}, {how}")
        return self.gone

    def _kill(self):
        if hasattr(os, "killpg") and self._process.pid:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)  # the child's own group (os.setsid)
            except OSError:
                pass
        if self._process.is_alive():
            self._process.kill()
        self._process.join(5)

    def close(self):
        """Stop the child; return what the learner's code printed (at most ``OUTPUT_BYTES``)."""
        if not self.gone:
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._process.join(2)
        self._kill()
        self._conn.close()
        try:
            with open(self._output, "rb") as f:
                printed = f.read(OUTPUT_BYTES + 1)
        finally:
            os.unlink(self._output)
        text = printed[:OUTPUT_BYTES].decode("utf-8", "replace")
        return text + ("\n... (more output cut)" if len(printed) > OUTPUT_BYTES else "")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.output = self.close()
