"""Output logs: what a process writes, kept on disk in bounded files and read back by offset.

Output is drained from the pipes into these files at once, so a container never blocks on output
nobody reads, and nothing is lost while no client is attached.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import trio

from containerd_actors.host.fds import close_quietly

#: A log file is rotated to ``<name>.1`` when it grows past this, so a chatty container
#: cannot fill the state directory. One rotated generation is kept.
LOG_ROTATE_BYTES = 64 << 20
_READ_CHUNK = 1 << 16


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
