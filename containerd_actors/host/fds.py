"""Closing file descriptors on cleanup paths, where a failed close has nobody to tell; and reading a
non-blocking pipe under trio.

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


async def read_when_ready(fd: int, size: int) -> bytes:
    """One read of the non-blocking ``fd`` (b"": end of file), waiting under trio until it is
    readable. trio is imported only here: the reaper closes fds with this module but runs no trio.
    """
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            import trio

            await trio.lowlevel.wait_readable(fd)
