"""Exercises: write a piece of the VAE by hand, and be told whether, and how, it is wrong.

The learner's files are ``tutorials/exercises/NN_name.py``, NN the number of
the tutorial they follow; each function body starts as ``raise
NotImplementedError``. ``npvae exercises check`` grades them:

- apart: each file is loaded and called in a child process of its own
  (``isolation``), with a time limit (30 s an exercise, ``--timeout``) and,
  on Linux, a memory limit; an endless loop, a sleep, a stray thread,
  ``exit()`` or ``os._exit`` is reported as such and never passes, and the
  exit code is the grader's alone;
- against its own references: the grader computes every right answer from
  its own data (npvae's implementation, and central differences for every
  gradient) and sends the learner's functions copies;
- strictly: a returned value must be a float64 array of the right shape,
  finite, and within 1e-8 of npvae's value or 1e-6 of the finite
  differences; a changed input array is a mistake of its own;
- helpfully: a wrong tensor is compared with the usual wrong answers (sign,
  a factor of 2, a transpose, a missing 1/B, the wrong axis, the variance
  for the standard deviation, a missing path, ...) and the mistake is named
  in one sentence; an exception is shown once, at the learner's file and line.

The package: ``judging`` (a tensor's verdict and diagnosis, ``Attempt``,
``Exercise``), ``isolation`` (the child process), one grader module per
tutorial or two (``layers``: 01-02, ``losses``: 03-04, ``reparam``: 05,
``adam``: 06, ``vae``: 07, ``iwae``: 10 and 14, ``conv``: 12,
``conditional``: 15, ``hvae``: 16, ``vq``: 17), ``catalogue`` (``EXERCISES``, in
tutorial order) and ``grading`` (files, printing, the exit code). The command's parser is in
``npvae/cli.py``.

Adding an exercise: one ``Exercise(...)`` entry in a grader module's
``EXERCISES`` (a new module is one more name in ``catalogue.MODULES``) and
one stub file ``tutorials/exercises/NN_name.py``. The entry names the
functions, the derivation's anchor, its ``checks(attempt)`` (call the
learner's functions with ``attempt.call``, judge with ``attempt.check``) and
a ``solution``: a body per function that passes when pasted into the stub
(tests/test_exercises.py pastes every one). A layer with npvae's interface
needs only ``layer_exercise(...)``.
"""

from .catalogue import EXERCISES
from .grading import check, grade_file
from .isolation import DEFAULT_TIMEOUT
from .judging import OK, PARTLY, TODO, WRONG, Attempt, Exercise, Line, judge
from .layers import layer_exercise

__all__ = ["EXERCISES", "DEFAULT_TIMEOUT", "OK", "PARTLY", "TODO", "WRONG", "Attempt", "Exercise", "Line",
           "check", "grade_file", "judge", "layer_exercise"]
