"""The daemon's supervisor and container actors in the test's own trio loop, with a stand-in for runc.

``FakeRuntime`` satisfies the container actor's ``ContainerRuntime`` by starting the bundle's (or
the exec'd) command line as a plain child of the test process, with the stdio the actor gives it:
pids, pidfds, exits, signals and pipes are all real, only the container around them is missing.
Each container's processes share one process group, so ``kill_container`` can end them together
the way the kernel ends a pid namespace whose init has died.

Import it as ``from support.actors import Harness`` (pyproject puts tests/ on pytest's path).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import trio
import trio.testing

from containerd_actors.daemon.container.adopt import Adoption
from containerd_actors.daemon.events.messages import EventDraft, EventsMessage
from containerd_actors.daemon.faults import NO_FAULTS, FaultHook
from containerd_actors.daemon.mailbox import forward
from containerd_actors.daemon.metrics.messages import MetricsMessage
from containerd_actors.daemon.state.layout import prepare_state_dir
from containerd_actors.daemon.supervision import RESTARTS_PER_MINUTE
from containerd_actors.daemon.supervisor.actor import Supervisor
from containerd_actors.host.reaping import LocalSubreaper
from containerd_actors.runc.driver import CriuOptions, RuncError, Stdio

T = TypeVar("T")

#: How long a test waits for something the daemon does at once; far above what it takes.
PATIENCE_S = 5.0


def spawn(args: list[str], stdin: int, stdout: int, stderr: int, group: int) -> int:
    """Start ``args`` with the given stdio in process group ``group`` (0: a new one, led by it)."""
    actions = [
        (os.POSIX_SPAWN_DUP2, stdin, 0),
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    return os.posix_spawnp(args[0], args, dict(os.environ), file_actions=actions, setpgroup=group)


class FakeRuntime:
    """A ``ContainerRuntime`` without containers; records what it was asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        #: Container id -> its init's pid (also its process group).
        self.inits: dict[str, int] = {}
        #: Method name -> what it raises on its next call (then it behaves again).
        self.fail_next: dict[str, BaseException] = {}
        #: Method name -> an event the call waits for before it does its work.
        self.hold: dict[str, trio.Event] = {}
        #: Whether a checkpoint with ``exit`` kills the container, as CRIU does; a test that
        #: wants to see the actor wait for that exit kills it itself.
        self.checkpoint_kills = True
        #: A pidfd of every process started, to kill and reap what is left when the test ends
        #: (a pidfd never names a stranger that got a reaped process's pid).
        self.spawned: list[int] = []

    async def _enter(self, method: str, id: str) -> None:
        self.calls.append((method, id))
        if method in self.hold:
            await self.hold[method].wait()
        if method in self.fail_next:
            raise self.fail_next.pop(method)

    def _start_init(self, id: str, bundle: Path, pid_file: Path, stdio: Stdio) -> int:
        args = json.loads((bundle / "config.json").read_text())["process"]["args"]
        pid = spawn(args, stdio.stdin, stdio.stdout, stdio.stderr, group=0)
        self.spawned.append(os.pidfd_open(pid))
        pid_file.write_text(f"{pid}\n")
        self.inits[id] = pid
        return pid

    async def run_detached(
        self,
        id: str,
        bundle: Path,
        pid_file: Path,
        log_file: Path,
        stdio: Stdio,
        console_socket: Path | None = None,
    ) -> int:
        """Pipes only: the daemon tests start no terminal inits (the e2e tests do, with runc)."""
        assert console_socket is None, "the fake runtime starts no terminal inits"
        await self._enter("run", id)
        return self._start_init(id, bundle, pid_file, stdio)

    async def restore_detached(
        self, id: str, bundle: Path, image_path: Path, *rest: Any, console_socket: Path | None = None
    ) -> int:
        """``rest`` is the work path, pid file, log file, stdio and CRIU options, in that order."""
        _work_path, pid_file, _log_file, stdio, _options = rest
        assert console_socket is None, "the fake runtime restores no terminal inits"
        await self._enter("restore", id)
        if not (image_path / "images").is_file():
            raise RuncError("restore", 1, f"no images in {image_path}")
        return self._start_init(id, bundle, pid_file, stdio)

    async def exec_detached(
        self, id: str, process_file: Path, pid_file: Path, *rest: Any, console_socket: Path | None = None
    ) -> int:
        """``rest`` is the log file and the stdio, in that order."""
        _log_file, stdio = rest
        await self._enter("exec", id)
        args = json.loads(process_file.read_text())["args"]
        if shutil.which(args[0]) is None:
            raise RuncError("exec", 1, f"exec: {args[0]!r}: executable file not found in $PATH")
        if console_socket is None:
            pid = spawn(args, stdio.stdin, stdio.stdout, stdio.stderr, group=self.inits[id])
        else:
            master, slave = os.openpty()
            try:
                pid = spawn(args, slave, slave, slave, group=self.inits[id])
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                    connection.connect(str(console_socket))
                    socket.send_fds(connection, [b"pty"], [master])
            finally:
                os.close(slave)
                os.close(master)
        self.spawned.append(os.pidfd_open(pid))
        pid_file.write_text(f"{pid}\n")
        return pid

    async def checkpoint(
        self,
        id: str,
        image_path: Path,
        work_path: Path,
        options: CriuOptions,
        leave_running: bool,
        page_server: str | None = None,
    ) -> None:
        await self._enter("checkpoint", id)
        (image_path / "images").write_text(id)
        if not leave_running and self.checkpoint_kills:
            kill_container(self.inits[id])

    async def pause(self, id: str) -> None:
        await self._enter("pause", id)

    async def resume(self, id: str) -> None:
        await self._enter("resume", id)

    async def delete(self, id: str, force: bool = False) -> None:
        await self._enter("delete", id)


