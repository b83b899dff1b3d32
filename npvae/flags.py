"""Every flag's check: the argparse types of ``npvae``'s flags, written once.

Each numeric, name and path flag of ``npvae.cli`` is checked by one of these
types when it is parsed; a bad value is the one-line error

    npvae: error: argument --seed: -1 is not a non-negative integer

``integer`` and ``real`` make a checked type for a range; ``text`` refuses an
empty value; ``choice`` takes one of the names a module owns
(``activations.ACTIVATIONS``, ``iwae.OBJECTIVES``, ...); ``int_list`` reads
``400`` or ``128,64``.
"""

import argparse
import math


def integer(low, high=None, what="a positive integer"):
    def check(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {what}" + (f" up to {high:,}" if high is not None else ""))
        return value
    check.__name__ = what  # (argparse names the type in some messages)
    return check


def real(low, high=None, low_open=False, what="a positive number"):
    def check(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = (math.isfinite(value) and (value > low if low_open else value >= low)
              and (high is None or value < high))
        if not ok:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value
    check.__name__ = what
    return check


def text(text):
    """A non-empty string (a path or a name)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value; name it")
    return text


def choice(names):
    """One of ``names`` (argparse type): the names come from the module that owns them."""
    def check(text):
        if text not in names:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(names)}")
        return text
    check.__name__ = "a name"
    return check


def int_list(text):
    """``"400"`` or ``"128,64"`` -> a tuple of ints (argparse type)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers, e.g. 400 or 128,64") from None


positive_int = integer(1)
non_negative_int = integer(0, what="a non-negative integer")
positive_number = real(0, low_open=True, what="a positive finite number")
non_negative_number = real(0, what="a non-negative finite number")
fraction = real(0, 1, low_open=True, what="a number between 0 and 1 (exclusive)")
