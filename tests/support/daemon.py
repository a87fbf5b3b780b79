"""Run the real daemon as a separate process on a private state directory.

Readiness is signalled the way systemd expects (sd_notify READY=1 on NOTIFY_SOCKET), so tests
wait on the daemon's own word instead of sleeping. Teardown removes every container the daemon
created, by id, from the daemon's private runc root, then stops the daemon by pid.
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
from pathlib import Path

import attrs
import trio

READY_TIMEOUT_S = 20.0


@attrs.frozen
class DaemonHandle:
    process: trio.Process
    state_dir: Path
    address: str
    events_address: str
    log_path: Path

    @property
    def runc_root(self) -> Path:
        return self.state_dir / "runc"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def runc_ids(self) -> list[str]:
        """Containers runc knows under the daemon's private root (a test's view of 'leaves no trace')."""
        result = subprocess.run(
            ["runc", "--root", str(self.runc_root), "list", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        return [entry["id"] for entry in json.loads(result.stdout or "null") or []]


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


async def start_daemon(state_dir: Path, *extra_args: str) -> DaemonHandle:
    """Start `containerd-actors` and return once it has announced READY=1."""
    socket_dir = state_dir / "sock"
    address = f"ipc://{socket_dir}/containerd.sock"
    notify_path = state_dir.parent / f"{state_dir.name}.notify"
    log_path = state_dir.parent / f"{state_dir.name}.log"
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify.bind(str(notify_path))
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
    argv = daemon_argv(state_dir, address, "--debug", *extra_args)
    with open(log_path, "ab") as log_file:
        process = await trio.lowlevel.open_process(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    handle = DaemonHandle(process, state_dir, address, f"ipc://{socket_dir}/events.sock", log_path)
    try:
        with trio.fail_after(READY_TIMEOUT_S):
            async with trio.open_nursery() as nursery:

                async def died() -> None:
                    await process.wait()
                    raise RuntimeError(f"daemon exited with {process.returncode}:\n{handle.log_text()}")

                nursery.start_soon(died)
                while b"READY=1" not in await notify.recv(4096):
                    pass
                nursery.cancel_scope.cancel()
    except BaseException:
        process.kill()
        await process.wait()
        raise
    finally:
        notify.close()
        notify_path.unlink(missing_ok=True)
    return handle


async def stop_daemon(handle: DaemonHandle) -> int | None:
    """SIGTERM by pid, then SIGKILL if it lingers; returns the exit code."""
    if handle.process.returncode is None:
        handle.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            await handle.process.wait()
        if handle.process.returncode is None:
            handle.process.kill()
            await handle.process.wait()
    return handle.process.returncode


def remove_containers(runc_root: Path) -> None:
    """Force-delete every container under a private runc root, by id."""
    if not runc_root.exists():
        return
    result = subprocess.run(
        ["runc", "--root", str(runc_root), "list", "--format", "json"], capture_output=True, text=True
    )
    for entry in json.loads(result.stdout or "null") or []:
        subprocess.run(
            ["runc", "--root", str(runc_root), "delete", "--force", entry["id"]], capture_output=True
        )


def unique_id(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
