"""A process's stdin, owned by one task of its container actor.

A process that does not read its stdin must never stall its container's actor, so the actor
hands every ``WriteInput`` and ``ResizeTerminal`` of a process to that process's ``StdinPort``
and moves on. The port's task takes them one at a time (the writes of concurrent clients never
interleave within a request) and answers each itself. Only the port touches the fd (the pipe's
write end, or the pty master of a terminal): its task writes, resizes and closes it, and ``close``
closes it directly when no task was ever needed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import termios
from typing import Protocol

import trio

from containerd_actors.daemon.container.messages import ContainerMailbox, InputClosed
from containerd_actors.daemon.mailbox import Ask, CommandError, ReplyTo, answer, fail
from containerd_actors.host.fds import close_quietly
from containerd_actors.protocol import ErrorCode, OpenStdinReply, ResizeTerminal, WriteInput

log = logging.getLogger(__name__)

#: A WriteInput to a process that does not read its stdin gives up after this and reports how
#: much it wrote, so a stuck process cannot hold an API worker.
WRITE_INPUT_TIMEOUT_S = 5.0
#: Requests waiting for one process's stdin; a client writes one chunk at a time, so beyond
#: this many the next is refused rather than held.
QUEUED_INPUTS = 256
#: What a client's EOF becomes on a terminal: the pty's EOF character, since closing the master
#: would hang up the terminal.
TERMINAL_EOF = b"\x04"
#: Writers (``WriteInput.writer``) whose next offset a port remembers; beyond this the oldest is
#: forgotten (its next request then waits for bytes it already wrote, times out and is resent).
REMEMBERED_WRITERS = 1024

StdinAsk = Ask[WriteInput] | Ask[ResizeTerminal]


class PortRoutes(Protocol):
    """Where an open port is listed for the API workers (``routes.ProcessRoutes``). Named by
    what the port needs of it, so that this module does not import the table that lists ports."""

    def add(self, port: StdinPort, *, is_init: bool) -> None: ...

    def remove(self, port: StdinPort) -> None: ...


def stdin_closed(container_id: str, pid: int) -> CommandError:
    return CommandError(ErrorCode.INVALID_STATE, f"the stdin of process {pid} in {container_id!r} is closed")


def cannot_resize(reason: str) -> CommandError:
    return CommandError(ErrorCode.INVALID_STATE, f"cannot resize: {reason}")


NO_TERMINAL = "the process has no terminal"


def open_stdin_reply(port: StdinPort, request_id: str) -> OpenStdinReply:
    """Answer an ``OpenStdin`` for ``port``'s process: where its pipe's write end can be opened.

    Served wherever the port is found (the API worker through ``ProcessRoutes``, or the actor),
    at once and without the port's task: it only names the fd. The fd stays the port's alone;
    the client opens its own file description of the same pipe (blocking, however this one is
    set), so the two writers never share an offset or flags.
    """
    if port.terminal:
        raise CommandError(
            ErrorCode.INVALID_STATE,
            f"process {port.pid} in {port.container_id!r} has a terminal: its input is a pty, "
            "written with WriteInput",
        )
    fd = port.fileno()
    if fd < 0:
        raise stdin_closed(port.container_id, port.pid)
    found = os.fstat(fd)
    log.debug("stdin of process %d in %r opened for a local client (fd %d)", port.pid, port.container_id, fd)
    return OpenStdinReply(request_id, f"/proc/{os.getpid()}/fd/{fd}", found.st_ino, found.st_dev)


def refuse_closed(ask: StdinAsk, container_id: str, pid: int) -> None:
    """Answer a request for a stdin that is closed (by a client's EOF, or because the process exited)."""
    request = ask.request
    if isinstance(request, ResizeTerminal):
        fail(ask.reply_to, cannot_resize(NO_TERMINAL))
    elif not request.data and not request.close:
        answer(ask.reply_to, 0)  # nothing to write, nothing to refuse
    else:
        fail(ask.reply_to, stdin_closed(container_id, pid))


class StdinPort:
    """The stdin of process ``pid``: a queue of requests and the task that serves them.

    The task starts with the first request, in the actor's nursery: most processes never get one.

    Ordered writers (``WriteInput.writer`` and ``offset``, protocol revision 6) keep several
    requests in flight, maybe over several connections, so theirs may arrive out of order or
    twice: the port remembers where each writer's stream has got to, writes only the bytes past
    it, and parks a request that starts beyond it until the bytes before it are written (or
    ``WRITE_INPUT_TIMEOUT_S`` passes: then it answers 0 and the writer resends).
    """

    def __init__(
        self,
        container_id: str,
        pid: int,
        fd: int,
        terminal: bool,
        actor: ContainerMailbox,
        nursery: trio.Nursery,
        routes: PortRoutes | None = None,
        *,
        is_init: bool = False,
    ) -> None:
        self.container_id = container_id
        self.pid = pid
        self.terminal = terminal
        self._fd = fd
        if fd >= 0:
            os.set_blocking(fd, False)
        self._actor = actor
        self._nursery = nursery
        self._queue: trio.MemorySendChannel[StdinAsk] | None = None
        self._cancel = trio.CancelScope()
        #: Set by a client's EOF on a pipe or by ``close``; new requests are then refused at once.
        self.closed = fd < 0
        #: Per ordered writer, the offset in its stream of the next byte to write.
        self._next: dict[str, int] = {}
        #: Ordered writes that arrived ahead of a gap, by (writer, offset), with when they give up.
        self._parked: dict[tuple[str, int], tuple[Ask[WriteInput], float]] = {}
        self._routes = routes
        #: Bytes written through WriteInput (logged when the port closes: how a client wrote).
        self.written = 0
        if routes is not None:
            routes.add(self, is_init=is_init)

    @property
    def stopping(self) -> bool:
        """Its actor is stopping (a crash, or the container's end): requests go the long way."""
        return self._nursery.cancel_scope.cancel_called

    def fileno(self) -> int:
        """The pipe's write end (or pty master), -1 once closed (``open_stdin_reply``)."""
        return -1 if self.closed else self._fd

    @property
    def owner(self) -> object:
        """The mailbox of the actor whose task serves this port (``ProcessRoutes.forget``)."""
        return self._actor

    def offer(self, ask: StdinAsk) -> None:
        """Queue a request for the port's task; never waits, so the actor never does."""
        if self.closed or (isinstance(ask.request, ResizeTerminal) and not self.terminal):
            refuse_closed(ask, self.container_id, self.pid)
            return
        if self._queue is None:
            queue_send, queue = trio.open_memory_channel[StdinAsk](QUEUED_INPUTS)
            self._nursery.start_soon(self._serve, queue)
            self._queue = queue_send
        self._enqueue(ask)

    def offer_routed(self, ask: StdinAsk) -> bool:
        """``offer`` for a request that came straight from the API server (``ProcessRoutes``):
        False, having answered nothing, when the request must go the long way instead (the
        port has closed, or its actor is stopping or gone)."""
        if self.closed or (isinstance(ask.request, ResizeTerminal) and not self.terminal):
            return False
        if self.stopping:
            # Its actor is stopping (a crash, or the container's end): the supervisor hands the
            # request to the actor's mailbox, which a crashed actor gives to its successor.
            return False
        if self._queue is None:
            queue_send, queue = trio.open_memory_channel[StdinAsk](QUEUED_INPUTS)
            try:
                self._nursery.start_soon(self._serve, queue)
            except RuntimeError:  # the nursery is closed to new arrivals
                return False
            self._queue = queue_send
        self._enqueue(ask)
        return True

    def _enqueue(self, ask: StdinAsk) -> None:
        assert self._queue is not None
        try:
            self._queue.send_nowait(ask)
        except trio.WouldBlock:
            busy = CommandError(ErrorCode.INTERNAL, f"the stdin of process {self.pid} is busy; retry")
            fail(ask.reply_to, busy)

    def close(self) -> None:
        """The process has exited: refuse what is queued and let go of the fd."""
        self.closed = True
        if self._queue is None:
            self._release_fd()
        else:
            self._cancel.cancel()  # the task does both

    async def _serve(self, queue: trio.MemoryReceiveChannel[StdinAsk]) -> None:
        try:
            with self._cancel:
                while (ask := await self._receive(queue)) is not None:
                    match ask:
                        case Ask(WriteInput(writer=writer, offset=offset), _) if writer and offset >= 0:
                            await self._write_ordered(ask)  # type: ignore[arg-type]  # a WriteInput's
                        case Ask(WriteInput() as request, reply_to):
                            await self._write(request, reply_to)
                        case Ask(ResizeTerminal() as request, reply_to):
                            self._resize(request, reply_to)
        finally:
            self.closed = True
            self._release_fd()
            for parked, _ in self._parked.values():
                refuse_closed(parked, self.container_id, self.pid)
            self._parked.clear()
            while True:
                try:
                    ask = queue.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                refuse_closed(ask, self.container_id, self.pid)
            queue.close()

    async def _receive(self, queue: trio.MemoryReceiveChannel[StdinAsk]) -> StdinAsk | None:
        """The next request (None once the channel ends); meanwhile, parked writes whose gap
        did not fill in time answer 0 (their writer resends them)."""
        while True:
            if not self._parked:
                try:
                    return await queue.receive()
                except trio.EndOfChannel:
                    return None
            with trio.move_on_at(min(deadline for _, deadline in self._parked.values())):
                try:
                    return await queue.receive()
                except trio.EndOfChannel:
                    return None
            now = trio.current_time()
            for key, (parked, deadline) in list(self._parked.items()):
                if deadline <= now:
                    del self._parked[key]
                    answer(parked.reply_to, 0)

    async def _write_ordered(self, ask: Ask[WriteInput]) -> None:
        """Write the bytes of ``ask`` that its writer's stream has not had yet, in order; then
        whatever was parked waiting for them."""
        while True:
            request = ask.request
            expected = self._next.get(request.writer, 0)
            if request.offset > expected:
                key = (request.writer, request.offset)
                replaced = self._parked.pop(key, None)
                if replaced is not None:
                    answer(replaced[0].reply_to, 0)  # the same bytes again: the newer one waits
                elif len(self._parked) >= QUEUED_INPUTS:
                    answer(ask.reply_to, 0)  # as many wait as the queue holds: resend it later
                    return
                deadline = trio.current_time() + WRITE_INPUT_TIMEOUT_S
                self._parked[key] = (ask, deadline)
                return
            skip = min(expected - request.offset, len(request.data))
            if skip == len(request.data) and not request.close:
                answer(ask.reply_to, skip)  # all written already (a request sent twice)
            else:
                written = await self._write(request, ask.reply_to, skip=skip)
                self._remember(request.writer, request.offset + skip + written)
            if self.closed:
                return
            following = self._parked.pop((request.writer, self._next.get(request.writer, 0)), None)
            if following is None:
                return
            ask = following[0]

    def _remember(self, writer: str, next_offset: int) -> None:
        self._next.pop(writer, None)  # re-inserted last: the dict's order is by last use
        self._next[writer] = next_offset
        if len(self._next) > REMEMBERED_WRITERS:
            del self._next[next(iter(self._next))]

    async def _write(self, request: WriteInput, reply_to: ReplyTo, *, skip: int = 0) -> int:
        """Write what the process takes within the timeout; a client's EOF follows a complete write.
        ``skip``: the first bytes were written before (an ordered writer's), and count as written.
        Returns how much of ``data`` past ``skip`` was written."""
        data = memoryview(request.data)[skip:]  # a partial write resends the rest without copying it
        if self._fd < 0 and (data or request.close):
            fail(reply_to, stdin_closed(self.container_id, self.pid))
            return 0
        written = 0
        try:
            with trio.move_on_after(WRITE_INPUT_TIMEOUT_S):
                while written < len(data):
                    try:
                        written += os.write(self._fd, data[written:])
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(self._fd)
        except BrokenPipeError:
            fail(reply_to, stdin_closed(self.container_id, self.pid))
            return 0
        except trio.Cancelled:
            self.written += written
            # The process exited while we waited for it to read: report what got through.
            if written or skip:
                answer(reply_to, skip + written)
            else:
                fail(reply_to, stdin_closed(self.container_id, self.pid))
            raise
        self.written += written
        if not (request.close and written == len(data)):
            answer(reply_to, skip + written)
        elif self.terminal:
            try:
                os.write(self._fd, TERMINAL_EOF)
            except OSError:
                pass
            answer(reply_to, skip + written)
        else:
            self.closed = True
            self._release_fd()
            answer(reply_to, skip + written)
            # The reaper holds a copy of this pipe end too; the process sees EOF once it lets go.
            try:
                await self._actor.send(InputClosed(self.pid))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the actor has finished; the reaper let go of every copy with it
        return written

    def _resize(self, request: ResizeTerminal, reply_to: ReplyTo) -> None:
        try:
            fcntl.ioctl(self._fd, termios.TIOCSWINSZ, struct.pack("HHHH", request.rows, request.cols, 0, 0))
        except OSError as exc:
            fail(reply_to, cannot_resize(exc.strerror or str(exc)))
        else:
            answer(reply_to, None)

    def _release_fd(self) -> None:
        if self._routes is not None:
            self._routes.remove(self)
        fd, self._fd = self._fd, -1
        if fd >= 0:
            log.debug(
                "stdin of process %d in %r closed; %d bytes written by WriteInput",
                self.pid,
                self.container_id,
                self.written,
            )
            trio.lowlevel.notify_closing(fd)
            close_quietly(fd)
