"""Container stdio as anonymous pipes, drained into log files.

Pipes (not files or FIFOs opened by path) are what CRIU can checkpoint, and a pipe whose read end
is held by the daemon means the container never blocks on output nobody reads. The daemon keeps
the parent ends; the child ends go to runc and are closed here once runc has started.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from containerd_actors.host.fds import close_quietly
from containerd_actors.runc.driver import Stdio

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
    """Append-only log file with one rotated generation, addressed by logical byte offsets.

    Writes are unbuffered so nothing is held back. A logical offset counts bytes since the log was
    opened, across rotation, so a reader that keeps its offset never reads a byte twice or skips
    one while it stays within the retained window (the current file plus ``<name>.1``).
    ``on_change`` is called after every write and at the end, so readers can wait without polling.
    """

    def __init__(
        self,
        path: Path,
        rotate_bytes: int = LOG_ROTATE_BYTES,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.rotated_path = path.with_name(path.name + ".1")
        self.rotate_bytes = rotate_bytes
        self._on_change = on_change
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size
        #: Logical offset of the first byte of the current file.
        self.base = 0
        #: Bytes of this log in the rotated generation (0 until the first rotation).
        self._previous_size = 0
        #: True once the writer has closed the log: ``end`` is final.
        self.finished = False

    @property
    def end(self) -> int:
        """Logical offset just past the last byte written."""
        return self.base + self._size

    @property
    def start(self) -> int:
        """Oldest logical offset still on disk."""
        return self.base - self._previous_size

    def write(self, data: bytes) -> None:
        if self._size + len(data) > self.rotate_bytes and self._size > 0:
            self._rotate()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)
        if self._on_change is not None:
            self._on_change()

    def _rotate(self) -> None:
        os.close(self._fd)
        os.replace(self.path, self.rotated_path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.base += self._size
        self._previous_size = self._size
        self._size = 0

    def close(self) -> None:
        """The writer is done (pipe EOF); readers see ``finished`` and the final ``end``."""
        if self.finished:
            return
        self.finished = True
        close_quietly(self._fd)
        if self._on_change is not None:
            self._on_change()

    def read(self, offset: int, max_bytes: int) -> tuple[int, bytes]:
        """Bytes from ``offset`` (moved up to ``start`` if rotated away): ``(actual_offset, data)``.

        Returns at most the rest of one generation; call again for more. Synchronous: within one
        trio thread no write can interleave, so base and sizes are consistent with the files.
        """
        offset = max(offset, self.start)
        if offset >= self.end or max_bytes <= 0:
            return offset, b""
        if offset < self.base:
            path, position, available = self.rotated_path, offset - self.start, self.base - offset
        else:
            path, position, available = self.path, offset - self.base, self.end - offset
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return offset, os.pread(fd, min(max_bytes, available), position)
        finally:
            os.close(fd)

    def _read_range(self, low: int, high: int) -> bytes:
        parts = []
        while low < high:
            low, data = self.read(low, high - low)
            if not data:
                break
            parts.append(data)
            low += len(data)
        return b"".join(parts)

    def tail_offset(self, lines: int) -> int:
        """Offset where the last ``lines`` lines start (a final newline does not start a new line)."""
        end = self.end
        if lines == 0:
            return end
        count = 0
        position = end
        while position > self.start:
            low = max(self.start, position - _READ_CHUNK)
            chunk = self._read_range(low, position)
            index = len(chunk)
            while True:
                index = chunk.rfind(b"\n", 0, index)
                if index < 0:
                    break
                if low + index == end - 1:
                    continue  # the terminator of the last line
                count += 1
                if count == lines:
                    return low + index + 1
            position = low
        return self.start


async def drain_to_log(read_fd: int, log: RotatingLog) -> None:
    """Copy everything from a pipe (or a pty master) into a log until every writer has closed it.

    The fd and the log are owned by this task from here on and closed when the pipe reaches EOF.
    A pty master reports the end with EIO instead of EOF once the last slave fd is closed.
    """
    os.set_blocking(read_fd, False)
    try:
        while True:
            try:
                data = os.read(read_fd, _READ_CHUNK)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(read_fd)
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            if not data:
                return
            log.write(data)
    finally:
        log.close()
        # Tell trio the fd is going away before closing it, as wait_readable requires.
        trio.lowlevel.notify_closing(read_fd)
        close_quietly(read_fd)


@attrs.frozen
class OutputChunk:
    """What one read of a process's output returns; offsets are logical (see RotatingLog)."""

    stdout_offset: int
    stdout: bytes
    stderr_offset: int
    stderr: bytes
    skipped: int
    exited: bool
    status: int | None


