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
import os
import struct
import termios

import trio

from containerd_actors.daemon.container.messages import ContainerMailbox, InputClosed
from containerd_actors.daemon.mailbox import Ask, CommandError, ReplyTo, answer, fail
from containerd_actors.host.fds import close_quietly
from containerd_actors.protocol import ErrorCode, ResizeTerminal, WriteInput

#: A WriteInput to a process that does not read its stdin gives up after this and reports how
#: much it wrote, so a stuck process cannot hold an API worker.
WRITE_INPUT_TIMEOUT_S = 5.0
#: Requests waiting for one process's stdin; a client writes one chunk at a time, so beyond
#: this many the next is refused rather than held.
QUEUED_INPUTS = 256
#: What a client's EOF becomes on a terminal: the pty's EOF character, since closing the master
#: would hang up the terminal.
TERMINAL_EOF = b"\x04"

StdinAsk = Ask[WriteInput] | Ask[ResizeTerminal]


def stdin_closed(container_id: str, pid: int) -> CommandError:
    return CommandError(ErrorCode.INVALID_STATE, f"the stdin of process {pid} in {container_id!r} is closed")


def cannot_resize(reason: str) -> CommandError:
    return CommandError(ErrorCode.INVALID_STATE, f"cannot resize: {reason}")


NO_TERMINAL = "the process has no terminal"


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
    """

    def __init__(
        self,
        container_id: str,
        pid: int,
        fd: int,
        terminal: bool,
        actor: ContainerMailbox,
        nursery: trio.Nursery,
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

    def offer(self, ask: StdinAsk) -> None:
        """Queue a request for the port's task; never waits, so the actor never does."""
        if self.closed or (isinstance(ask.request, ResizeTerminal) and not self.terminal):
            refuse_closed(ask, self.container_id, self.pid)
            return
        if self._queue is None:
            self._queue, queue = trio.open_memory_channel[StdinAsk](QUEUED_INPUTS)
            self._nursery.start_soon(self._serve, queue)
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
                async for ask in queue:
                    match ask:
                        case Ask(WriteInput() as request, reply_to):
                            await self._write(request, reply_to)
                        case Ask(ResizeTerminal() as request, reply_to):
                            self._resize(request, reply_to)
        finally:
            self.closed = True
            self._release_fd()
            while True:
                try:
                    ask = queue.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                refuse_closed(ask, self.container_id, self.pid)
            queue.close()

    async def _write(self, request: WriteInput, reply_to: ReplyTo) -> None:
        """Write what the process takes within the timeout; a client's EOF follows a complete write."""
        data = memoryview(request.data)  # a partial write resends the rest without copying it
        if self._fd < 0 and (data or request.close):
            fail(reply_to, stdin_closed(self.container_id, self.pid))
            return
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
            return
        except trio.Cancelled:
            # The process exited while we waited for it to read: report what got through.
            if written:
                answer(reply_to, written)
            else:
                fail(reply_to, stdin_closed(self.container_id, self.pid))
            raise
        if not (request.close and written == len(data)):
            answer(reply_to, written)
        elif self.terminal:
            try:
                os.write(self._fd, TERMINAL_EOF)
            except OSError:
                pass
            answer(reply_to, written)
        else:
            self.closed = True
            self._release_fd()
            answer(reply_to, written)
            # The reaper holds a copy of this pipe end too; the process sees EOF once it lets go.
            try:
                await self._actor.send(InputClosed(self.pid))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the actor has finished; the reaper let go of every copy with it

    def _resize(self, request: ResizeTerminal, reply_to: ReplyTo) -> None:
        try:
            fcntl.ioctl(self._fd, termios.TIOCSWINSZ, struct.pack("HHHH", request.rows, request.cols, 0, 0))
        except OSError as exc:
            fail(reply_to, cannot_resize(exc.strerror or str(exc)))
        else:
            answer(reply_to, None)

    def _release_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            trio.lowlevel.notify_closing(fd)
            close_quietly(fd)
