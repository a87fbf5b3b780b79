"""A process's output copied from the daemon's log files by a client on the same host.

Why: through nng, each MiB of output was read from the log into a reply, sent over the socket,
received and written out: several copies per byte, and CPU in both processes. The daemon writes
every byte to its logs anyway, so a client that may read them (root, or the daemon's user) asks
``ReadOutput.spans`` and is told where the bytes are (``LogFileSpan``); it opens that file,
checks it is the one named, and ``sendfile`` copies from the page cache to stdout in the kernel.

Why the bytes cannot be lost or doubled: a log only grows; a rotation renames it to ``<log>.1``
(the same inode, looked up there) and the next deletes that one. A file held open keeps its bytes
whatever rotates after, so once a span's file is open under its identity (``FileIdentity``:
device, inode and generation, since a deleted inode's number is soon reused) the copy reads
exactly the bytes the daemon named. If neither name holds that file any more, the bytes were
rotated out after the reply: ``LogFiles.bytes_of`` says so (None) and the reader asks again
without spans, and the daemon's reply tells what was skipped, as it always did.
"""

from __future__ import annotations

import errno
import os
import select
from typing import TYPE_CHECKING

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
import attrs

from containerd_actors.transport.file_identity import FileIdentity, identity_of

if TYPE_CHECKING:
    from containerd_actors import protocol as wire

#: Log files kept open at once: two streams, each with a current and a rotated generation.
KEPT_OPEN = 4
#: Bytes per read and write where ``sendfile`` cannot write to the output (a terminal, O_APPEND).
_COPY_CHUNK = 1 << 20
#: What ``sendfile`` says when this output cannot take it: copy by read and write instead.
_NO_SENDFILE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV}


class OpenLog:
    """One log file open for reading; closed when no one refers to it (the cache, a pending copy)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


#: Outputs ``sendfile`` was refused on, by descriptor: not tried again.
_read_and_write: set[int] = set()


@attrs.frozen
class FileBytes:
    """``length`` bytes of an open log from ``position``: what a local read yields instead of bytes."""

    file: OpenLog
    position: int
    length: int

    def __len__(self) -> int:
        return self.length

    def copy_to(self, fd: int) -> None:
        """All of them to ``fd``, in the kernel where it can (``sendfile``), else read and written."""
        position, end = self.position, self.position + self.length
        while position < end:
            if fd in _read_and_write:
                position += _read_and_write_once(self.file.fd, fd, position, end - position)
                continue
            try:
                sent = os.sendfile(fd, self.file.fd, position, end - position)
            except BlockingIOError:
                select.select([], [fd], [])
                continue
            except OSError as exc:
                if exc.errno not in _NO_SENDFILE:
                    raise
                _read_and_write.add(fd)
                continue
            if sent == 0:
                raise OSError(errno.EIO, f"a log file ended {end - position} bytes before its span")
            position += sent


def _read_and_write_once(source: int, fd: int, position: int, size: int) -> int:
    data = os.pread(source, min(size, _COPY_CHUNK), position)
    if not data:
        raise OSError(errno.EIO, f"a log file ended {size} bytes before its span")
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])
    return len(data)


class LogFiles:
    """The daemon's log files this client has open, by identity."""

    def __init__(self) -> None:
        self._open: dict[FileIdentity, OpenLog] = {}
        #: Set once a file could not be opened for want of permission: never asked again.
        self.refused: OSError | None = None

    def bytes_of(self, span: wire.LogFileSpan, length: int) -> FileBytes | None:
        """The span's bytes, or None if its file is neither at its path nor at ``<path>.1``
        (rotated out). OSError (``PermissionError`` for a user who may not read the logs)
        when it cannot be opened."""
        identity = FileIdentity(span.device, span.inode, span.generation)
        opened = self._open.get(identity)
        if opened is None:
            opened = _find(span.path, identity)
            if opened is None:
                return None
            self._open[identity] = opened
            while len(self._open) > KEPT_OPEN:  # the oldest: offsets only go forward
                del self._open[next(iter(self._open))]
        return FileBytes(opened, span.position, length)


def _find(path: str, identity: FileIdentity) -> OpenLog | None:
    for candidate in (path, path + ".1"):
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        opened = OpenLog(fd)  # closed with it, whatever happens next
        if identity_of(fd) == identity:
            return opened
    return None
