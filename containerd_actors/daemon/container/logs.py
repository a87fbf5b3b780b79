"""Output logs: what a process writes, kept on disk in bounded files and read back by offset.

Output is drained from the pipes into these files at once, so a container never blocks on output
nobody reads, and nothing is lost while no client is attached.

**A full state directory** (a write fails with ENOSPC, EDQUOT or EIO) never stops the drain: the
container must not block on a pipe nobody empties, and its actor must go on managing it. The
output that cannot be written is dropped and counted, the log stops growing, and once there is
room again (see ``state.space``) the log gets one line ``[N bytes lost: state dir full]`` where
the bytes are missing, so a reader of the log knows. A log closed while bytes were lost keeps its
descriptor until that marker is written.

**Offsets survive restarts.** Before a rotation the log records, in ``<log>.base`` (see
``layout.log_rotation_record``), which file is becoming the rotated one and at which logical
offset it starts. A log opened again (by a restarted server adopting its process) reads it back
and counts on from there, so a reader still learns how many bytes were rotated out, and the offsets
a client holds stay valid. The record names the file by inode, so a server killed between the
record and the rename still finds the right base.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from containerd_actors.daemon.state.layout import LogRange, log_rotation_record, write_json_atomically
from containerd_actors.daemon.state.space import StateDirSpace, is_space_error, space_of
from containerd_actors.host.fds import close_quietly, describe_os_error, is_fd_limit_error, read_when_ready
from containerd_actors.transport.file_identity import FileIdentity, identity_at, identity_of

#: A log file is rotated to ``<name>.1`` when it grows past this, so a chatty container
#: cannot fill the state directory. One rotated generation is kept.
LOG_ROTATE_BYTES = 64 << 20
_READ_CHUNK = 1 << 16
#: One read of a drain: a whole pipe buffer (``stdio.PIPE_BYTES``), so a process writing fast
#: costs the daemon one wake-up, one read and one write per MiB.
DRAIN_READ_BYTES = 1 << 20

log = logging.getLogger(__name__)

Writer = Callable[[int, memoryview], int]


#: Why bytes were lost: no room in the state directory, or no descriptor to open the log with.
STATE_DIR_FULL = "state dir full"
TOO_MANY_OPEN_FILES = "too many open files"


def lost_marker(size: int, reason: str = STATE_DIR_FULL) -> bytes:
    """The line a log gets where ``size`` bytes of output could not be written."""
    return f"[{size} bytes lost: {reason}]\n".encode()


@attrs.frozen
class LogSpan:
    """``length`` bytes of a log from logical ``offset``: in ``path`` at ``position``."""

    offset: int
    path: Path
    position: int
    length: int

    def read(self) -> bytes:
        if not self.length:
            return b""
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, self.length, self.position)
        finally:
            os.close(fd)

    def read_into(self, view: memoryview) -> None:
        """Fill ``view`` (``length`` bytes) from the file, with no copy on the way."""
        if not self.length:
            return
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            done = 0
            while done < self.length:
                count = os.preadv(fd, [view[done:]], self.position + done)
                if count <= 0:
                    raise OSError(f"{self.path} ended {self.length - done} bytes early")
                done += count
        finally:
            os.close(fd)


class RotatingLog:
    """Append-only log file with one rotated generation, addressed by logical byte offsets.

    Writes are unbuffered so nothing is held back. A logical offset counts bytes since the log was
    opened, across rotation, so a reader that keeps its offset never reads a byte twice or skips
    one while it stays within the retained window (the current file plus ``<name>.1``).
    ``on_change`` is called after every write and at the end, so readers can wait without polling.
    """

    @property
    def rotated_path(self) -> Path:
        """``<name>.1``, made when first needed: most logs never rotate, nor are read that far."""
        if self._rotated_path is None:
            self._rotated_path = self.path.with_name(self.path.name + ".1")
        return self._rotated_path

    def __init__(
        self,
        path: Path,
        rotate_bytes: int = LOG_ROTATE_BYTES,
        on_change: Callable[[], None] | None = None,
        *,
        space: StateDirSpace | None = None,
        write: Writer = os.write,
        finished: LogRange | None = None,
        new: bool = False,
    ) -> None:
        """``finished``: a log nobody writes any more (an exited process's, after a restart), read
        up to the range its exit recorded; it holds no descriptor.

        ``new``: the caller has just made the log's directory, so neither the file nor a rotation
        record exists; the file is created with the first byte written. Most containers of a burst
        of starts never write to stderr, many never to stdout: two files, two descriptors held
        for the container's life and four system calls fewer each.
        """
        self.path = path
        self._rotated_path: Path | None = None
        self.rotate_bytes = rotate_bytes
        self._on_change = on_change
        self._space = space if space is not None else space_of(path.parent)
        self._write = write
        #: Logical offset of the first byte of the current file, and the bytes of this log in the
        #: rotated generation: (0, 0) until the first rotation, then as recorded (see ``_rotate``).
        self.base: int
        self._previous_size: int
        if new:
            self._fd = -1
            self._size = 0
            self.base, self._previous_size = 0, 0
        elif finished is None:
            self._fd = _open_for_append(path)
            stat = os.fstat(self._fd)
            self._size = stat.st_size
            self.base, self._previous_size = _recorded_rotation(path, self.rotated_path, stat.st_ino)
        else:
            self._fd = -1
            self._size = finished.end - finished.base
            self.base = finished.base
            self._previous_size = _file_size(self.rotated_path) if finished.base else 0
        #: True once the writer has closed the log: ``end`` is final (but for a pending marker).
        self.finished = finished is not None
        #: Bytes dropped since the last marker (the marker to write when there is room again).
        self.lost = 0
        #: Bytes dropped over the log's life.
        self.lost_total = 0
        self._waiting_for_room = False
        self._at_line_start = True
        #: The identities of the current and the rotated file, by path, as looked up since the
        #: last rotation (``identity``).
        self._identities: dict[Path, FileIdentity | None] = {}
        #: The last open of the file failed for the fd limit (EMFILE/ENFILE): the bytes are dropped
        #: as for a full state directory, but the next write, not the space's recovery, retries.
        self._fd_limited = False

    def range(self) -> LogRange:
        return LogRange(self.base, self.end)

    @property
    def end(self) -> int:
        """Logical offset just past the last byte written."""
        return self.base + self._size

    @property
    def start(self) -> int:
        """Oldest logical offset still on disk."""
        return self.base - self._previous_size

    def write(self, data: bytes) -> None:
        """Append ``data``, or as much as the state directory takes; the rest is dropped and counted."""
        end = self.end
        if self.lost and not self._write_marker():
            self._drop(len(data))
        else:
            written = self._append(data)
            if written < len(data):
                self._drop(len(data) - written)
        if self.end != end:
            self._changed()

    def _append(self, data: bytes) -> int:
        """Write ``data`` to the end; returns how much was written before a space error (if any)."""
        if not self._space.writable():
            return 0
        step = "opening" if self._fd < 0 else "rotating"
        fd_limited = False
        try:
            if self._fd < 0:
                self._fd = _open_for_append(self.path)  # a ``new`` log's first byte
                self._identities.clear()
            elif self._size + len(data) > self.rotate_bytes and self._size > 0:
                self._rotate()
        except OSError as exc:
            if is_fd_limit_error(exc):
                # Never a crash of the drain (and its actor) for a host limit: a log that cannot
                # be opened drops the bytes and says so; one that cannot rotate grows on instead.
                fd_limited = True
                self._note_fd_limit(exc, step)
                if self._fd < 0:
                    return 0
            elif not is_space_error(exc):
                raise
            else:
                self._space.report_failure(exc, f"{step} {self.path}")
                return 0
        self._fd_limited = fd_limited
        view = memoryview(data)
        written = 0
        while written < len(data):
            try:
                count = self._write(self._fd, view[written:])
                if count <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as exc:
                if not is_space_error(exc):
                    raise
                self._space.report_failure(exc, f"writing {self.path}")
                break
            written += count
            self._size += count
        if written:
            self._at_line_start = data[written - 1 : written] == b"\n"
        return written

    def _note_fd_limit(self, exc: OSError, step: str) -> None:
        if not self._fd_limited:
            what = "its output is dropped and counted" if step == "opening" else "it grows unrotated"
            log.error("%s %s: %s; %s", step, self.path, describe_os_error(exc), what)
        self._fd_limited = True

    def _drop(self, size: int) -> None:
        self.lost += size
        self.lost_total += size
        self._space.count_lost_output(size)
        self._wait_for_room()

    def _write_marker(self) -> bool:
        """Write the marker for the bytes lost so far, whole or not at all; False while no room."""
        if not self._space.writable():  # a probe here may find room and write the marker first
            self._wait_for_room()
            return False
        if not self.lost:
            return True
        at_line_start = self._at_line_start
        reason = TOO_MANY_OPEN_FILES if self._fd_limited else STATE_DIR_FULL
        marker = (b"" if at_line_start else b"\n") + lost_marker(self.lost, reason)
        written = self._append(marker)
        if written < len(marker):
            self._at_line_start = at_line_start
            if written:
                try:  # no half marker for a reader to trip on
                    os.ftruncate(self._fd, self._size - written)
                    self._size -= written
                except OSError:
                    pass
            self._wait_for_room()
            return False
        self.lost = 0
        return True

    def _wait_for_room(self) -> None:
        if self._fd_limited:
            return  # the next write (or none) retries: the space would call back at once, forever
        if not self._waiting_for_room:
            self._waiting_for_room = True
            self._space.when_room(self._room_again)

    def _room_again(self) -> None:
        """Called by the state directory's space once it has room: the marker goes in now."""
        self._waiting_for_room = False
        if self.lost and self._write_marker():
            self._changed()
        if self.finished and not self.lost:
            self._close_fd()

    def identity(self, span: LogSpan) -> FileIdentity | None:
        """Which file ``span`` is in (``ReadOutput.spans``), before the next write as for ``span``:
        looked up once per file and rotation (a rotation forgets them: the names change files)."""
        path = span.path
        if path in self._identities:
            return self._identities[path]
        identity = identity_of(self._fd) if path == self.path and self._fd >= 0 else identity_at(str(path))
        self._identities[path] = identity
        return identity

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _rotate(self) -> None:
        self._identities.clear()
        # First the record of what the current file becomes (see the module docstring): a space
        # error here leaves the log as it was, and the caller drops the output.
        write_json_atomically(
            log_rotation_record(self.path),
            {"rotated_inode": os.fstat(self._fd).st_ino, "rotated_base": self.base},
        )
        # The old generation goes first: ext4 (auto_da_alloc) flushes a file renamed over another
        # one to disk, 64 MiB at a time on the trio thread, where a rename to a free name costs
        # nothing. A server killed in between finds no ``<log>.1``, which the record explains.
        try:
            os.unlink(self.rotated_path)
        except FileNotFoundError:
            pass
        self._previous_size = 0  # gone, whatever happens next
        os.replace(self.path, self.rotated_path)  # our descriptor now writes to the rotated file
        try:
            fd = _open_for_append(self.path)
        except OSError:
            # Keep the current file current; the older generation was replaced and is gone.
            os.replace(self.rotated_path, self.path)
            self._previous_size = 0
            raise
        os.close(self._fd)
        self._fd = fd
        self.base += self._size
        self._previous_size = self._size
        self._size = 0

    def close(self) -> None:
        """The writer is done (pipe EOF); readers see ``finished`` and the final ``end``.

        With bytes lost and no room for their marker yet, the descriptor stays open until the
        state directory has room again and the marker is written.
        """
        if self.finished:
            return
        self.finished = True
        if not self.lost or self._write_marker():
            self._close_fd()
        self._changed()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            close_quietly(self._fd)
            self._fd = -1

    def read(self, offset: int, max_bytes: int) -> tuple[int, bytes]:
        """Bytes from ``offset`` (moved up to ``start`` if rotated away): ``(actual_offset, data)``.

        Returns at most the rest of one generation; call again for more. Synchronous: within one
        trio thread no write can interleave, so base and sizes are consistent with the files.
        """
        span = self.span(offset, max_bytes)
        return span.offset, span.read()

    def span(self, offset: int, max_bytes: int) -> LogSpan:
        """Where the bytes from ``offset`` are (as ``read`` would return them), to be read at once:
        before the next write, since a rotation moves them to the other file."""
        offset = max(offset, self.start)
        if offset >= self.end or max_bytes <= 0:
            return LogSpan(offset, self.path, 0, 0)
        if offset < self.base:
            path, position, available = self.rotated_path, offset - self.start, self.base - offset
        else:
            path, position, available = self.path, offset - self.base, self.end - offset
        return LogSpan(offset, path, position, min(max_bytes, available))

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


def _open_for_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _recorded_rotation(path: Path, rotated_path: Path, inode: int) -> tuple[int, int]:
    """``(base, previous_size)`` of a log opened again, from its rotation record; (0, 0) without one.

    The record names the file that was becoming the rotated generation and where it starts: if
    that is ``<log>.1`` now, the current file follows it; if the rename never happened (a server
    killed in between), the current file is still that one.
    """
    record_path = log_rotation_record(path)
    try:
        raw = json.loads(record_path.read_bytes())
        rotated_inode, rotated_base = int(raw["rotated_inode"]), int(raw["rotated_base"])
    except FileNotFoundError:
        return 0, 0
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s is unreadable (%s); the log's offsets start again at 0", record_path, exc)
        return 0, 0
    try:
        rotated = rotated_path.stat()
    except FileNotFoundError:
        rotated = None
    if rotated is not None and rotated.st_ino == rotated_inode:
        return rotated_base + rotated.st_size, rotated.st_size
    if inode == rotated_inode:
        return rotated_base, rotated.st_size if rotated is not None else 0
    log.warning("%s names neither of the log's files; the log's offsets start again at 0", record_path)
    return 0, 0


async def drain_to_log(read_fd: int, log: RotatingLog) -> None:
    """Copy everything from a pipe (or a pty master) into a log until every writer has closed it.

    The fd and the log are owned by this task from here on and closed when the pipe reaches EOF.
    A pty master reports the end with EIO instead of EOF once the last slave fd is closed.
    """
    os.set_blocking(read_fd, False)
    try:
        while True:
            try:
                data = await read_when_ready(read_fd, DRAIN_READ_BYTES)
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