def kill_container(init_pid: int) -> None:
    """SIGKILL every process of a fake container, as the kernel does when a pid namespace ends."""
    with suppress(ProcessLookupError):
        os.killpg(init_pid, signal.SIGKILL)


async def killed(*pids: int) -> None:
    """SIGKILL processes and return once they are dead, and every task that this wakes (the
    actors' exit watchers and drains) has run until it blocks again.

    Death is asynchronous to ``kill``; a pidfd turns readable when it has happened, after the
    process's files are closed, so its pipes' EOF is visible by then too.
    """
    pidfds = []
    for pid in pids:
        try:
            pidfds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            continue  # reaped already
    try:
        for pidfd in pidfds:
            with suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        with trio.fail_after(PATIENCE_S):
            for pidfd in pidfds:
                await trio.lowlevel.wait_readable(pidfd)
    finally:
        for pidfd in pidfds:
            os.close(pidfd)
    await trio.testing.wait_all_tasks_blocked()


class RecordingReaper(LocalSubreaper):
    """The daemon as its own subreaper (the processes are our children), recording the fd store's use."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    async def keep(self, key: str, fds: list[int]) -> None:
        self.calls.append(("keep", key, len(fds)))

    async def drop(self, key: str) -> None:
        self.calls.append(("drop", key, 0))


def write_bundle(directory: Path, *args: str) -> Path:
    """A bundle whose config names only what the fake runtime and the actor read."""
    directory.mkdir(parents=True)
    config = {"process": {"args": list(args), "env": ["PATH=/usr/bin:/bin"], "cwd": "/"}}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


class Harness:
    """A supervisor with fake runc, and the mailboxes of the events and metrics actors as queues."""

    def __init__(
        self,
        state_dir: Path,
        concurrency: int = 4,
        faults: FaultHook = NO_FAULTS,
        restarts_per_minute: int = RESTARTS_PER_MINUTE,
    ) -> None:
        prepare_state_dir(state_dir)
        self.state_dir = state_dir
        self.runtime = FakeRuntime()
        self.reaper = RecordingReaper()
        events_send, self._events = trio.open_memory_channel[EventsMessage](10_000)
        metrics_send, self._metrics = trio.open_memory_channel[MetricsMessage](10_000)
        self.supervisor = Supervisor(
            state_dir,
            concurrency,
            self.runtime,
            self.reaper,
            events_send,
            metrics_send,
            faults=faults,
            restarts_per_minute=restarts_per_minute,
        )

    async def ask(self, request: Any) -> Any:
        """What the API server does with a request: forward it to the supervisor, wait for the answer."""
        with trio.fail_after(PATIENCE_S):
            return await forward(self.supervisor.mailbox, request)

    async def next_event(self) -> EventDraft:
        with trio.fail_after(PATIENCE_S):
            message = await self._events.receive()
        assert isinstance(message, EventDraft)
        return message

    def events_so_far(self) -> list[EventsMessage]:
        return _take_all(self._events)

    def measurements(self) -> list[MetricsMessage]:
        return _take_all(self._metrics)

    def kill_all(self) -> None:
        """Kill and reap every process the fake runtime started that the actors have not reaped."""
        for pidfd in self.runtime.spawned:
            with suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        for pidfd in self.runtime.spawned:
            with suppress(ChildProcessError):
                os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
            os.close(pidfd)
        self.runtime.spawned.clear()


def _take_all(channel: trio.MemoryReceiveChannel[T]) -> list[T]:
    """What a channel holds now, without waiting."""
    taken = []
    while True:
        try:
            taken.append(channel.receive_nowait())
        except trio.WouldBlock:
            return taken


@asynccontextmanager
async def running(harness: Harness, adoptions: list[Adoption] | None = None) -> AsyncIterator[Harness]:
    """Run the supervisor until the block ends; then every process the fake runtime started is killed."""
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.supervisor.run, adoptions)
            try:
                yield harness
            finally:
                nursery.cancel_scope.cancel()
    finally:
        harness.kill_all()
