"""The container actor: one per container, owning its runc init process and stdio.

It serialises that container's commands through its mailbox, watches its init exit, and reports
snapshots to the supervisor. Nothing else touches its pidfd, pipes or directory.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import fcntl
import itertools
import json
import logging
import os
import shutil
import signal as signals
import socket
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import attrs
import cattrs
import trio

from containerd_actors.daemon.container.checkpoints import (
    checkpoints_dir,
    criu_options,
    delete_checkpoint,
    list_checkpoints,
    new_checkpoint_dir,
    new_checkpoint_record,
    publish_checkpoint,
    read_checkpoint,
)
from containerd_actors.daemon.container.messages import (
    AddProcessCommand,
    ChangeStatus,
    ContainerRemoved,
    ContainerUpdated,
    DeleteCheckpointCommand,
    InitExited,
    ListCheckpointsCommand,
    OomNotified,
    SampleStats,
    SignalProcess,
    TakeCheckpoint,
)
from containerd_actors.daemon.container.stdio import ContainerPipes, ProcessIO, drain_to_log
from containerd_actors.daemon.events.actor import EventDraft
from containerd_actors.daemon.mailbox import CommandError, ReplyTo, answer, fail
from containerd_actors.daemon.metrics.actor import AddToCounter, RecordDuration, tell
from containerd_actors.daemon.metrics.registry import CONTAINER_DELETE_TIME, CONTAINER_START_TIME, CONTAINERS
from containerd_actors.daemon.state.layout import ContainerPaths, ContainerRecord, write_json_atomically
from containerd_actors.host.cgroup_paths import CgroupGone, CgroupPaths, resolve_cgroup_paths
from containerd_actors.host.cgroup_stats import read_cgroup_stats, sample_container
from containerd_actors.host.fds import close_quietly
from containerd_actors.host.oom import watch_oom
from containerd_actors.host.procfs import process_start_time
from containerd_actors.host.reaping import ExitWatcher, open_pidfd
from containerd_actors.protocol import (
    Checkpoint,
    ContainerInfo,
    ErrorCode,
    EventType,
    ProcessInfo,
    User,
    converter,
)
from containerd_actors.runc.bundle import read_bundle_config, validate_bundle
from containerd_actors.runc.driver import Runc, RuncError, RuncTimeout, Stdio

log = logging.getLogger(__name__)

#: Why an exit event can carry no status: the process was not our child or the reaper's.
UNKNOWN_EXIT_REASON = (
    "the process exited while no reaper was its parent (the daemon and its reaper were both down), "
    "so its exit status could not be observed"
)

#: After the init exits, the kernel has already killed the rest of its pid namespace, so pipe
#: EOF follows at once; this bound only guards against a writer outside the namespace.
DRAIN_GRACE_S = 2.0
#: How long runc may take to hand over a new terminal after ``runc exec -d`` has returned.
CONSOLE_HANDOVER_S = 5.0
#: A bigger pipe buffer means fewer wake-ups per megabyte for a chatty exec'd process (Linux caps it
#: at /proc/sys/fs/pipe-max-size for unprivileged users; the daemon runs as root).
EXEC_PIPE_BYTES = 1 << 20
F_SETPIPE_SZ = 1031
#: Exited exec'd processes whose logs a container keeps (a health check exec'd every few seconds
#: must not fill the state directory); older ones are forgotten and their files removed.
KEPT_EXITED_EXECS = 64


@attrs.define
class ExecProcess:
    """A live process exec'd into the container: what State shows, its pidfd, and its stdio."""

    info: ProcessInfo
    pidfd: int
    io: ProcessIO
    done: trio.Event = attrs.field(factory=trio.Event)


async def _receive_console(listener: socket.socket) -> list[int]:
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
                _, fds, _, _ = socket.recv_fds(connection, 4096, 1, socket.MSG_CMSG_CLOEXEC)
                return fds
            except BlockingIOError:
                await trio.lowlevel.wait_readable(connection)


def _merge_env(base: list[str], overrides: list[str]) -> list[str]:
    """The container's environment with ``overrides`` applied by key (an override wins)."""
    merged: dict[str, str] = {}
    for entry in [*base, *overrides]:
        key, _, _ = entry.partition("=")
        merged[key] = entry
    return list(merged.values())


def _pidfd_if_alive(pid: int) -> int:
    """-1 when the process is already gone (a reaper may reap a quick exit before we look)."""
    try:
        return open_pidfd(pid)
    except ProcessLookupError:
        return -1


