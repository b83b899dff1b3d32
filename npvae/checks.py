"""Argument checks shared by the public entry points: one-line ConfigErrors
that name the argument and its value."""

import math

import numpy as np

from .errors import ConfigError


def is_int(value):
    """True for Python and NumPy integers (not bools)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def positive_int(name, value):
    """``value`` as an int, or a ConfigError unless it is an integer >= 1."""
    if not is_int(value) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a positive integer")
    return int(value)


def number(name, value, positive=False):
    """``value`` as a float, or a ConfigError unless finite and >= 0 (> 0 if ``positive``)."""
    ok = (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
          and math.isfinite(value) and (value > 0 if positive else value >= 0))
    if not ok:
        raise ConfigError(f"{name}={value!r} must be a {'positive' if positive else 'non-negative'}"
                          " number")
    return float(value)


def sizes(name, value):
    """Layer sizes such as (400,) or [128, 64] as a list of ints, or a ConfigError unless
    ``value`` is a sequence of positive integers (empty: no hidden layer)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{name}={value!r} must be a sequence of positive integers, e.g. (400,)")
    return [positive_int(name, n) for n in value]
