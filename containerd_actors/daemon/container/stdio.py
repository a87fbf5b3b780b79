"""Container stdio as anonymous pipes, drained into logs that readers follow by offset.

Pipes (not files or FIFOs opened by path) are what CRIU can checkpoint, and a pipe whose read end
is held by the daemon means the container never blocks on output nobody reads. The daemon keeps
the parent ends; the child ends go to runc and are closed here once runc has started.

What is shared, and why it is safe: a process's ``ProcessOutput`` is written only by its
container actor (which marks the exit) and by its drains (``drains``: the server's one drain
task appends to the logs; after a full state directory, the ``[N bytes lost]`` marker is appended by whoever
notices room again, synchronously, so it never interleaves with a drain's write). Everyone
else (the supervisor, which keeps them after the container is gone, and the API server's tasks,
which serve ``ReadOutput`` long polls) holds an ``OutputView``, which can only read and wait.
A log only grows (rotation keeps the logical offsets) and the exit is set once, after the logs
are closed; the daemon runs in one trio thread and a read is synchronous, so a reader always
sees offsets and files that agree. A long poll therefore never occupies the
actor, and the output of an exited process stays readable after its actor has ended.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import attrs
import trio

from containerd_actors.daemon.container.logs import LogSpan, RotatingLog
from containerd_actors.daemon.state.layout import LogRange
from containerd_actors.daemon.state.space import space_of
from containerd_actors.host.fds import close_quietly
from containerd_actors.runc.driver import Stdio
from containerd_actors.transport.file_identity import FileIdentity

F_SETPIPE_SZ = 1031
#: The pipe buffers of a process's stdio: a chatty process wakes the daemon less often per MiB,
#: and a WriteInput of a whole MiB goes in one write (Linux caps it at
#: /proc/sys/fs/pipe-max-size for unprivileged users; the daemon runs as root). The kernel
#: allots the pages as they fill, so an idle process costs no more than with the default 64 KiB.
PIPE_BYTES = 1 << 20
#: A caught-up reader of a busy process (``cat`` of a file) is woken by every drain write, about
#: a MiB each: ~800 ReadOutputs per GiB. A local reader (``ReadOutput.spans``: nothing is copied
#: into its reply) that had to wait, woken by a write of at least ``BUSY_WRITE_BYTES`` (the pipe
#: was busy), waits for more writes until ``GATHER_BYTES`` are there, ``GATHER_S`` at most; a
#: smaller write (a line typed, a prompt) is answered at once: an interactive echo waits for nothing.
BUSY_WRITE_BYTES = 64 << 10
GATHER_BYTES = 4 << 20
GATHER_S = 0.002


def enlarge_pipe(fd: int, size: int = PIPE_BYTES) -> None:
    """Give the pipe of ``fd`` (either end) a buffer of ``size``; a pty or a refusal keeps its own."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except OSError:
        pass


@attrs.define
class ContainerPipes:
    """Both ends of a process's three pipes until runc has taken its ends."""

    stdin_read: int
    stdin_write: int
    stdout_read: int
    stdout_write: int
    stderr_read: int
    stderr_write: int

    @classmethod
    def create(cls) -> ContainerPipes:
        """os.pipe() ends are close-on-exec, so a concurrent runc never inherits another container's pipe.

        Out of descriptors (EMFILE) half-way, the pipes already made are closed before the error
        goes up: a start refused for the fd limit must not leak what would free it."""
        ends: list[int] = []
        try:
            for _ in range(3):
                ends.extend(os.pipe())
        except BaseException:
            close_quietly(*ends)
            raise
        return cls(*ends)

    def enlarge_buffers(self, size: int) -> None:
        """A bigger stdin pipe takes a WriteInput of a whole MiB in one write; a smaller one only
        costs wake-ups. The output pipes are enlarged by the drain once one fills its default
        64 KiB (``enlarge_pipe``): most processes never write that much, and three of these
        system calls were ~2% of the server's CPU per start."""
        enlarge_pipe(self.stdin_write, size)

    def child_stdio(self) -> Stdio:
        return Stdio(self.stdin_read, self.stdout_write, self.stderr_write)

    def output_ends(self) -> tuple[int, int]:
        return self.stdout_read, self.stderr_read

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


@attrs.frozen
class OutputSpans:
    """Where one read of a process's output is in its logs: what ``OutputChunk`` holds, unread."""

    stdout: LogSpan
    stderr: LogSpan
    skipped: int
    exited: bool
    status: int | None