def _init_process_info(pid: int, config: dict[str, Any]) -> ProcessInfo:
    process = config.get("process") or {}
    user = process.get("user") or {}
    return ProcessInfo(
        pid=pid,
        args=[str(a) for a in process.get("args") or []],
        env=[str(e) for e in process.get("env") or []],
        cwd=str(process.get("cwd") or "/"),
        user=User(
            uid=int(user.get("uid", 0)),
            gid=int(user.get("gid", 0)),
            additional_gids=[int(g) for g in user.get("additionalGids") or []],
        ),
        terminal=bool(process.get("terminal", False)),
    )


@attrs.frozen
class ActorDeps:
    """What every container actor is handed by the supervisor: shared services and the mailboxes it tells."""

    runc: Runc
    start_limiter: trio.CapacityLimiter
    exit_watcher: ExitWatcher
    events: trio.MemorySendChannel[Any]
    supervisor: trio.MemorySendChannel[Any]
    metrics: trio.MemorySendChannel[Any]
    oom_notify: bool


class ContainerActor:
    def __init__(
        self, id: str, bundle: str, checkpoint: str | None, paths: ContainerPaths, deps: ActorDeps
    ) -> None:
        self.id = id
        self.bundle = bundle
        self._restore_from = checkpoint
        self._bundle_path = Path(bundle)
        self.paths = paths
        self._runc = deps.runc
        self._start_limiter = deps.start_limiter
        self._exit_watcher = deps.exit_watcher
        self._events = deps.events
        self._supervisor = deps.supervisor
        self._metrics = deps.metrics
        self._oom_notify = deps.oom_notify
        self._mailbox_send, self._mailbox = trio.open_memory_channel[Any](64)
        self._pidfd = -1
        self._init: ProcessInfo | None = None
        self._process_spec: dict[str, Any] = {}
        self._pipes: ContainerPipes | None = None
        self._init_io: ProcessIO | None = None
        #: Every process's stdio by pid, the init's included. The supervisor holds the same dict
        #: (read-only) to serve ReadOutput/WriteInput without a round trip through this mailbox.
        self.processes: dict[int, ProcessIO] = {}
        self._execs: dict[int, ExecProcess] = {}
        self._exec_numbers = itertools.count(1)
        self._exited_execs: collections.deque[int] = collections.deque()
        self._nursery: trio.Nursery | None = None
        self._drained = trio.Event()
        #: Set only while adopting: pipe ends the reaper held for this container's exec'd processes.
        self._adopted_exec_fds: dict[str, list[int]] | None = None
        self._status = "running"
        self._cgroups: CgroupPaths | None = None
        self._ooms_reported = 0

    @property
    def mailbox(self) -> trio.MemorySendChannel[Any]:
        return self._mailbox_send

    # ------------------------------------------------------------------ lifecycle

    async def run(self, start_reply: ReplyTo) -> None:
        """Start the container, answer the creator, then serve commands until the init exits."""
        started_at = time.monotonic_ns()
        try:
            pid = await self._start()
        except CommandError as error:
            fail(start_reply, error)
            await self._supervisor.send(ContainerRemoved(self.id))
            return
        except BaseException as error:
            fail(start_reply, CommandError(ErrorCode.INTERNAL, f"start failed: {error!r}"))
            await self._supervisor.send(ContainerRemoved(self.id))
            raise
        answer(start_reply, pid)
        tell(self._metrics, RecordDuration(CONTAINER_START_TIME, time.monotonic_ns() - started_at))
        await self._keep_pipes_in_reaper()
        tell(self._metrics, AddToCounter(CONTAINERS, +1))
        await self._events.send(EventDraft(EventType.START_CONTAINER, self.id, pid))
        await self._report_status("running")
        try:
            await self._supervise()
        finally:
            tell(self._metrics, AddToCounter(CONTAINERS, -1))

    async def _start(self) -> int:
        try:
            bundle = validate_bundle(self.bundle)
            config = read_bundle_config(bundle)
            init_template = _init_process_info(0, config)
            self._process_spec = dict(config.get("process") or {})
        except (ValueError, TypeError, AttributeError) as exc:
            raise CommandError(ErrorCode.INVALID_BUNDLE, f"bad bundle config: {exc}") from None
        self._bundle_path = bundle
        restore_from = read_checkpoint(bundle, self._restore_from) if self._restore_from else None
        try:
            self.paths.create()
        except FileExistsError:
            raise CommandError(
                ErrorCode.ALREADY_EXISTS,
                f"container {self.id!r} already has state in {self.paths.directory}"
                " (left by an earlier daemon?)",
            ) from None
        pipes = ContainerPipes.create()
        # Opened before the reply, so a client that saw the pid finds the log files.
        io = ProcessIO(self.paths.stdout_log, self.paths.stderr_log, pipes.stdin_write)
        io.on_input_closed = self._stdin_closed_by_client
        try:
            async with self._start_limiter:
                if restore_from is None:
                    pid = await self._runc.run_detached(
                        self.id, bundle, self.paths.pid_file, self.paths.runc_log, pipes.child_stdio()
                    )
                else:
                    pid = await self._runc.restore_detached(
                        self.id,
                        bundle,
                        checkpoints_dir(bundle) / restore_from.name,
                        self._fresh_criu_work_dir(),
                        self.paths.pid_file,
                        self.paths.runc_log,
                        pipes.child_stdio(),
                        criu_options(restore_from),
                    )
            pipes.close_child_ends()
            self._pidfd = _pidfd_if_alive(pid)
        except BaseException as exc:
            pipes.close_all()
            io.stdout.close()
            io.stderr.close()
            with trio.CancelScope(shield=True):
                await self._forget_failed_start()
            if isinstance(exc, RuncTimeout):
                raise CommandError(ErrorCode.RUNTIME_FAILED, exc.message) from None
            if isinstance(exc, RuncError):
                raise CommandError(
                    ErrorCode.RUNTIME_FAILED, f"runc {exc.command} failed: {exc.message}"
                ) from None
            if isinstance(exc, OSError):
                raise CommandError(ErrorCode.RUNTIME_FAILED, f"cannot start container: {exc}") from None
            raise
        self._pipes = pipes
        io.pid = pid
        self._init_io = io
        self.processes[pid] = io
        self._init = attrs.evolve(init_template, pid=pid)
        write_json_atomically(
            self.paths.record,
            {
                "id": self.id,
                "bundle": str(bundle),
                "pid": pid,
                "pid_start_time": process_start_time(pid),
                "created": time.time(),
            },
        )
        return pid

    async def _keep_pipes_in_reaper(self) -> None:
        """The reaper holds copies of our pipe ends, so a server crash never closes a container's stdio."""
        assert self._pipes is not None
        pipes = self._pipes
        await self._exit_watcher.keep(self.id, [pipes.stdin_write, pipes.stdout_read, pipes.stderr_read])

    def _stdin_closed_by_client(self) -> None:
        """The reaper holds a copy of the stdin pipe too: it must let go, or the init never sees EOF."""
        if self._nursery is not None and self._pipes is not None and self._init_io is not None:
            outputs = (self._pipes.stdout_read, self._pipes.stderr_read)
            self._keep_only_outputs_soon(self.id, self._init_io, outputs)

    def _keep_only_outputs_soon(self, key: str, io: ProcessIO, out_fds: tuple[int, int]) -> None:
        """Make the reaper hold only the output ends of ``key``'s pipes (stdin was closed by a client).

        Runs synchronously at the client's EOF and duplicates the ends whose drain is still going:
        a drain closes its end when the process exits, and by the time a task could send it, that
        number may belong to another file.
        """
        assert self._nursery is not None
        logs = (io.stdout, io.stderr)
        alive = [os.dup(fd) for fd, log in zip(out_fds, logs, strict=True) if fd >= 0 and not log.finished]
        self._nursery.start_soon(self._keep_only_outputs, key, alive)

    async def _keep_only_outputs(self, key: str, outputs: list[int]) -> None:
        try:
            await self._exit_watcher.drop(key)
            if outputs:
                await self._exit_watcher.keep(key, outputs)
        finally:
            close_quietly(*outputs)

    async def run_adopted(
        self, record: ContainerRecord, kept_fds: list[int], exec_fds: dict[str, list[int]] | None = None
    ) -> None:
        """Take over a container a previous server started, from its record and the reaper's pipe ends."""
        self._adopted_exec_fds = exec_fds if exec_fds is not None else {}
        try:
            init_template = _init_process_info(0, read_bundle_config(self._bundle_path))
        except (ValueError, TypeError, AttributeError):
            init_template = ProcessInfo(pid=0, args=[], env=[], cwd="/", user=User())
        self._init = attrs.evolve(init_template, pid=record.pid)
        if len(kept_fds) == 3:
            stdin_write, stdout_read, stderr_read = kept_fds
        elif len(kept_fds) == 2:
            stdin_write = -1  # a client closed the container's stdin before the restart
            stdout_read, stderr_read = kept_fds
        else:
            for fd in kept_fds:
                close_quietly(fd)
            stdin_write, stdout_read, stderr_read = -1, -1, -1
        self._pipes = ContainerPipes(-1, stdin_write, stdout_read, -1, stderr_read, -1)
        # The logs continue where the previous server left them (offsets count from the current file).
        self.paths.logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        io = ProcessIO(self.paths.stdout_log, self.paths.stderr_log, stdin_write)
        io.pid = record.pid
        io.on_input_closed = self._stdin_closed_by_client
        self._init_io = io
        self.processes[record.pid] = io
        alive = process_start_time(record.pid) == record.pid_start_time
        self._pidfd = _pidfd_if_alive(record.pid) if alive else -1
        tell(self._metrics, AddToCounter(CONTAINERS, +1))
        await self._report_status("running")
        log.info("container %s: adopted (pid %d%s)", self.id, record.pid, "" if alive else ", already exited")
        try:
            await self._supervise()
        finally:
            tell(self._metrics, AddToCounter(CONTAINERS, -1))

    def _fresh_criu_work_dir(self) -> Path:
        """CRIU writes its logs here; each operation starts from an empty one so a log tail is its own."""
        work = self.paths.directory / "criu-work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        return work

    async def _forget_failed_start(self) -> None:
        """A failed start leaves no trace: not in runc's root, not in the state directory."""
        try:
            await self._runc.delete(self.id, force=True)
        except RuncError:
            pass  # runc already cleaned up, which is the usual case
        self.paths.remove()
        self.paths.remove_logs()

    async def _supervise(self) -> None:
        assert self._pipes is not None and self._init is not None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            drains = trio.CancelScope()
            nursery.start_soon(self._drain_outputs, drains)
            nursery.start_soon(self._watch_init, self._init.pid)
            if self._adopted_exec_fds is not None:
                self._adopt_execs(self._adopted_exec_fds)
                self._adopted_exec_fds = None
            if self._oom_notify:
                await self._start_oom_watch(nursery)
            async for message in self._mailbox:
                if isinstance(message, SignalProcess):
                    self._signal(message)
                elif isinstance(message, AddProcessCommand):
                    await self._reply_with(message.reply_to, self._add_process(message))
                elif isinstance(message, SampleStats):
                    self._sample_stats(message.reply_to)
                elif isinstance(message, ChangeStatus):
                    await self._reply_with(message.reply_to, self._change_status(message.status))
                elif isinstance(message, OomNotified):
                    await self._report_ooms()
                elif isinstance(message, TakeCheckpoint) and message.exit:
                    if await self._checkpoint_and_exit(message, drains):
                        nursery.cancel_scope.cancel()
                        break
                elif isinstance(message, TakeCheckpoint):
                    await self._reply_with(message.reply_to, self._take_checkpoint(message))
                elif isinstance(message, ListCheckpointsCommand):
                    answer(message.reply_to, list_checkpoints(self._bundle_path))
                elif isinstance(message, DeleteCheckpointCommand):
                    await self._reply_with(message.reply_to, self._delete_checkpoint(message.name))
                elif isinstance(message, InitExited):
                    await self._finish(message.status, drains)
                    nursery.cancel_scope.cancel()
                    break
        self._refuse_remaining_commands()

    def _refuse_remaining_commands(self) -> None:
        """Commands that raced with the exit get an answer instead of waiting forever."""
        while True:
            try:
                message = self._mailbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if hasattr(message, "reply_to"):
                fail(message.reply_to, CommandError(ErrorCode.NOT_FOUND, f"container {self.id!r} has exited"))
        # No await since the drain above, so nothing slipped in; later senders see BrokenResourceError.
        self._mailbox.close()

    async def _drain_outputs(self, scope: trio.CancelScope) -> None:
        assert self._pipes is not None and self._init_io is not None
        with scope:
            async with trio.open_nursery() as nursery:
                for fd, log_file in zip(
                    (self._pipes.stdout_read, self._pipes.stderr_read),
                    (self._init_io.stdout, self._init_io.stderr),
                    strict=True,
                ):
                    if fd >= 0:
                        nursery.start_soon(drain_to_log, fd, log_file)
                    else:
                        log_file.close()  # adopted without its pipes: nothing to drain
        self._drained.set()

    async def _watch_init(self, pid: int) -> None:
        status = self._exit_watcher.exited_while_away(pid)
        if status is None:
            status = await self._exit_watcher.wait_for_exit(self._pidfd, pid)
        await self._mailbox_send.send(InitExited(status))

    async def _delete_from_runc(self) -> None:
        try:
            await self._runc.delete(self.id)
        except RuncError as exc:
            if "does not exist" in exc.message:
                return  # runc removed it already, as a checkpoint with --exit does
            log.warning("container %s: runc delete failed (%s); forcing", self.id, exc.message)
            try:
                await self._runc.delete(self.id, force=True)
            except RuncError as exc2:
                log.error("container %s: runc delete --force failed: %s", self.id, exc2.message)

    async def _finish(self, status: int | None, drains: trio.CancelScope) -> None:
        """Init is gone: delete it from runc, free the id, then tell the world.

        The kernel has killed the rest of the pid namespace with the init, so the exec'd processes'
        exits are reaped and announced first: an ``exit`` for the init is the container's last event.
        """
        assert self._init is not None and self._init_io is not None
        pid = self._init.pid
        if self._oom_notify:
            await self._report_ooms()  # an OOM kill is announced before the exit it caused
        self._init_io.close_input()
        for process in list(self._execs.values()):
            with trio.move_on_after(DRAIN_GRACE_S * 2):
                await process.done.wait()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        deleting_at = time.monotonic_ns()
        await self._delete_from_runc()
        tell(self._metrics, RecordDuration(CONTAINER_DELETE_TIME, time.monotonic_ns() - deleting_at))
        with trio.move_on_after(DRAIN_GRACE_S):
            await self._drained.wait()
        drains.cancel()
        # Cancelled drains close their logs only when they next run; close them now, so that
        # readers see the end before the exit event.
        self._init_io.stdout.close()
        self._init_io.stderr.close()
        self._init_io.mark_exited(status)
        self.paths.remove()
        await self._supervisor.send(ContainerRemoved(self.id, dict(self.processes), pid))
        reason = None if status is not None else UNKNOWN_EXIT_REASON
        await self._events.send(EventDraft(EventType.EXIT, self.id, pid, status, reason))
        await self._exit_watcher.drop(self.id)
        await self._exit_watcher.acknowledge(pid)
        log.debug("container %s: init %d exited with %s", self.id, pid, status)

    # ------------------------------------------------------------------ commands

    def _signal(self, message: SignalProcess) -> None:
        assert self._init is not None
        if message.pid in (0, self._init.pid):
            pidfd = self._pidfd
        elif message.pid in self._execs:
            pidfd = self._execs[message.pid].pidfd
        else:
            fail(
                message.reply_to,
                CommandError(
                    ErrorCode.NOT_FOUND, f"container {self.id!r} has no process with pid {message.pid}"
                ),
            )
            return
        try:
            if pidfd < 0:
                raise ProcessLookupError
            signals.pidfd_send_signal(pidfd, message.signal)
        except ProcessLookupError:
            fail(message.reply_to, CommandError(ErrorCode.NOT_FOUND, f"container {self.id!r} is not running"))
            return
        except OSError as exc:
            fail(message.reply_to, CommandError(ErrorCode.RUNTIME_FAILED, f"signal failed: {exc}"))
            return
        answer(message.reply_to, None)

    async def _reply_with(self, reply_to: ReplyTo, work: Awaitable[Any]) -> None:
        """Run one command to completion, answering with its result or its CommandError."""
        try:
            result = await work
        except CommandError as error:
            fail(reply_to, error)
        else:
            answer(reply_to, result)

    async def _take_checkpoint(self, command: TakeCheckpoint) -> Checkpoint:
        """Dump with CRIU while this actor holds the container; other containers carry on meanwhile."""
        assert self._init is not None
        record = new_checkpoint_record(
            command.name, command.tcp, command.unix_sockets, command.shell, command.exit
        )
        with new_checkpoint_dir(self._bundle_path, command.name) as images:
            try:
                await self._runc.checkpoint(
                    self.id,
                    images,
                    self._fresh_criu_work_dir(),
                    criu_options(record),
                    leave_running=not command.exit,
                )
            except RuncError as exc:
                raise CommandError(ErrorCode.RUNTIME_FAILED, f"checkpoint failed: {exc.message}") from None
            publish_checkpoint(self._bundle_path, images, record)
        await self._events.send(EventDraft(EventType.CHECKPOINT, self.id, self._init.pid))
        return record

    async def _checkpoint_and_exit(self, command: TakeCheckpoint, drains: trio.CancelScope) -> bool:
        """``--exit``: answer only once the container is gone, so its id can be restored at once.

        Returns whether the container has exited (and this actor is done).
        """
        try:
            record = await self._take_checkpoint(command)
        except CommandError as error:
            fail(command.reply_to, error)
            return False
        while not isinstance(message := await self._mailbox.receive(), InitExited):
            if hasattr(message, "reply_to"):
                fail(message.reply_to, CommandError(ErrorCode.NOT_FOUND, f"container {self.id!r} is exiting"))
        await self._finish(message.status, drains)
        answer(command.reply_to, record)
        return True

    async def _delete_checkpoint(self, name: str) -> None:
        delete_checkpoint(self._bundle_path, name)

    def _cgroup_paths(self) -> CgroupPaths:
        """Resolved once, on first use: later samples only read files."""
        assert self._init is not None
        if self._cgroups is None:
            try:
                self._cgroups = resolve_cgroup_paths(self._init.pid)
            except (OSError, ValueError) as exc:
                raise CgroupGone(f"cannot find the cgroups of pid {self._init.pid}: {exc}") from None
        return self._cgroups

    def _sample_stats(self, reply_to: ReplyTo) -> None:
        try:
            answer(reply_to, sample_container(self.id, self._cgroup_paths()))
        except CgroupGone as exc:
            fail(reply_to, CommandError(ErrorCode.NOT_FOUND, f"container {self.id!r} has no cgroup: {exc}"))

    async def _change_status(self, status: str) -> None:
        """runc pause/resume freeze or thaw every process of the container through its freezer cgroup."""
        assert self._init is not None
        if status == self._status:
            return
        try:
            if status == "paused":
                await self._runc.pause(self.id)
            else:
                await self._runc.resume(self.id)
        except RuncError as exc:
            raise CommandError(ErrorCode.RUNTIME_FAILED, f"{exc.command} failed: {exc.message}") from None
        await self._report_status(status)
        kind = EventType.PAUSE if status == "paused" else EventType.RESUME
        await self._events.send(EventDraft(kind, self.id, self._init.pid))

    async def _start_oom_watch(self, nursery: trio.Nursery) -> None:
        try:
            paths = self._cgroup_paths()
            await nursery.start(watch_oom, paths, self._mailbox_send_oom)
        except (CgroupGone, LookupError, OSError) as exc:
            log.warning("container %s: OOM notifications unavailable: %s", self.id, exc)

    def _mailbox_send_oom(self) -> None:
        """Called by the OOM watcher; the actor itself counts and announces, so nothing is reported twice."""
        try:
            self._mailbox_send.send_nowait(OomNotified())
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # _finish catches up from the cgroup's own counter

    async def _report_ooms(self) -> None:
        """Announce every OOM kill the cgroup has counted that is not yet announced."""
        assert self._init is not None
        try:
            stats = read_cgroup_stats(self._cgroup_paths())
        except CgroupGone:
            return
        kills = stats.memory.oom_kills if stats.memory is not None else 0
        while self._ooms_reported < kills:
            self._ooms_reported += 1
            await self._events.send(EventDraft(EventType.OOM, self.id, self._init.pid))

    async def _report_status(self, status: str) -> None:
        self._status = status
        await self._supervisor.send(ContainerUpdated(self._snapshot()))

    def _snapshot(self) -> ContainerInfo:
        assert self._init is not None
        processes = [self._init, *(process.info for process in self._execs.values())]
        return ContainerInfo(self.id, self.bundle, self._status, self._init.pid, processes)

    # ------------------------------------------------------------------ exec

    def _exec_spec(self, command: AddProcessCommand) -> dict[str, Any]:
        """The container's own process spec (capabilities, rlimits, ...) with the request's changes.

        ``runc exec --process`` takes the file as the whole spec, so starting from the bundle's
        keeps exec'd processes as privileged as ``runc exec ID ARGS`` would make them.
        """
        assert self._init is not None
        spec = copy.deepcopy(self._process_spec)
        spec["args"] = list(command.args)
        spec["env"] = _merge_env(list(self._init.env), list(command.env))
        spec["cwd"] = command.cwd or self._init.cwd or "/"
        if command.user is not None:
            spec["user"] = {
                "uid": command.user.uid,
                "gid": command.user.gid,
                "additionalGids": list(command.user.additional_gids),
            }
        spec["terminal"] = command.terminal
        spec.pop("consoleSize", None)
        if command.terminal and command.rows and command.cols:
            spec["consoleSize"] = {"height": command.rows, "width": command.cols}
        return spec

    async def _add_process(self, command: AddProcessCommand) -> int:
        """``runc exec -d`` a process, then own it like the init: drain, watch, report its exit."""
        assert self._nursery is not None
        if self._status == "paused":
            raise CommandError(ErrorCode.INVALID_STATE, f"container {self.id!r} is paused; resume it first")
        spec = self._exec_spec(command)
        number = next(self._exec_numbers)
        process_file = self.paths.directory / f"exec-{number}.json"
        pid_file = self.paths.directory / f"exec-{number}.pid"
        log_file = self.paths.directory / f"exec-{number}.runc.log"
        write_json_atomically(process_file, {**spec})
        try:
            if command.terminal:
                pid, stdin_fd, out_fds = await self._exec_with_terminal(process_file, pid_file, log_file)
            else:
                pid, stdin_fd, out_fds = await self._exec_with_pipes(process_file, pid_file, log_file)
        except RuncTimeout as exc:
            raise CommandError(ErrorCode.RUNTIME_FAILED, exc.message) from None
        except RuncError as exc:
            raise CommandError(ErrorCode.RUNTIME_FAILED, f"runc exec failed: {exc.message}") from None
        except OSError as exc:
            raise CommandError(ErrorCode.RUNTIME_FAILED, f"cannot exec: {exc}") from None
        finally:
            for path in (process_file, pid_file, log_file):
                path.unlink(missing_ok=True)
        pidfd = _pidfd_if_alive(pid)  # -1 if the reaper has reaped a quick exit already
        self._forget_exec(pid)  # a recycled pid must not append to an older process's logs
        stdout_path, stderr_path = self.paths.exec_logs(pid)
        io = ProcessIO(stdout_path, stderr_path, stdin_fd, terminal=command.terminal)
        io.pid = pid
        info = ProcessInfo(
            pid=pid,
            args=list(spec["args"]),
            env=list(spec["env"]),
            cwd=str(spec["cwd"]),
            user=command.user if command.user is not None else self._init_user(),
            terminal=command.terminal,
        )
        process = ExecProcess(info, pidfd, io)
        write_json_atomically(
            self.paths.exec_record(pid),
            {"process": converter.unstructure(info), "pid_start_time": process_start_time(pid)},
        )
        await self._exit_watcher.keep(_exec_key(self.id, pid), [stdin_fd, *(fd for fd in out_fds if fd >= 0)])
        self._own_exec(process, out_fds)
        await self._events.send(EventDraft(EventType.START_PROCESS, self.id, pid))
        await self._report_status(self._status)
        return pid

    def _own_exec(self, process: ExecProcess, out_fds: tuple[int, int]) -> None:
        """Drain and watch an exec'd process, whether this server started it or adopted it."""
        assert self._nursery is not None
        pid = process.info.pid
        if not process.info.terminal:
            # The reaper holds a copy of the stdin pipe: on a client's EOF it must let go too.
            process.io.on_input_closed = lambda: self._keep_only_outputs_soon(
                _exec_key(self.id, pid), process.io, out_fds
            )
        self._execs[pid] = process
        self.processes[pid] = process.io
        drains = trio.CancelScope()
        drained = trio.Event()
        self._nursery.start_soon(self._drain_exec, out_fds, process.io, drains, drained)
        self._nursery.start_soon(self._watch_exec, process, drains, drained)

    def _adopt_execs(self, kept: dict[str, list[int]]) -> None:
        """Re-track the exec'd processes a previous server started, from their records and kept pipes."""
        for record_path in sorted(self.paths.directory.glob("exec-*.process.json")):
            try:
                raw = json.loads(record_path.read_bytes())
                info = converter.structure(raw["process"], ProcessInfo)
                start_time = raw.get("pid_start_time")
            except (OSError, ValueError, KeyError, TypeError, cattrs.BaseValidationError) as exc:
                log.warning("container %s: ignoring unreadable %s: %s", self.id, record_path, exc)
                record_path.unlink(missing_ok=True)
                continue
            fds = kept.pop(_exec_key(self.id, info.pid), [])
            if info.terminal and len(fds) == 2:
                stdin_fd, out_fds = fds[0], (fds[1], -1)
            elif not info.terminal and len(fds) == 3:
                stdin_fd, out_fds = fds[0], (fds[1], fds[2])
            elif not info.terminal and len(fds) == 2:  # its stdin was closed before the restart
                stdin_fd, out_fds = -1, (fds[0], fds[1])
            else:
                for fd in fds:
                    close_quietly(fd)
                stdin_fd, out_fds = -1, (-1, -1)
            alive = process_start_time(info.pid) == start_time
            stdout_path, stderr_path = self.paths.exec_logs(info.pid)
            io = ProcessIO(stdout_path, stderr_path, stdin_fd, terminal=info.terminal)
            io.pid = info.pid
            self._own_exec(ExecProcess(info, _pidfd_if_alive(info.pid) if alive else -1, io), out_fds)
            log.info("container %s: adopted exec'd process %d", self.id, info.pid)

    def _forget_exec(self, pid: int) -> None:
        """Drop an exited exec'd process's stdio and log files (not the init's, not a live one's)."""
        if pid in self._execs or self._init is None or pid == self._init.pid:
            return
        if pid in self._exited_execs:
            self._exited_execs.remove(pid)
        self.processes.pop(pid, None)
        for path in self.paths.exec_logs(pid):
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".1").unlink(missing_ok=True)

    def _init_user(self) -> User:
        assert self._init is not None
        return self._init.user

    async def _exec_with_pipes(
        self, process_file: Path, pid_file: Path, log_file: Path
    ) -> tuple[int, int, tuple[int, int]]:
        pipes = ContainerPipes.create()
        for fd in (pipes.stdout_write, pipes.stderr_write):
            try:
                fcntl.fcntl(fd, F_SETPIPE_SZ, EXEC_PIPE_BYTES)
            except OSError:
                pass  # a smaller buffer only costs wake-ups
        try:
            pid = await self._runc.exec_detached(
                self.id, process_file, pid_file, log_file, pipes.child_stdio()
            )
        except BaseException:
            pipes.close_all()
            raise
        pipes.close_child_ends()
        return pid, pipes.stdin_write, (pipes.stdout_read, pipes.stderr_read)

    async def _exec_with_terminal(
        self, process_file: Path, pid_file: Path, log_file: Path
    ) -> tuple[int, int, tuple[int, int]]:
        """runc creates the pty and sends its master over a unix socket we listen on (SCM_RIGHTS).

        The socket lives in a fresh private directory under /tmp: a path under the state
        directory could exceed the 107-byte limit of unix socket paths with a long container id.
        """
        directory = tempfile.mkdtemp(prefix="actr-console-")
        path = Path(directory) / "console.sock"
        listener = socket.socket(
            socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        )
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            listener.bind(str(path))
            listener.listen(1)
            pid = await self._runc.exec_detached(
                self.id,
                process_file,
                pid_file,
                log_file,
                Stdio(devnull, devnull, devnull),
                console_socket=path,
            )
            # runc has sent the master before exiting, so it normally waits in the socket already;
            # never block the event loop on it all the same.
            fds: list[int] = []
            with trio.move_on_after(CONSOLE_HANDOVER_S):
                fds = await _receive_console(listener)
            if not fds:
                # Nobody could ever read or write this process's terminal: do not leave it running.
                with contextlib.suppress(OSError):
                    os.kill(pid, signals.SIGKILL)
                    os.waitpid(pid, 0)
                raise OSError(
                    f"runc sent no terminal over the console socket within {CONSOLE_HANDOVER_S:g} s"
                )
            master = fds[0]
            os.set_inheritable(master, False)
        finally:
            os.close(devnull)
            listener.close()
            shutil.rmtree(directory, ignore_errors=True)
        return pid, master, (os.dup(master), -1)

    async def _drain_exec(
        self, out_fds: tuple[int, int], io: ProcessIO, scope: trio.CancelScope, drained: trio.Event
    ) -> None:
        stdout_fd, stderr_fd = out_fds
        with scope:
            async with trio.open_nursery() as nursery:
                if stdout_fd >= 0:
                    nursery.start_soon(drain_to_log, stdout_fd, io.stdout)
                if stderr_fd >= 0:
                    nursery.start_soon(drain_to_log, stderr_fd, io.stderr)
                else:
                    io.stderr.close()  # a terminal merges stderr into its one output
        io.stdout.close()
        io.stderr.close()
        drained.set()

    async def _watch_exec(self, process: ExecProcess, drains: trio.CancelScope, drained: trio.Event) -> None:
        """Reap an exec'd process, wait for its output to end, then announce its exit."""
        pid = process.info.pid
        status = await self._exit_watcher.wait_for_exit(process.pidfd, pid)
        if process.pidfd >= 0:
            os.close(process.pidfd)
            process.pidfd = -1
        with trio.move_on_after(DRAIN_GRACE_S):
            await drained.wait()
        drains.cancel()
        process.io.stdout.close()
        process.io.stderr.close()
        process.io.mark_exited(status)
        del self._execs[pid]
        self._exited_execs.append(pid)
        while len(self._exited_execs) > KEPT_EXITED_EXECS:
            self._forget_exec(self._exited_execs[0])
        reason = None if status is not None else UNKNOWN_EXIT_REASON
        await self._events.send(EventDraft(EventType.EXIT, self.id, pid, status, reason))
        self.paths.exec_record(pid).unlink(missing_ok=True)
        await self._exit_watcher.drop(_exec_key(self.id, pid))
        await self._exit_watcher.acknowledge(pid)
        await self._report_status(self._status)
        process.done.set()
        log.debug("container %s: exec'd process %d exited with %s", self.id, pid, status)


def _exec_key(container_id: str, pid: int) -> str:
    """The reaper's key for an exec'd process's pipe ends; ``/`` never occurs in a container id."""
    return f"{container_id}/{pid}"


def container_paths(containers_dir: Path, id: str) -> ContainerPaths:
    return ContainerPaths(containers_dir / id, containers_dir.parent / "logs" / id)
