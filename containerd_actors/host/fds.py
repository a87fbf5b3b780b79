"""Closing file descriptors on cleanup paths, where a failed close has nobody to tell.

A cleanup path closes descriptors that may already be closed (EBADF) or that the kernel has
already released for a peer that went away; raising there would hide the error that led to the
cleanup, and there is nothing a caller could do about it anyway.
"""

from __future__ import annotations

import os


def close_quietly(*fds: int) -> None:
    """Close each descriptor, ignoring the ones that cannot be closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
