"""Exit watching for container processes, per pid and never with ``waitpid(-1)``.

``runc run -d`` exits once the container runs, orphaning the container's init. The kernel hands
an orphan to the nearest child subreaper, which can then ``waitpid`` the init like its own child.
Waiting for a specific pid leaves the statuses of trio's own subprocesses (runc itself) to trio.

Two processes can be that subreaper, behind one ``ExitWatcher`` interface: the reaper process
(``containerd_actors.reaper``, the default), whose exits survive an API server crash, or the API
server itself with ``--no-reaper`` (``LocalSubreaper`` here).
"""

from __future__ import annotations

import ctypes
import os
from typing import Protocol

PR_SET_CHILD_SUBREAPER = 36
#: How long an ExitWatcher may take to report an exit after the process is gone from /proc (the reaper's
#: message can be in flight on its socket). Whoever waits for exits must wait at least this long.
EXIT_REPORT_GRACE_S = 5.0


class ExitWatcher(Protocol):
    """Whoever reaps container processes, and keeps their pipe ends alive across a server restart."""

    async def wait_for_exit(self, pidfd: int, pid: int, *, started_here: bool = False) -> int | None:
        """Wait until ``pid`` exits; return its status (128+N for signal N), None if unknowable.

        ``started_here``: this server's runc started the process, so it was orphaned to the
        subreaper this server runs under and nobody else can have its status (a watcher need not
        look up its parent in /proc; a server outlives neither its reaper nor, without one, itself).
        """
        ...

    def exited_while_away(self, pid: int) -> int | None:
        """A status recorded while no server was running (only a reaper can have one)."""
        ...

    async def acknowledge(self, pid: int) -> None:
        """The exit of ``pid`` is published; whoever recorded it may forget it."""
        ...

    async def keep(self, key: str, fds: list[int]) -> None:
        """Hold copies of these fds for ``key`` so they outlive this process."""
        ...

    async def drop(self, key: str) -> None: ...


def become_child_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def exit_status_from_wait(wait_status: int) -> int:
    """Shell convention: the exit code, or 128+N when killed by signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


def open_pidfd(pid: int) -> int:
    """A pidfd pins the process identity: signals through it can never hit a recycled pid."""
    return os.pidfd_open(pid)


class LocalSubreaper:
    """The daemon itself is the subreaper (``--no-reaper``): container inits are its children.

    Nothing outlives this process here, so keeping fds and acknowledging exits are no-ops.
    """

    def exited_while_away(self, pid: int) -> int | None:
        return None

    async def acknowledge(self, pid: int) -> None:
        return None

    async def keep(self, key: str, fds: list[int]) -> None:
        return None

    async def drop(self, key: str) -> None:
        return None

    async def wait_for_exit(self, pidfd: int, pid: int, *, started_here: bool = False) -> int | None:
        if pidfd < 0:
            return None
        import trio  # here, not at the top: the reaper process imports this module and stays small

        await trio.lowlevel.wait_readable(pidfd)
        try:
            _, wait_status = os.waitpid(pid, 0)
        except ChildProcessError:
            # Not our child (for example adopted from a previous daemon): the status went to
            # whoever is its parent. The caller reports it as unknown rather than inventing one.
            return None
        return exit_status_from_wait(wait_status)