class _Changes:
    """Wakes the readers waiting on a process's output; what its logs call after each write.

    It is its own object, not a method of ``ProcessOutput``, so that nothing refers back to the
    output: a ``ProcessOutput``, its logs and its views are then freed by reference counting
    when the supervisor forgets an exited container. (A bound method in each log made a cycle,
    left to the garbage collector, whose young generation is 20,000 objects here: in the soak,
    a thousand forgotten containers' outputs, some MiB, at a time.)
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        # Only allocate a new Event when someone has waited on the old one: writes stay cheap.
        if self._event.statistics().tasks_waiting:
            self.notify_all()

    def notify_all(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class ProcessOutput:
    """One process's two output logs and its exit status, as its container actor records them."""

    def __init__(
        self,
        pid: int,
        stdout_path: Path,
        stderr_path: Path,
        terminal: bool = False,
        *,
        finished: tuple[LogRange, LogRange] | None = None,
        new: bool = False,
    ) -> None:
        """``finished``: the output of a process that exited before a restart, up to these ranges.
        ``new``: the logs' directory was just made; each file is created with its first byte."""
        self.pid = pid
        self.terminal = terminal
        self._changes = _Changes()
        if finished is None:
            # One look-up of the state directory's space for both logs: they share a directory.
            space = space_of(stdout_path.parent)
            notify = self._changes.notify
            self.stdout = RotatingLog(stdout_path, on_change=notify, space=space, new=new)
            self.stderr = RotatingLog(stderr_path, on_change=notify, space=space, new=new)
        else:
            self.stdout = RotatingLog(stdout_path, finished=finished[0])
            self.stderr = RotatingLog(stderr_path, finished=finished[1])
        self.exited = False
        self.status: int | None = None

    @property
    def view(self) -> OutputView:
        """A read-only handle (made on demand: one kept here would refer back, a cycle)."""
        return OutputView(self)

    async def wait_for_change(self) -> None:
        await self._changes.wait()

    def close_logs(self) -> None:
        """No more output: readers see the final ends. Drains close their own log at EOF, and
        the actor closes both when it marks the end (closing twice is harmless)."""
        self.stdout.close()
        self.stderr.close()

    def mark_exited(self, status: int | None) -> None:
        """Called once the output has been drained: readers then see the end."""
        self.exited = True
        self.status = status
        self._changes.notify_all()


class OutputView:
    """A read-only handle on a process's output: what the supervisor keeps and readers use.

    See the module docstring for why sharing it is safe.
    """

    __slots__ = ("_output",)

    def __init__(self, output: ProcessOutput) -> None:
        self._output = output

    @property
    def pid(self) -> int:
        return self._output.pid

    @property
    def terminal(self) -> bool:
        return self._output.terminal

    @property
    def status(self) -> int | None:
        return self._output.status

    def log_ranges(self) -> tuple[LogRange, LogRange]:
        """Where stdout and stderr stand now: final once the process's logs are closed."""
        return self._output.stdout.range(), self._output.stderr.range()

    def identities(self, spans: OutputSpans) -> tuple[FileIdentity | None, FileIdentity | None] | None:
        """The files the spans are in (None for a stream without bytes), for ``ReadOutput.spans``;
        None if a file cannot be named safely. Call it before the logs can move, as for reading."""
        found: list[FileIdentity | None] = []
        for log, span in ((self._output.stdout, spans.stdout), (self._output.stderr, spans.stderr)):
            if not span.length:
                found.append(None)
                continue
            identity = log.identity(span)
            if identity is None:
                return None
            found.append(identity)
        return found[0], found[1]

    def _spans_now(self, stdout_offset: int, stderr_offset: int, max_bytes: int) -> OutputSpans:
        output = self._output
        out = output.stdout.span(stdout_offset, max_bytes)
        err = output.stderr.span(stderr_offset, max_bytes)
        skipped = (out.offset - stdout_offset) + (err.offset - stderr_offset)
        done = (
            output.exited
            and output.stdout.finished
            and output.stderr.finished
            and out.offset + out.length >= output.stdout.end
            and err.offset + err.length >= output.stderr.end
        )
        return OutputSpans(out, err, max(skipped, 0), done, output.status if done else None)

    async def read_spans(
        self,
        stdout_offset: int,
        stderr_offset: int,
        *,
        wait: float,
        max_bytes: int,
        tail: int = -1,
        gather: bool = False,
    ) -> OutputSpans:
        """Where the output after the offsets is; with ``wait``, hold until some arrives, the end,
        or the timeout. Read the spans before the next checkpoint (a rotation moves the bytes).

        The wait ends on the write that brings output (the logs' ``on_change``), not on a poll.
        ``gather``: a reader that had to wait, woken by a drain write of a busy pipe (at least
        ``BUSY_WRITE_BYTES``), waits up to ``GATHER_S`` more for ``GATHER_BYTES`` (see there).
        """
        if tail >= 0:
            stdout_offset = self._output.stdout.tail_offset(tail)
            stderr_offset = self._output.stderr.tail_offset(tail)
        spans = self._spans_now(stdout_offset, stderr_offset, max_bytes)
        waited = False
        with trio.move_on_after(wait):
            while not (spans.stdout.length or spans.stderr.length or spans.exited):
                waited = True
                await self._output.wait_for_change()
                spans = self._spans_now(stdout_offset, stderr_offset, max_bytes)
        if gather and waited:
            spans = await self._gather(spans, stdout_offset, stderr_offset, max_bytes)
        return spans

    async def _gather(
        self, spans: OutputSpans, stdout_offset: int, stderr_offset: int, max_bytes: int
    ) -> OutputSpans:
        deadline = trio.current_time() + GATHER_S
        got = spans.stdout.length + spans.stderr.length
        last_write = got
        while last_write >= BUSY_WRITE_BYTES and got < GATHER_BYTES and not spans.exited:
            with trio.move_on_at(deadline):
                await self._output.wait_for_change()
            spans = self._spans_now(stdout_offset, stderr_offset, max_bytes)
            now = spans.stdout.length + spans.stderr.length
            last_write, got = now - got, now
        return spans

    async def read(
        self, stdout_offset: int, stderr_offset: int, *, wait: float, max_bytes: int, tail: int = -1
    ) -> OutputChunk:
        """Output after the offsets; with ``wait``, hold until some arrives, the end, or the timeout."""
        spans = await self.read_spans(stdout_offset, stderr_offset, wait=wait, max_bytes=max_bytes, tail=tail)
        return OutputChunk(
            spans.stdout.offset,
            spans.stdout.read(),
            spans.stderr.offset,
            spans.stderr.read(),
            spans.skipped,
            spans.exited,
            spans.status,
        )