class StdinClosed(Exception):
    """The process's stdin was closed earlier (by a client's EOF, or because it exited)."""


class ProcessIO:
    """One process's stdio as the daemon holds it: its input end, its two output logs, its exit.

    It is the attach stream. The owning container actor writes (drains into the logs, marks the
    exit); the API server's workers read and wait on it directly, so a long poll never occupies
    the actor, and it stays readable after the process and its container are gone. Everything runs
    in the daemon's one trio thread, so no locks are needed beyond ordering concurrent stdin writers.
    """

    def __init__(self, stdout_path: Path, stderr_path: Path, stdin_fd: int, terminal: bool = False) -> None:
        self.pid = 0
        self.terminal = terminal
        self._changed = trio.Event()
        self.stdout = RotatingLog(stdout_path, on_change=self._notify)
        self.stderr = RotatingLog(stderr_path, on_change=self._notify)
        if stdin_fd >= 0:
            os.set_blocking(stdin_fd, False)
        self._stdin_fd = stdin_fd
        #: Called after a client's EOF has closed the input (not when the process exits).
        self.on_input_closed: Callable[[], None] | None = None
        self._stdin_lock = trio.Lock()
        self.exited = False
        self.status: int | None = None
        #: The pty master when ``terminal``: stdin writes and window size changes go to it.
        self.pty_master = stdin_fd if terminal else -1

    def _notify(self) -> None:
        # Only allocate a new Event when someone has waited on the old one: writes stay cheap.
        if self._changed.statistics().tasks_waiting:
            self._changed.set()
            self._changed = trio.Event()

    def mark_exited(self, status: int | None) -> None:
        """Called by the owner after the output has been drained: readers then see the end."""
        self.exited = True
        self.status = status
        self.close_input()
        self._changed.set()
        self._changed = trio.Event()

    # ------------------------------------------------------------------ output

    def _read_now(self, stdout_offset: int, stderr_offset: int, max_bytes: int) -> OutputChunk:
        out_offset, out = self.stdout.read(stdout_offset, max_bytes)
        err_offset, err = self.stderr.read(stderr_offset, max_bytes)
        skipped = (out_offset - stdout_offset) + (err_offset - stderr_offset)
        done = (
            self.exited
            and self.stdout.finished
            and self.stderr.finished
            and out_offset + len(out) >= self.stdout.end
            and err_offset + len(err) >= self.stderr.end
        )
        return OutputChunk(
            out_offset, out, err_offset, err, max(skipped, 0), done, self.status if done else None
        )

    async def read(
        self, stdout_offset: int, stderr_offset: int, *, wait: float, max_bytes: int, tail: int = -1
    ) -> OutputChunk:
        """Output after the offsets; with ``wait``, hold until some arrives, the end, or the timeout."""
        if tail >= 0:
            stdout_offset = self.stdout.tail_offset(tail)
            stderr_offset = self.stderr.tail_offset(tail)
        chunk = self._read_now(stdout_offset, stderr_offset, max_bytes)
        with trio.move_on_after(wait):
            while not (chunk.stdout or chunk.stderr or chunk.exited):
                await self._changed.wait()
                chunk = self._read_now(stdout_offset, stderr_offset, max_bytes)
        return chunk

    # ------------------------------------------------------------------ input

    async def write_input(self, data: bytes, timeout: float) -> int:
        """Write as much of ``data`` as the process takes within ``timeout``; returns the count."""
        written = 0
        async with self._stdin_lock:
            with trio.move_on_after(timeout):
                while written < len(data):
                    fd = self._stdin_fd
                    if fd < 0:
                        raise StdinClosed()
                    try:
                        written += os.write(fd, data[written:])
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(fd)
                    except BrokenPipeError:
                        raise StdinClosed() from None
        return written

    def end_input(self) -> None:
        """A client's EOF: close a pipe; on a terminal, send the EOF character instead."""
        if self._stdin_fd < 0:
            raise StdinClosed()
        if self.terminal:
            try:
                os.write(self._stdin_fd, b"\x04")
            except OSError:
                pass
            return
        self.close_input()
        if self.on_input_closed is not None:
            self.on_input_closed()

    def close_input(self) -> None:
        fd, self._stdin_fd = self._stdin_fd, -1
        if fd >= 0:
            trio.lowlevel.notify_closing(fd)
            close_quietly(fd)
        self.pty_master = -1

    def resize(self, rows: int, cols: int) -> None:
        if self.pty_master < 0:
            raise OSError(errno.ENOTTY, "the process has no terminal")
        fcntl.ioctl(self.pty_master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
