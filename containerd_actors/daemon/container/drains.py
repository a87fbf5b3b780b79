"""One task drains the output of every process of the server into its logs.

Why not a task per pipe, as before: every container start then paid for two task spawns, a
nursery and trio's registration of each pipe in its epoll (about a tenth of the server's CPU per
start), for pipes that most inits never write a byte to. Here each read end is registered in one
epoll set of the hub's, and trio waits on that set's descriptor alone. When a pipe is readable the
hub reads it into its log in that step, until the pipe is empty or for a few MiB at most (then
the other tasks run before it reads on; a log write never waits: see ``logs``).

What a process's drains guarantee is unchanged: each log is closed when its pipe reaches its end
(EOF, or EIO from a pty master whose last slave closed), its read end is closed after its log,
``drained`` is set once both have ended or were stopped, and an unexpected error is raised in
the actor's nursery (``on_error``), which crashes the actor as a failed drain task did: its
successor drains the supervisor's copies of the pipe ends.

The hub is a system task of the trio run, made by its first user (``drain``): it outlives every
actor, and a test's run gets its own.
"""

from __future__ import annotations

import errno
import logging
import os
import select
from collections.abc import Callable

import trio

from containerd_actors.daemon.container.logs import DRAIN_READ_BYTES, RotatingLog
from containerd_actors.daemon.container.stdio import ProcessOutput, enlarge_pipe
from containerd_actors.host.fds import close_quietly

log = logging.getLogger(__name__)

OnError = Callable[[BaseException], None]
#: A pipe's buffer until it is enlarged (Linux's default): a read this long found it full.
DEFAULT_PIPE_BYTES = 1 << 16

#: Reads of one pipe (``DRAIN_READ_BYTES`` each) before the other tasks of the loop get their
#: turn (``DrainHub._read``).
DRAIN_READS_PER_ROUND = 4


class ProcessDrains:
    """The drains of one process's stdout and stderr."""

    __slots__ = ("_fds", "_hub", "_on_error", "drained")

    def __init__(self, hub: DrainHub, on_error: OnError) -> None:
        self._hub = hub
        self._on_error = on_error
        self._fds: list[int] = []
        #: Set once both outputs have ended or the drains were stopped.
        self.drained = trio.Event()

    def cancel(self) -> None:
        """Stop draining (the process exited and had its grace, or its actor stops): the logs and
        the read ends still open are closed."""
        for fd in list(self._fds):
            self._hub.end(fd)

    def _ended(self, fd: int) -> None:
        self._fds.remove(fd)
        if not self._fds:
            self.drained.set()


class _Pipe:
    __slots__ = ("drains", "enlarged", "fd", "log")

    def __init__(self, fd: int, log: RotatingLog, drains: ProcessDrains) -> None:
        self.fd = fd
        self.log = log
        self.drains = drains
        #: Whether its buffer has been enlarged (or tried): once a read finds it full.
        self.enlarged = False


class DrainHub:
    """Every read end being drained, in one epoll set (see the module docstring)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._pipes: dict[int, _Pipe] = {}

    def drain(self, out_fds: tuple[int, int], output: ProcessOutput, on_error: OnError) -> ProcessDrains:
        """Drain ``out_fds`` (stdout, stderr; -1: none, its log is closed at once) into ``output``.

        The read ends are the hub's from here on.
        """
        drains = ProcessDrains(self, on_error)
        for fd, output_log in zip(out_fds, (output.stdout, output.stderr), strict=True):
            if fd < 0:
                output_log.close()
                continue
            os.set_blocking(fd, False)
            self._epoll.register(fd, select.EPOLLIN)
            self._pipes[fd] = _Pipe(fd, output_log, drains)
            drains._fds.append(fd)
        if not drains._fds:
            drains.drained.set()
        return drains

    def end(self, fd: int) -> None:
        """The pipe ``fd`` has ended (or its drains were stopped): close its log, then the fd."""
        pipe = self._pipes.pop(fd, None)
        if pipe is None:
            return
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass
        try:
            pipe.log.close()
        finally:
            close_quietly(fd)
            pipe.drains._ended(fd)

    def _read(self, pipe: _Pipe) -> None:
        """What the pipe holds now, up to ``DRAIN_READS_PER_ROUND`` reads, into its log; its end
        when the writers are gone.

        Bounded because a writer as fast as these reads (``cat`` fed straight through its stdin
        pipe, ``OpenStdin``) never lets the pipe run dry: reading until EAGAIN then held the
        trio loop for as long as it wrote, and the ReadOutput that would follow the output
        waited meanwhile, until the logs rotated out what it had not read. The epoll set is
        level-triggered, so what is left is reported again after the other tasks have run.
        """
        for _ in range(DRAIN_READS_PER_ROUND):
            try:
                data = os.read(pipe.fd, DRAIN_READ_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EIO:  # a pty master whose last slave has closed
                    self.end(pipe.fd)
                    return
                raise
            if not data:
                self.end(pipe.fd)
                return
            if len(data) >= DEFAULT_PIPE_BYTES and not pipe.enlarged:
                # A process that fills the default buffer: fewer wake-ups per MiB from now on.
                pipe.enlarged = True
                enlarge_pipe(pipe.fd)
            pipe.log.write(data)

    async def serve(self) -> None:
        try:
            while True:
                await trio.lowlevel.wait_readable(self._epoll.fileno())
                for fd, _events in self._epoll.poll(0):
                    pipe = self._pipes.get(fd)  # None: ended earlier in this round
                    if pipe is None:
                        continue
                    try:
                        self._read(pipe)
                    except Exception as exc:
                        self.end(fd)
                        try:
                            pipe.drains._on_error(exc)
                        except Exception:  # its actor is gone: nobody left to crash
                            log.exception("draining fd %d failed after its actor ended", fd)
        finally:
            for fd in list(self._pipes):
                self.end(fd)
            trio.lowlevel.notify_closing(self._epoll.fileno())
            self._epoll.close()


_HUB: trio.lowlevel.RunVar[DrainHub] = trio.lowlevel.RunVar("drain_hub")


def drain(out_fds: tuple[int, int], output: ProcessOutput, on_error: OnError) -> ProcessDrains:
    """Drain a process's outputs into its logs with the run's hub (made on first use)."""
    try:
        hub = _HUB.get()
    except LookupError:
        hub = DrainHub()
        _HUB.set(hub)
        trio.lowlevel.spawn_system_task(hub.serve, name="drain hub")
    return hub.drain(out_fds, output, on_error)
