"""A process's stdin written by the client itself, straight into its pipe (``OpenStdin``, protocol
revision 7), when the client runs on the daemon's host.

Why: every MiB that goes through WriteInput is read by the client, framed, sent over the socket,
received, handed to the process's stdin port and written to the pipe, about half a millisecond
of the daemon's CPU per request besides the copies. A client on the same host (an ipc://
address) that may inspect the daemon (root, or the daemon's uid) can instead open the daemon's
own write end of that pipe through ``/proc/<pid>/fd/<n>`` and move its stdin there with
``splice``: from a pipe or a file the kernel moves the pages, and nothing crosses the socket.

It is only ever an offer: an older daemon (``unknown_type``), a remote caller, a terminal, a
closed stdin, a path that cannot be opened (another uid, another pid namespace) or a file that
is not that pipe (its inode and device differ: the fd was closed and its number reused) all
leave the caller to WriteInput, which gives the errors a client must see. The process gets EOF
once the client has closed what it opened and asked the daemon to close its own end (a
WriteInput with ``close``): the reaper and the daemon hold write ends of the pipe too.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat
from collections.abc import Callable

from containerd_actors.client.blocking import BlockingClient
from containerd_actors.client.errors import RequestFailed

#: The protocol revision that added ``OpenStdin``.
OPEN_STDIN_SINCE = 7
#: Most bytes one splice (or read) moves: a pipe gives what it holds, a file up to the room in the
#: process's pipe; asking for more than a pipe holds costs nothing.
COPY_CHUNK_BYTES = 1 << 20
#: The process's stdin pipe is grown to this if it is smaller (an exec'd process's already is,
#: the daemon's ``stdio.PIPE_BYTES``; an init's may not be): fewer wake-ups of the writer and
#: the reader per MiB. Failing to grow it (past /proc/sys/fs/pipe-max-size) changes only that.
PIPE_BYTES = 1 << 20
#: splice's errors that mean "not between these two files" (a terminal, a socket of some kinds):
#: the copy goes on with read and write.
_NO_SPLICE = (errno.EINVAL, errno.ENOSYS, errno.EBADF, errno.ESPIPE)


def is_local_address(address: str) -> bool:
    """Whether a client of ``address`` runs on the daemon's host (only there is a path of the
    daemon's host worth asking for)."""
    return address.startswith("ipc://")


def open_direct_stdin(client: BlockingClient, id: str, pid: int) -> int | None:
    """The process's stdin pipe opened for writing (blocking), or None: write with WriteInput.

    One round trip (``OpenStdin``); a refusal of any kind is a None, never an error, since the
    WriteInput that follows reports what matters (a closed stdin, a process gone).
    """
    if not is_local_address(client.address):
        return None
    try:
        reply = client.open_stdin(id, pid)
    except RequestFailed:
        return None
    try:
        # O_NONBLOCK: a pipe whose every reader is gone fails with ENXIO instead of waiting for one.
        fd = _open_for_writing(reply.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # EACCES (not root, not the daemon's uid), ENOENT, ENXIO
    try:
        found = os.fstat(fd)
        if not stat.S_ISFIFO(found.st_mode) or (found.st_ino, found.st_dev) != (reply.inode, reply.device):
            os.close(fd)
            return None
        os.set_blocking(fd, True)  # this open file description is ours alone
    except BaseException:
        os.close(fd)
        raise
    _grow_pipe(fd)
    return fd


def _open_for_writing(path: str, flags: int) -> int:
    """``os.open``; a seam for tests (a client that may not open the path)."""
    return os.open(path, flags)


def _grow_pipe(fd: int) -> None:
    try:
        if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < PIPE_BYTES:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # EPERM past the user's pipe quota or pipe-max-size: the pipe keeps its size


def copy_into(in_fd: int, out_fd: int, before_each: Callable[[int], None] = lambda _sent: None) -> int:
    """Copy ``in_fd`` to ``out_fd`` until EOF or until nobody reads ``out_fd`` any more (EPIPE);
    return how many bytes went. ``before_each(sent)`` runs before each chunk: a caller's
    backpressure (it may wait). splice when the kernel can, read and write otherwise.

    ``in_fd`` may have been left non-blocking by whoever shares it: then this waits for it (and
    for room in ``out_fd``, since a non-blocking end makes the whole splice non-blocking).
    """
    sent = 0
    move = _splice
    while True:
        before_each(sent)
        try:
            moved = move(in_fd, out_fd)
        except BlockingIOError:
            select.select([in_fd], [], [])
            select.select([], [out_fd], [])
            continue
        except BrokenPipeError:
            return sent  # the process closed its stdin, or exited
        except OSError as exc:
            if move is not _splice or exc.errno not in _NO_SPLICE:
                raise
            move = _read_and_write
            continue
        if moved == 0:
            return sent
        sent += moved


def _splice(in_fd: int, out_fd: int) -> int:
    """What one splice moves (the kernel moves a pipe's pages, or a file's, without a copy here)."""
    return os.splice(in_fd, out_fd, COPY_CHUNK_BYTES)


def _read_and_write(in_fd: int, out_fd: int) -> int:
    """One read's bytes (a line typed, a chunk of a file) written whole; 0 at EOF."""
    data = os.read(in_fd, COPY_CHUNK_BYTES)
    view = memoryview(data)
    while view:
        view = view[os.write(out_fd, view) :]
    return len(data)


def forward_directly(
    client: BlockingClient,
    id: str,
    pid: int,
    in_fd: int,
    before_each: Callable[[int], None],
    *,
    close: bool = True,
) -> bool:
    """All of ``in_fd`` into the process's stdin pipe, then (``close``) its stdin closed (EOF):
    True. False when the daemon or the host offers no direct way (nothing was read: use
    WriteInput). Without ``close`` the caller closes it, maybe on another connection: the pipe
    opened here is this process's own, and outlives the API server that named it."""
    fd = open_direct_stdin(client, id, pid)
    if fd is None:
        return False
    try:
        copy_into(in_fd, fd, before_each)
    finally:
        os.close(fd)
    if close:
        client.write_input(id, b"", pid, close=True)
    return True
