"""glibc's malloc told to keep the memory of freed big buffers, for processes that stream bytes.

Why: stdio crosses in buffers of a MiB (a frame received or sent, a pipe's read, a log's read).
glibc serves each allocation that big with a fresh ``mmap`` (or trims the freed top of its heap
back to the kernel), so every MiB costs 256 page faults, each zeroing a page, and the unmap:
measured here, 1.0 of the 1.5 ms of client CPU per MiB of a framed WriteInput, and as much in
the daemon. Raising the mmap threshold above those buffers and the trim threshold well above
that makes a freed MiB serve the next one. The cost is a process that keeps up to
``TRIM_BYTES`` of freed heap after a burst, instead of returning it at once.

Only glibc has ``mallopt`` with these parameters; elsewhere this does nothing. The daemon sets it
at start-up; a client when it first sends or receives a big frame (``once``), so that a one-shot
command never pays for importing ctypes (~1.3 ms on an idle machine): it is imported here, by
the function that needs it, not with the module, which every client imports.
"""

from __future__ import annotations

import functools

#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap (and are reused): frames are 1 MiB, replies up to
#: 4 MiB per stream (two streams), with headroom. glibc caps it at 32 MiB on 64-bit.
MMAP_FROM_BYTES = 16 << 20
#: Freed memory at the top of a heap beyond this goes back to the kernel.
TRIM_BYTES = 64 << 20


def keep_freed_buffers() -> bool:
    """Set both thresholds; False where this is not glibc (nothing changed)."""
    import ctypes

    try:
        # The process's own symbols, libc's among them: ``ctypes.util`` would cost ~20 ms to import.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_FROM_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES))


@functools.cache
def once() -> bool:
    """``keep_freed_buffers`` the first time only (a process streaming frames calls it per frame)."""
    return keep_freed_buffers()
