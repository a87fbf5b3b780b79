"""``exec -a`` and ``start -a`` without trio, for a process that has no terminal (no ``-t``).

Why a second attach: importing trio (and pynng's asyncio support) is most of what ``actr
containers exec -a -- true`` costs, several times what runc takes to run ``true``. Without a
terminal there is nothing that needs an event loop: this thread follows the output with blocking
long polls (``local_output.follow_output``: from the daemon's log files when they are on this
host and readable, else in the replies), and a second thread, on a connection of its own,
forwards stdin until EOF, then closes the process's stdin (a stdin of /dev/null is closed at
once). ``ctl.attach`` keeps what does need one: a terminal in raw mode, the detach keys, window
sizes, and ``attach`` itself.

It keeps ``ctl.attach``'s promises for this case: the exit code is the process's status (255 if
unknown); SIGTERM or SIGHUP end the attach with 128+N and leave the process running; Ctrl-C is the
usual 130; a process that no longer takes input still gets its output shown.
"""

from __future__ import annotations

# ``signal``'s C half: ``signal`` itself builds three IntEnums as it is imported (~3M instructions,
# ~1.5% of an ``exec -a``), and this needs only ``signal()`` and two numbers.
import _signal
import functools
import os
import queue
import select
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from containerd_actors.client import (
    FRAMED_INPUT_CHUNK_BYTES,
    INPUT_CHUNK_BYTES,
    BlockingClient,
    ClientError,
    DaemonUnreachable,
    ErrorCode,
    RequestFailed,
)
from containerd_actors.client.local_output import follow_output as follow_local_output
from containerd_actors.client.log_files import FileBytes
from containerd_actors.client.ordered_input import (
    IN_FLIGHT,
    ORDERED_CHUNK_BYTES,
    OrderedInput,
    speaks_ordered_input,
)
from containerd_actors.client.redial import GaveUp, InFlightLost, Notices, Redial
from ctl.output_backlog import OutputBacklog

if TYPE_CHECKING:
    from containerd_actors.client import TlsFiles

#: Exit code when the daemon does not know the exit status (the process was not its child).
EXIT_STATUS_UNKNOWN = 255
#: stdin is read in pieces of one framed WriteInput: one round trip per MiB of a file or busy pipe.
_READ_CHUNK = FRAMED_INPUT_CHUNK_BYTES
_STOP_SIGNALS = (_signal.SIGTERM, _signal.SIGHUP)
#: Reads whose output may wait for the writer thread (each up to 4 MiB per stream; its stdout,
#: stderr and the ``then`` after them are three items of the writer's queue).
_WRITES_AHEAD = 2


