"""npvae's own exceptions: every failure a user can cause is one of these.

Each subclasses the built-in exception a caller would expect (``ValueError``
for bad values, ``RuntimeError`` for divergence), so ``except ValueError``
still works, and ``except NpvaeError`` catches all of npvae's clear errors.
"""


class NpvaeError(Exception):
    """Base class of every error npvae raises on purpose."""


class ConfigError(NpvaeError, ValueError):
    """A bad argument: wrong shape, dtype, size or name."""


class DataError(NpvaeError, ValueError):
    """Bad data: a corrupt or mismatched file, NaN, out-of-range pixels."""


class CheckpointError(NpvaeError, ValueError):
    """A checkpoint that cannot be loaded: truncated, foreign or unsafe."""


class FileError(NpvaeError, OSError):
    """A file or folder npvae cannot read or write: a full disk, a read-only folder, a path
    under a file, a folder where a file should be. The message names the path and the cause."""


class DivergenceError(NpvaeError, RuntimeError):
    """Training produced a NaN or infinite loss or gradient."""
