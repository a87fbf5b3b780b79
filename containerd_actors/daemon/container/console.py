"""The console socket: how runc hands the daemon a new terminal's pty master (SCM_RIGHTS).

A process whose spec asks for a terminal (a ``runc spec`` bundle's init, ``exec -t``, a restore
of a container dumped with one) gets a pty that runc creates; runc connects to a unix socket we
listen on and sends the master there. The daemon then holds the master like a pipe pair: its
drain reads the output, its stdin port writes keystrokes and resizes, and the reaper keeps a copy.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from pathlib import Path

import trio

from containerd_actors.daemon.container.stdio import PIPE_BYTES, ContainerPipes
from containerd_actors.host.fds import close_quietly
from containerd_actors.runc.driver import Stdio

#: How long runc may take to hand over a new terminal after its command has returned.
CONSOLE_HANDOVER_S = 5.0


class ConsoleSocket:
    """A listening unix socket in a fresh private directory, and /dev/null for runc's own stdio.

    The directory is under /tmp: a path under the state directory could exceed the 107-byte limit
    of unix socket paths with a long container id. Use it as a context manager; it removes both.
    """

    def __init__(self) -> None:
        self._directory = tempfile.mkdtemp(prefix="actr-console-")
        self.path = Path(self._directory) / "console.sock"
        self._devnull = -1
        try:
            self._listener = socket.socket(
                socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )
        except BaseException:  # EMFILE: the directory must not outlive the refused start
            shutil.rmtree(self._directory, ignore_errors=True)
            raise
        try:
            self._listener.bind(str(self.path))
            self._listener.listen(1)
            self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ConsoleSocket:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def runc_stdio(self) -> Stdio:
        """What runc itself gets as stdio: the process's own stdio is the pty, not these."""
        return Stdio(self._devnull, self._devnull, self._devnull)

    async def take_master(self, within: float = CONSOLE_HANDOVER_S) -> int:
        """The pty master runc sent (close-on-exec); OSError when none came within ``within``.

        runc has normally sent it before its command returned, so it waits in the socket already;
        the event loop is never blocked on it all the same.
        """
        fds: list[int] = []
        with trio.move_on_after(within):
            fds = await receive_console(self._listener)
        if not fds:
            raise OSError(f"runc sent no terminal over the console socket within {within:g} s")
        for extra in fds[1:]:
            os.close(extra)
        os.set_inheritable(fds[0], False)
        return fds[0]

    def close(self) -> None:
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1
        self._listener.close()
        shutil.rmtree(self._directory, ignore_errors=True)


async def receive_console(listener: socket.socket) -> list[int]:
    """Accept runc's connection on a non-blocking listener and take the fd it sends (SCM_RIGHTS)."""
    while True:
        try:
            connection, _ = listener.accept()
            break
        except BlockingIOError:
            await trio.lowlevel.wait_readable(listener)
    with connection:
        connection.setblocking(False)
        while True:
            try:
                _, fds, flags, _ = socket.recv_fds(connection, 4096, 1, socket.MSG_CMSG_CLOEXEC)
                if not fds and flags & socket.MSG_CTRUNC:
                    # The kernel dropped the master: this process is out of descriptors.
                    raise OSError(errno.EMFILE, "the terminal runc sent was dropped (MSG_CTRUNC)")
                return fds
            except BlockingIOError:
                await trio.lowlevel.wait_readable(connection)


class InitStdio:
    """The init's stdio while runc starts it: three pipes, or a console socket for a terminal.

    Either way runc is handed ``runc_stdio`` (and ``console_socket``), and once it has returned
    ``parent_ends`` gives what the actor owns: the stdin end (a pipe's write end, or the pty
    master) and the two output ends (a terminal has one stream: stderr is -1).
    """

    def __init__(self, terminal: bool) -> None:
        """Nothing is opened yet (see ``open``), so that ``close_all`` is always safe to call."""
        self.terminal = terminal
        self._pipes: ContainerPipes | None = None
        self._console: ConsoleSocket | None = None
        self._master = -1
        self._master_copy = -1

    def open(self) -> None:
        """Make the pipes or the console socket; raises OSError (EMFILE at the fd limit) having
        made nothing, inside the start's undo (``start.start_init``), unlike a constructor's."""
        if self.terminal:
            self._console = ConsoleSocket()
        else:
            self._pipes = ContainerPipes.create()
            self._pipes.enlarge_buffers(PIPE_BYTES)

    @property
    def runc_stdio(self) -> Stdio:
        if self._console is not None:
            return self._console.runc_stdio
        assert self._pipes is not None
        return self._pipes.child_stdio()

    @property
    def console_socket(self) -> Path | None:
        return None if self._console is None else self._console.path

    @property
    def ends_before_run(self) -> list[int] | None:
        """The parent's ends as they exist before runc runs (pipes: stdin, stdout, stderr), for the
        reaper to hold in case the server dies during the start; None for a terminal, whose master
        exists only once runc has sent it."""
        if self._pipes is None:
            return None
        return [self._pipes.stdin_write, *self._pipes.output_ends()]

    async def parent_ends(self) -> tuple[int, tuple[int, int]]:
        """After runc has started the process: close the child's pipe ends, or take the pty master."""
        if self._console is not None:
            self._master = await self._console.take_master()
            self._console.close()
            self._master_copy = os.dup(self._master)
            return self._master, (self._master_copy, -1)
        assert self._pipes is not None
        self._pipes.close_child_ends()
        return self._pipes.stdin_write, self._pipes.output_ends()

    def close_all(self) -> None:
        """The start failed: nothing of it stays open."""
        if self._console is not None:
            self._console.close()
            close_quietly(self._master, self._master_copy)
            self._master = self._master_copy = -1
        if self._pipes is not None:
            self._pipes.close_all()
