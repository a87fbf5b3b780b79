"""Following the API server across the reaper's restarts, as several end-to-end tests must.

The reaper announces each new server only by writing its pid to ``server.pid``; these helpers
read that file, so a test waits on the daemon's own signal and never on a fixed sleep.
"""

from __future__ import annotations

import os

import trio

from containerd_actors.client import Client
from support.daemon import DaemonHandle

#: Far above how long a restart takes; a test that passes one smaller says why.
RESTART_TIMEOUT_S = 30.0


def server_pid(handle: DaemonHandle) -> int:
    """The pid of the API server the reaper runs now (raises while the file is absent or torn)."""
    return int((handle.state_dir / "server.pid").read_text())


async def wait_for_new_server(
    handle: DaemonHandle, old_pid: int, *, timeout: float = RESTART_TIMEOUT_S, ping: bool = True
) -> int:
    """Until a server other than ``old_pid`` has announced itself; returns its pid.

    With ``ping`` it must also answer a request, so the caller may talk to it at once; without,
    the caller checks what the new server does while it is still settling.
    """
    with trio.fail_after(timeout):
        while True:
            try:
                pid = server_pid(handle)
            except (FileNotFoundError, ValueError):
                pid = old_pid
            if pid != old_pid:
                if ping:
                    async with Client.connect(handle.address) as client:
                        await client.ping()
                return pid
            await trio.sleep(0.05)  # the reaper's restart announces itself only in server.pid


async def wait_for_exit(pid: int, *, timeout: float = RESTART_TIMEOUT_S) -> None:
    """Until the process has exited (a zombie counts): its pidfd turns readable."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(timeout):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        trio.lowlevel.notify_closing(pidfd)
        os.close(pidfd)
