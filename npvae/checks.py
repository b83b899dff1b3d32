"""Argument checks shared by the public entry points: one-line ConfigErrors
that name the argument and its value."""

import math
import os

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


MODEL_DTYPES = ("float32", "float64", np.float32, np.float64)
"""The dtypes a model is built in, by name or by type."""


def one_of(name, value, choices):
    """``value``, or a ConfigError unless it is one of ``choices`` (the message names them)."""
    if not isinstance(value, (str, type(None), type, np.dtype)) or value not in choices:
        raise ConfigError(f"{name}={value!r} is unknown; choose one of "
                          f"{', '.join(str(c) for c in choices if isinstance(c, str))}")
    return value


def sizes(name, value):
    """Layer sizes such as (400,) or [128, 64] as a list of ints, or a ConfigError unless
    ``value`` is a sequence of positive integers (empty: no hidden layer)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{name}={value!r} must be a sequence of positive integers, e.g. (400,)")
    return [positive_int(name, n) for n in value]


# The largest model npvae builds unless told otherwise: 10^8 parameters are 400 MB in float32,
# and training holds four such arrays (parameters, gradients, Adam's two moments). It keeps a
# typo (--hidden 10000000) or a hostile config from asking for terabytes.
MAX_DEFLATE_RATIO = 1032
"""Deflate cannot inflate data more than this: a compressed file (a gzipped IDX file, a
checkpoint's member) that claims more is corrupt or a decompression bomb."""

MAX_PARAMETERS = 100_000_000
MAX_PARAMETERS_ENV = "NPVAE_MAX_PARAMETERS"


def max_parameters():
    """``MAX_PARAMETERS``, or the environment's ``NPVAE_MAX_PARAMETERS`` for those who mean it."""
    text = os.environ.get(MAX_PARAMETERS_ENV)
    if text is None:
        return MAX_PARAMETERS
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(f"{MAX_PARAMETERS_ENV}={text!r} must be a positive integer")
    return limit


def parameter_count(n):
    """``n`` (the parameters a model would have), or a ConfigError if beyond ``max_parameters()``."""
    limit = max_parameters()
    if n > limit:
        size = f"{n:,}" if n < 10**15 else f"about 10^{len(str(n)) - 1}"
        raise ConfigError(f"the model would have {size} parameters, more than the limit of "
                          f"{limit:,} (set {MAX_PARAMETERS_ENV} to allow more)")
    return n
