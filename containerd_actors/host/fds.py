"""Closing file descriptors on cleanup paths, where a failed close has nobody to tell; reading a
non-blocking pipe under trio; and reading a small file whole, cheaply.

A cleanup path closes descriptors that may already be closed (EBADF) or that the kernel has
already released for a peer that went away; raising there would hide the error that led to the
cleanup, and there is nothing a caller could do about it anyway.
"""

from __future__ import annotations

import errno
import os

#: The errors of a process (EMFILE) or of the whole system (ENFILE) out of file descriptors.
FD_LIMIT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})


def is_fd_limit_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FD_LIMIT_ERRNOS


def describe_os_error(exc: OSError) -> str:
    """``exc`` as a reply's message; out of descriptors, it names the limit that was hit, since
    "[Errno 24] Too many open files" alone does not tell an operator which knob to turn."""
    if exc.errno == errno.EMFILE:
        import resource  # here: the reaper imports this module and stays small

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return f"too many open files (RLIMIT_NOFILE {soft}, hard {hard}): {exc}"
    if exc.errno == errno.ENFILE:
        return f"too many open files in the system (fs.file-max): {exc}"
    return str(exc)


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


#: One read takes all of a file ``read_small`` is meant for (/proc stat lines, pid files, configs).
_SMALL_READ = 1 << 16


def read_small(path: str | os.PathLike[str]) -> bytes:
    """The whole of a small file by ``os.open`` and ``os.read``; raises OSError as ``open`` would.

    ``open(path).read()`` costs eight system calls here (fstat twice, an isatty ioctl, two seeks)
    and layers of io objects, against four; on the start path, where the daemon reads a /proc
    stat line, runc's pid file and the bundle's config for every container, that showed.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, _SMALL_READ):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
