"""What a long computation shows, and how Ctrl-C stops it: progress bars, durations, interrupts.

Every progress bar of npvae is a tqdm bar on stderr (``bar``), so stdout
keeps only the results: a training epoch's (``npvae.train.Run``) and the
importance-weighted bound's (``ProgressBar``, which also says how long the
whole computation will take when that is long).

Interrupts. During training, Ctrl-C (SIGINT) is deferred to the end of the
current step (``deferred_interrupts``): the run then saves a checkpoint of
that position and raises ``Interrupted`` (a ``KeyboardInterrupt``), which the
command line turns into exit code 130 and the line that resumes it. A second
Ctrl-C interrupts at once, without saving.
"""

import signal
import sys
import threading
import time
from contextlib import contextmanager


def bar(desc, total, *, initial=0, unit="it", file=None, **options):
    """A tqdm progress bar on ``file`` (default stderr) that fits the terminal's width."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit,
                file=sys.stderr if file is None else file, dynamic_ncols=True, **options)


def format_duration(seconds):
    """``"45 s"``, ``"3 min 10 s"`` or ``"1 h 05 min"``, for a notice."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ProgressBar:
    """A ``progress(done, total)`` callback: a tqdm bar with its ETA, and a notice.

    The first chunk pays for warming up (first allocations, BLAS threads
    waking), so the rate is timed on the second: after it, if the whole run
    is expected to take longer than ``notice_after`` seconds, one line says
    so before the bar appears:

        importance-weighted bound, k=5000: about 3 min 10 s in all (from the first chunks)

    Both go to ``file`` (default: stderr, so stdout keeps only the results).
    ``clock``: a function returning seconds (tests pass a fake one).
    Call ``close()`` when the run ends.
    """

    def __init__(self, desc, *, notice_after=10.0, file=None, clock=time.perf_counter):
        self.desc, self.notice_after, self.clock = desc, notice_after, clock
        self.file = sys.stderr if file is None else file
        self.started, self.first, self.bar = clock(), None, None

    def __call__(self, done, total):
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            return
        now = self.clock()
        if self.first is None and done < total:
            self.first = (now, done)
            return
        if self.first is not None:
            seconds, samples = now - self.first[0], done - self.first[1]
            expected = now - self.started + seconds / samples * (total - done)
            if expected > self.notice_after:
                print(f"{self.desc}: about {format_duration(expected)} in all "
                      "(from the first chunks)", file=self.file, flush=True)
        self.bar = bar(self.desc, total, initial=done, unit="sample", unit_scale=True,
                       file=self.file)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C after saving a checkpoint of its position."""

    def __init__(self, run_dir, epoch, step):
        super().__init__(f"interrupted at epoch {epoch}, step {step}; checkpoint saved in "
                         f"{run_dir}")
        self.run_dir, self.epoch, self.step = run_dir, epoch, step


@contextmanager
def deferred_interrupts(owner):
    """Within the block, Ctrl-C sets ``owner.stop_requested = True`` instead of raising.

    The loop checks the flag after each step and stops cleanly there; a
    second Ctrl-C (the flag already set) raises ``KeyboardInterrupt`` at once.
    Only the main thread receives signals, and a handler installed by someone
    else (not Python's default) is left alone.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def handler(signum, frame):
        if owner.stop_requested:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
        owner.stop_requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
