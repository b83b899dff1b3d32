"""Atomic file writes: a file is replaced whole or not at all.

Every file npvae writes (checkpoints, metrics, configs, figures) goes through
``atomic_write``: the bytes go to a temporary file in the target's folder,
which is flushed, fsync'd and renamed over the target (``os.replace`` is
atomic on one file system). A crash, a full disk or a SIGKILL while writing
leaves the previous file intact and readable.
"""

import os
import tempfile
from pathlib import Path


def atomic_write(path, write):
    """Call ``write(f)`` on a temporary binary file, then move it onto ``path``.

    The temporary file lives in ``path``'s folder (a rename across file
    systems would not be atomic), is flushed and fsync'd before the rename,
    and is removed if anything fails, leaving ``path`` as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder):
    """Make the rename itself durable (where the OS allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
