"""Run the real daemon as a separate process on a private state directory: for tests and benchmarks.

Readiness is signalled the way systemd expects (sd_notify READY=1 on NOTIFY_SOCKET), so callers
wait on the daemon's own word instead of sleeping. The daemon is stopped by the pid it was started
with, and the containers it leaves running (by design) are deleted by id from its private runc root.

The benchmarks in scripts/ import this module too (``benchlib`` puts tests/ on their path), so that
the daemon is launched one way everywhere.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from support.fake_systemd import FakeSystemd

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


@attrs.frozen
class DaemonHandle:
    process: trio.Process
    state_dir: Path
    address: str
    events_address: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def runc_root(self) -> Path:
        return self.state_dir / "runc"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def runc_ids(self) -> list[str]:
        """Containers runc knows under the daemon's private root (a test's view of 'leaves no trace')."""
        return [id for id, _pid in runc_containers(self.runc_root)]


def short_temp_dir(prefix: str) -> Path:
    """IPC socket paths must stay under ~107 bytes, so avoid pytest's long tmp_path."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def daemon_argv(state_dir: Path, address: str, *extra_args: str) -> list[str]:
    """The command line of a daemon of this checkout on ``state_dir``, listening on ``address``."""
    return [
        sys.executable,
        "-m",
        "containerd_actors.daemon.main",
        "--state-dir",
        str(state_dir),
        "--listen",
        address,
        *extra_args,
    ]


async def start_daemon(
    state_dir: Path,
    *extra_args: str,
    log_path: Path | None = None,
    debug: bool = True,
    own_session: bool = False,
    systemd: FakeSystemd | None = None,
    prefix: tuple[str, ...] = (),
) -> DaemonHandle:
    """Start `containerd-actors` and return once it has announced READY=1.

    With ``systemd``, the daemon runs as systemd would run it: that fake manager's notify socket
    (kept open, so its fd store follows the daemon) and the fds its store holds, passed back.

    The log goes to ``log_path`` (by default ``<state_dir>.log`` beside the state directory).
    Benchmarks pass ``debug=False``, since debug logging would weigh on what they measure, and
    ``own_session=True``, so that a Ctrl-C in the terminal reaches only the benchmark, which then
    stops the daemon and deletes its containers in order. ``prefix`` goes before the command line
    (``ip netns exec NAME``: a daemon in another network namespace; its unix sockets stay reachable).
    """
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    socket_dir = state_dir / "sock"
    address = f"ipc://{socket_dir}/containerd.sock"
    notify_path = state_dir.parent / f"{state_dir.name}.notify"
    log_path = log_path or state_dir.parent / f"{state_dir.name}.log"
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    argv = [*prefix, *daemon_argv(state_dir, address, *(["--debug"] if debug else []), *extra_args)]
    pass_fds: list[int] = []
    if systemd is None:
        await notify.bind(str(notify_path))
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
    else:
        env = dict(os.environ, **systemd.environment)
        argv, pass_fds = systemd.start_command(argv)
        readies = systemd.ready_count()
    with open(log_path, "ab") as log_file:
        process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
            start_new_session=own_session, pass_fds=pass_fds,
        )  # fmt: skip
    handle = DaemonHandle(process, state_dir, address, f"ipc://{socket_dir}/events.sock", log_path)
    try:
        with trio.fail_after(READY_TIMEOUT_S):
            async with trio.open_nursery() as nursery:

                async def died() -> None:
                    await process.wait()
                    raise RuntimeError(
                        f"daemon exited with {process.returncode} before READY:\n{handle.log_text()}"
                    )

                nursery.start_soon(died)
                if systemd is not None:
                    await systemd.wait_for(lambda: systemd.ready_count() > readies, READY_TIMEOUT_S)
                while systemd is None and b"READY=1" not in await notify.recv(4096):
                    pass
                nursery.cancel_scope.cancel()
    except BaseException:
        with trio.CancelScope(shield=True):
            await stop_daemon(handle)
        raise
    finally:
        notify.close()
        if systemd is None:
            notify_path.unlink(missing_ok=True)
    return handle


async def stop_daemon(handle: DaemonHandle) -> int | None:
    """Stop the daemon by pid; returns its exit code. Its containers keep running (by design)."""
    return await terminate(handle.process)


async def terminate(process: trio.Process) -> int | None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S if it lingers; returns the exit code."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT_S):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode


#: Listings tried while containers are being deleted under the root (see ``runc_containers``).
LIST_ATTEMPTS = 5


def runc_containers(runc_root: Path) -> list[tuple[str, int]]:
    """(id, init pid) of every container under a private runc root; none if the root does not exist."""
    if not runc_root.exists():
        return []
    for _attempt in range(LIST_ATTEMPTS):
        result = subprocess.run(
            ["runc", "--root", str(runc_root), "list", "--format", "json"], capture_output=True, text=True
        )
        if result.returncode == 0:
            entries = json.loads(result.stdout or "null") or []
            return [(entry["id"], int(entry.get("pid") or 0)) for entry in entries]
        if "no such file or directory" not in result.stderr:
            break
        # runc lists the root's entries, then reads each one: a container the daemon deleted in
        # between makes the whole listing fail, and the next listing no longer sees it.
    raise RuntimeError(f"runc list under {runc_root} failed: {result.stderr.strip()}")


def force_delete_argv(runc_root: Path, container_id: str) -> list[str]:
    """``runc delete --force``, one id per call: runc 1.1 accepts no more."""
    return ["runc", "--root", str(runc_root), "delete", "--force", container_id]


def remove_containers(runc_root: Path) -> None:
    """Force-delete every container under a private runc root, by id, one after the other."""
    for container_id, _pid in runc_containers(runc_root):
        subprocess.run(force_delete_argv(runc_root, container_id), capture_output=True)


def unique_id(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def running_daemon(state_dir: Path, *extra_args: str) -> AsyncIterator[DaemonHandle]:
    """A daemon for the length of a block; after it, the daemon is stopped and the containers it
    leaves running (by design) are deleted, so that no test leaks one."""
    handle = await start_daemon(state_dir, *extra_args)
    try:
        yield handle
    finally:
        remove_containers(handle.runc_root)
        await stop_daemon(handle)
