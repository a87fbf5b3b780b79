"""Exit watching for container processes, per pid and never with ``waitpid(-1)``.

``runc run -d`` exits once the container runs, orphaning the container's init. The kernel hands
an orphan to the nearest child subreaper, so the daemon marks itself as one and can then
``waitpid`` the init like its own child. Waiting for a specific pid leaves the statuses of
trio's own subprocesses (runc itself) to trio.

A later design moves the subreaper role into a small long-lived parent process so that exits
survive a daemon crash; ``ExitWatcher`` is the seam for that.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Protocol

import trio

PR_SET_CHILD_SUBREAPER = 36


class ExitWatcher(Protocol):
    async def wait_for_exit(self, pidfd: int, pid: int) -> int | None:
        """Wait until ``pid`` exits; return its status (128+N for signal N), None if unknowable."""
        ...


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
    """The daemon itself is the subreaper: container inits are its (adopted) children."""

    async def wait_for_exit(self, pidfd: int, pid: int) -> int | None:
        await trio.lowlevel.wait_readable(pidfd)
        try:
            _, wait_status = os.waitpid(pid, 0)
        except ChildProcessError:
            # Not our child (for example adopted from a previous daemon): the status went to
            # whoever is its parent. The caller reports it as unknown rather than inventing one.
            return None
        except OSError as exc:
            if exc.errno == errno.EINTR:
                _, wait_status = os.waitpid(pid, 0)
            else:
                raise
        return exit_status_from_wait(wait_status)