class _Stopped(BaseException):
    """SIGTERM or SIGHUP arrived: stop attaching, leave the process running."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``_Stopped`` in this thread, which a waiting request gives way to."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise _Stopped(signum)

    previous = {signum: _signal.signal(signum, stop) for signum in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            _signal.signal(signum, handler)


def _read(fd: int, size: int = _READ_CHUNK) -> bytes:
    """One read, waiting also when the descriptor was left non-blocking (by whoever shares it);
    then what else is ready at once, up to ``size``: a pipe gives 64 KiB a read, and a
    WriteInput per read would cost a round trip per 64 KiB."""
    while True:
        try:
            data = os.read(fd, size)
            break
        except BlockingIOError:
            select.select([fd], [], [])
    if not data or len(data) >= size:
        return data
    parts = [data]
    got = len(data)
    while got < size and select.select([fd], [], [], 0)[0]:
        try:
            more = os.read(fd, size - got)
        except BlockingIOError:
            break
        if not more:
            break  # EOF: the next read says so again
        parts.append(more)
        got += len(more)
    return b"".join(parts) if len(parts) > 1 else data


def _forward_stdin(
    address: str,
    id: str,
    pid: int,
    in_fd: int,
    failures: list[BaseException],
    backlog: OutputBacklog,
    *,
    tls: TlsFiles | None = None,
    notices: Notices | None = None,
) -> None:
    """Until EOF (then close the process's stdin) or until the process stops taking input.

    On the daemon's host, straight into the process's stdin pipe (``forward_directly``: no
    request per MiB, nothing through the daemon; the pipe it opened stays its own when the API
    server restarts). Otherwise a line typed goes at once, as one request; a stream (its first
    read fills more than a JSON WriteInput) goes with several requests in flight when the daemon
    takes them (``OrderedInput``), so that the next MiB is on its way while the daemon writes the
    last.

    Across a restart of the API server (``Redial``), stdin is at most once: the bytes of a
    WriteInput whose connection was lost under it may or may not have been written by the old
    server, and the new one cannot say, so they are not sent again and stderr says how many
    (``_in_doubt``). A byte typed twice could run a command twice; one in doubt is reported.
    """
    from containerd_actors.client.direct_input import forward_directly  # not for a stdin of /dev/null

    try:
        with Redial(address, tls=tls, notices=notices) as redial, Redial(address, tls=tls) as probe:
            backlog.set_probe(_EndProbe(probe, id, pid))
            if redial.run(lambda client: forward_directly(client, id, pid, in_fd, backlog.wait, close=False)):
                redial.run(lambda client: client.write_input(id, b"", pid, close=True))  # the same twice
                return
            sent = 0
            while True:
                data = _read(in_fd)
                if len(data) > INPUT_CHUNK_BYTES and redial.run(speaks_ordered_input):
                    _forward_ordered(redial, id, pid, in_fd, data, backlog, sent, notices)
                    return
                backlog.wait(sent)
                write = functools.partial(_write_input, id=id, pid=pid, data=data)
                try:
                    redial.run(write, resend=not data)  # an EOF may be sent twice, bytes not
                except InFlightLost:
                    _in_doubt(notices, len(data))
                sent += len(data)
                if not data:
                    return
    except Exception as exc:
        _note_input_failure(exc, failures)


def _write_input(client: BlockingClient, *, id: str, pid: int, data: bytes) -> None:
    client.write_input(id, data, pid, close=not data)


def _in_doubt(notices: Notices | None, count: int) -> None:
    """Say that ``count`` bytes of stdin were on their way when the connection was lost."""
    if notices is not None and count:
        notices.say(
            f"actr: up to {count} bytes of input were on their way when the connection was lost; "
            "they may not have reached the process and are not sent again\n".encode()
        )


class _EndProbe:
    """Where the process's output ends now (``OutputBacklog``'s probe): a ReadOutput of one byte
    that does not wait, on a connection of its own, opened the first time stdin would pause (the
    forwarder's own may have WriteInputs in flight)."""

    def __init__(self, redial: Redial, id: str, pid: int) -> None:
        self._redial, self._id, self._pid = redial, id, pid

    def __call__(self) -> int | None:
        reply = self._redial.run(lambda client: client.read_output(self._id, self._pid, max_bytes=1))
        if reply.stdout_end is None or reply.stderr_end is None:
            return None  # a daemon older than the field
        return reply.stdout_end + reply.stderr_end


def _note_input_failure(exc: Exception, failures: list[BaseException]) -> None:
    if isinstance(exc, RequestFailed) and exc.code in (ErrorCode.INVALID_STATE, ErrorCode.NOT_FOUND):
        return  # the process closed or lost its stdin (it may have exited): its output still comes
    failures.append(exc)


def _is_devnull(fd: int) -> bool:
    """Whether ``fd`` is /dev/null, which never has anything to forward (scripts and benchmarks
    often give it): then the process's stdin is closed at once on the attach's own connection,
    instead of by a thread of its own on a second connection (~2 ms of ``exec -a`` in all)."""
    try:
        given, null = os.fstat(fd), os.stat(os.devnull)
    except OSError:
        return False
    return stat.S_ISCHR(given.st_mode) and given.st_rdev == null.st_rdev


def _forward_ordered(
    redial: Redial,
    id: str,
    pid: int,
    in_fd: int,
    first: bytes,
    backlog: OutputBacklog,
    sent: int,
    notices: Notices | None,
) -> None:
    """The rest of stdin from ``first`` on, with a request in flight on each of ``IN_FLIGHT`` connections.

    When a connection is lost, what was in flight is in doubt (``_in_doubt``: not sent again),
    and the rest goes as a new writer (its offsets from 0) on new connections: the new server
    knows nothing of the old writer's."""
    with ExitStack() as stack:
        others = [stack.enter_context(Redial(redial.address, tls=redial.tls)) for _ in range(IN_FLIGHT - 1)]
        redials = [redial, *others]
        data = first
        while True:
            stream = OrderedInput([each.client for each in redials], id, pid)
            taken = stream.offset
            try:
                while data:
                    backlog.wait(sent)
                    taken = stream.offset
                    stream.write(data)
                    sent += len(data)
                    data = _read(in_fd, ORDERED_CHUNK_BYTES)
                stream.close()
                return
            except DaemonUnreachable:
                for each in redials:
                    each.lost()
                if data and stream.offset > taken:  # ``data`` was on its way: in doubt with the rest
                    sent += len(data)
                    data = _read(in_fd, ORDERED_CHUNK_BYTES)
                _in_doubt(notices, stream.in_flight)


def rotated_out(skipped: int) -> bytes:
    """What a reader that fell behind by more than the logs keep (two generations of 64 MiB) is told:
    the process is never blocked by a reader, so the bytes in between are gone."""
    return f"actr: {skipped} bytes were rotated out of the logs before they could be read\n".encode()


#: What the writer writes: bytes, a view of a reply, or bytes in the daemon's log file.
Output = bytes | memoryview | FileBytes
#: What the writer's queue holds: a write, or a call once the writes before it are done.
_Item = tuple[int, Output] | Callable[[], None]


class OutputWriter:
    """Writes output in a thread of its own, so that the next ReadOutput is on its way while this
    one's bytes go to stdout (a MiB to a file or pipe takes about as long as a round trip); also
    ``actr containers logs``'s.

    At most ``_WRITES_AHEAD`` reads wait for it: a slow reader of our stdout slows the reads, as
    it should, and never makes this process hold the whole stream.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[int, Output] | Callable[[], None] | None] = queue.Queue(
            3 * _WRITES_AHEAD
        )
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="stdout", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.failure is None:
                try:
                    if callable(item):
                        item()  # what was written before it is out
                        continue
                    fd, data = item
                    if isinstance(data, FileBytes):
                        data.copy_to(fd)  # from the daemon's log file, in the kernel
                    else:
                        _write_all(fd, data)
                except BaseException as exc:
                    self.failure = exc

    def write(self, fd: int, data: Output) -> None:
        if self.failure is not None:
            raise self.failure
        if data:
            self._queue.put((fd, data))

    def then(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the writer's thread) once every write asked before is done."""
        self._queue.put(callback)

    def finish(self) -> None:
        """Wait for every write; raise what one of them raised."""
        self._queue.put(None)
        self._thread.join()
        if self.failure is not None:
            raise self.failure


def attach(client: BlockingClient, id: str, pid: int) -> int:
    """Connect this process's stdio to process ``pid`` of container ``id``; return its exit status.

    A lost connection (the API server died) is dialled again (``Redial``) and the output read on
    from the offsets it had; one line on stderr says it was lost, one that it is back. If it does
    not come back within ``RECONNECT_WINDOW_S``, this fails naming the process (it may well run on).
    """
    from ctl.startup import lasting

    lasting()
    in_fd, out_fd, err_fd = sys.stdin.fileno(), sys.stdout.fileno(), sys.stderr.fileno()
    sys.stdout.flush()
    failures: list[BaseException] = []
    backlog = OutputBacklog()
    writer = OutputWriter()
    notices = Notices(functools.partial(writer.write, err_fd))
    forwarder = threading.Thread(
        target=_forward_stdin,
        args=(client.address, id, pid, in_fd, failures, backlog),
        kwargs={"tls": client.tls, "notices": notices},
        name="stdin",
        daemon=True,
    )
    status = EXIT_STATUS_UNKNOWN
    redial = Redial(client.address, tls=client.tls, first=client, notices=notices)
    try:
        with _stop_signals(), redial:
            if _is_devnull(in_fd):
                try:
                    redial.run(lambda connection: connection.write_input(id, b"", pid, close=True))
                except GaveUp:
                    raise
                except Exception as exc:
                    _note_input_failure(exc, failures)
            else:
                forwarder.start()
            # The output's offset (both streams) once this chunk is out, and the stdin sent
            # before the next read was asked: what ``OutputBacklog`` bounds stdin with.
            position, sent_before = 0, backlog.sent
            for chunk in follow_local_output(client, id, pid, redial=redial):
                backlog.read(chunk.stdout, chunk.stderr, chunk.end, sent_before)
                if chunk.skipped:
                    writer.write(err_fd, rotated_out(chunk.skipped))
                writer.write(out_fd, chunk.stdout)
                writer.write(err_fd, chunk.stderr)
                position += chunk.skipped + len(chunk.stdout) + len(chunk.stderr)
                writer.then(functools.partial(backlog.copied, position))
                sent_before = backlog.sent
                if chunk.exited:
                    status = EXIT_STATUS_UNKNOWN if chunk.status is None else chunk.status
            writer.finish()
    except _Stopped as stopped:
        return 128 + stopped.signum
    except GaveUp as gone:
        writer.finish()  # the output read so far is out before the message
        raise ClientError(
            f"lost the connection to the daemon while attached to process {pid} of container {id!r}, "
            f"and could not reconnect: {gone.reason} (the process may still run: "
            f"`actr containers logs -f -p {pid} {id}` follows its output)"
        ) from None
    finally:
        backlog.finish()  # however the reads ended, stdin no longer waits for them
    if failures:
        raise failures[0]
    return status
