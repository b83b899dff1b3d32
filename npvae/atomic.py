"""Atomic file writes: a file is replaced whole or not at all.

Every file npvae writes (checkpoints, metrics, configs, figures) goes through
``atomic_write``: the bytes go to a temporary file in the target's folder,
which is flushed, fsync'd and renamed over the target (``os.replace`` is
atomic on one file system). The file gets the permissions the user's umask
gives, as ``open`` would (not ``mkstemp``'s 0600). A crash, a full disk or a SIGKILL while writing
leaves the previous file intact and readable.
"""

import errno
import os
import tempfile
from pathlib import Path

from .errors import ConfigError, FileError, NpvaeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
"""The first eight bytes of every PNG file."""


def atomic_write(path, write):
    """Call ``write(f)`` on a temporary binary file, then move it onto ``path``.

    The temporary file lives in ``path``'s folder (a rename across file
    systems would not be atomic), is flushed and fsync'd before the rename,
    and is removed if anything fails, leaving ``path`` as it was. An OS
    failure (a full disk, a read-only or missing folder, ``path`` a folder)
    is a one-line ``FileError`` naming ``path`` and the cause.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _file_error(path, err) from err
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp's 0600, made what open() would have made
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError) and not isinstance(err, NpvaeError):
            raise _file_error(path, err) from err
        raise
    _fsync_dir(path.parent)


def check_picture_path(path, flag="--out"):
    """Refuse a picture's path (a command's ``--out``) that writing would destroy something at.

    Refused, in one line: a folder; a name a run folder holds its run in
    (``config.json``, ``metrics.csv``, ``checkpoint.npz``, the lock file:
    ``npvae.runs.RUN_FILES``), wherever it is; an existing file that is not a
    PNG (a picture replaces only a picture). A file that cannot be read to
    tell is a ``FileError``. The write itself then goes through
    ``atomic_write``, so a failure leaves the old file whole and no empty one.
    """
    from .runs import LOCK_NAME, RUN_FILES   # (runs imports this module)

    path = Path(path)
    if path.name in (*RUN_FILES, LOCK_NAME):
        raise ConfigError(f"{flag} {path}: {path.name} is a run folder's own file; a picture "
                          "never replaces it: choose another name")
    try:
        if path.is_dir():
            raise ConfigError(f"cannot write {path}: is a folder (name a PNG file for {flag})")
        if not path.exists():
            return path
        with open(path, "rb") as f:
            head = f.read(len(PNG_SIGNATURE))
    except OSError as err:
        error = FileError(f"cannot read {path} (to check it is a PNG before replacing it): "
                          f"{err.strerror or err}")
        error.errno = err.errno
        raise error from err
    if head != PNG_SIGNATURE:
        raise ConfigError(f"{flag} {path} exists and is not a PNG; a picture replaces only a "
                          "PNG: choose another name")
    return path


def write_picture(path, write, flag="--out"):
    """Write a picture to ``path`` (``check_picture_path``, its folder made, ``atomic_write``)."""
    path = check_picture_path(path, flag)
    make_folder(path.parent)
    atomic_write(path, write)
    return path


def make_folder(path):
    """Create folder ``path`` (and its parents) if missing, with the umask's permissions; an OS
    failure (a path under a file, a read-only place) is a one-line ``FileError``."""
    path = Path(path)
    try:
        for folder in (path, *path.parents):
            if folder.exists() and not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a file, not a folder")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        error = FileError(f"cannot create folder {path}: {err.strerror or err}")
        error.errno = err.errno
        raise error from err
    return path


def _file_error(path, err):
    """A one-line ``FileError`` naming ``path`` and the OS's reason."""
    error = FileError(f"cannot write {path}: {err.strerror or err}")
    error.errno = err.errno
    return error


def umask():
    """The process's umask, read without changing it where the OS allows (Linux's
    ``/proc/self/status``; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
