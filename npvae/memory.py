"""Where large arrays come from: the memory one training step frees, kept for the next.

NumPy takes each array's memory from the C library's ``malloc`` and gives
it back with ``free``. On Linux that is glibc's malloc, which by default
(its "dynamic threshold") serves a block above the largest one freed so far
straight from the operating system, and hands the top of its heap back to
the system as soon as more than twice that block is free there. A training
step of the conv preset allocates its column matrices (up to 29 MB at batch
128) and frees about 90 MB at its end, so the heap was handed back after
every step and the next step's arrays were faulted back in, page by page:
600 to 1,100 page faults and 3 to 12 ms of system time per step (of 55 to
95), none of it arithmetic. PyTorch's replica of the model had none.

``keep_freed_memory`` sets two of glibc's malloc parameters (``mallopt``):
blocks of up to ``MMAP_THRESHOLD`` come from the heap, and the heap is
trimmed only when more than ``TRIM_THRESHOLD`` of it is free. A step then
reuses the memory the step before it freed: ``npvae train --preset conv``
for 2 epochs of 10,000 digits spent 0.8 to 0.9 s in the kernel with 38,000
page faults, against 2.7 to 2.9 s and 250,000 with glibc's defaults
(``benchmarks/README.md``, "Issue 22, fourth pass"). The
process keeps up to ``TRIM_THRESHOLD`` of freed memory instead of returning
it; larger arrays (a whole dataset) still come from and go back to the
system at once. The arrays and their values are the same: only where their
memory comes from changes.

``import npvae`` calls it (``configure``) unless ``NPVAE_KEEP_MEMORY=0``.
Elsewhere than glibc (macOS, Windows, musl) it does nothing.
"""

import ctypes
import os

ENVIRONMENT = "NPVAE_KEEP_MEMORY"
MMAP_THRESHOLD = 64 << 20    # bytes: blocks up to this come from the heap (M_MMAP_THRESHOLD)
TRIM_THRESHOLD = 256 << 20   # bytes of free heap kept, not handed back (M_TRIM_THRESHOLD)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt's parameter numbers (malloc.h)


def keep_freed_memory():
    """Have glibc's malloc keep freed memory for reuse (module docstring); return whether it
    took the settings (False where the C library is not glibc)."""
    if not _glibc():
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _glibc():
    """Whether this process runs on glibc (its version string, as ``getconf`` gives it)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):   # no confstr, or not a glibc name
        return False


def configure():
    """``keep_freed_memory()`` unless ``NPVAE_KEEP_MEMORY`` is 0; called by ``import npvae``."""
    if os.environ.get(ENVIRONMENT, "1").strip() == "0":
        return False
    return keep_freed_memory()
