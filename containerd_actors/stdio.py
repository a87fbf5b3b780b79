"""Container stdio as anonymous pipes, drained into log files.

Pipes (not files or FIFOs opened by path) are what CRIU can checkpoint, and a pipe whose read end
is held by the daemon means the container never blocks on output nobody reads. The daemon keeps
the parent ends; the child ends go to runc and are closed here once runc has started.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import trio

from .runc import Stdio, close_quietly

#: A log file is rotated to ``<name>.1`` when it grows past this, so a chatty container
#: cannot fill the state directory. One rotated generation is kept.
LOG_ROTATE_BYTES = 64 << 20
_READ_CHUNK = 1 << 16


@attrs.define
class ContainerPipes:
    """Both ends of the container's three pipes until runc has taken its ends."""

    stdin_read: int
    stdin_write: int
    stdout_read: int
    stdout_write: int
    stderr_read: int
    stderr_write: int

    @classmethod
    def create(cls) -> ContainerPipes:
        """os.pipe() ends are close-on-exec, so a concurrent runc never inherits another container's pipe."""
        stdin_read, stdin_write = os.pipe()
        stdout_read, stdout_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        return cls(stdin_read, stdin_write, stdout_read, stdout_write, stderr_read, stderr_write)

    def child_stdio(self) -> Stdio:
        return Stdio(self.stdin_read, self.stdout_write, self.stderr_write)

    def close_child_ends(self) -> None:
        close_quietly(self.stdin_read, self.stdout_write, self.stderr_write)

    def close_all(self) -> None:
        close_quietly(
            self.stdin_read,
            self.stdin_write,
            self.stdout_read,
            self.stdout_write,
            self.stderr_read,
            self.stderr_write,
        )


class RotatingLog:
    """Append-only log file with one rotated generation; writes are unbuffered so nothing is held back."""

    def __init__(self, path: Path, rotate_bytes: int = LOG_ROTATE_BYTES) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def write(self, data: bytes) -> None:
        if self._size + len(data) > self.rotate_bytes and self._size > 0:
            self._rotate()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = 0

    def close(self) -> None:
        close_quietly(self._fd)


async def drain_to_log(read_fd: int, log: RotatingLog) -> None:
    """Copy everything from a pipe into a log until every writer has closed it.

    The fd and the log are owned by this task from here on and closed when the pipe reaches EOF.
    """
    os.set_blocking(read_fd, False)
    try:
        while True:
            try:
                data = os.read(read_fd, _READ_CHUNK)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(read_fd)
                continue
            if not data:
                return
            log.write(data)
    finally:
        log.close()
        # Tell trio the fd is going away before closing it, as wait_readable requires.
        trio.lowlevel.notify_closing(read_fd)
        close_quietly(read_fd)
