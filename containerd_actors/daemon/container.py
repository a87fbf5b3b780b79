"""The container actor: one per container, owning its runc init process and stdio.

It serialises that container's commands through its mailbox, watches its init exit, and reports
snapshots to the supervisor. Nothing else touches its pidfd, pipes or directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal as signals
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import attrs
import trio

from ..cgroup_stats import CgroupGone, CgroupPaths, read_cgroup_stats, resolve_cgroup_paths, sample_container
from ..metrics import CONTAINER_DELETE_TIME, CONTAINER_START_TIME, CONTAINERS
from ..oom import watch_oom
from ..protocol import Checkpoint, ContainerInfo, ErrorCode, EventType, ProcessInfo, User
from ..reaping import ExitWatcher, open_pidfd, process_start_time
from ..runc import Runc, RuncError, RuncTimeout, close_quietly, read_bundle_config, validate_bundle
from ..stdio import ContainerPipes, RotatingLog, drain_to_log
from .checkpoints import (
    checkpoints_dir,
    criu_options,
    delete_checkpoint,
    list_checkpoints,
    new_checkpoint_dir,
    new_checkpoint_record,
    publish_checkpoint,
    read_checkpoint,
)
from .events import EventDraft
from .mailbox import CommandError, ReplyTo, answer, fail
from .messages import (
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
from .state_dir import ContainerPaths, ContainerRecord, write_json_atomically
from .telemetry import AddToCounter, RecordDuration, tell

log = logging.getLogger(__name__)

#: Why an exit event can carry no status: the process was not our child or the reaper's.
UNKNOWN_EXIT_REASON = (
    "the process exited while no reaper was its parent (the daemon and its reaper were both down), "
    "so its exit status could not be observed"
)

#: After the init exits, the kernel has already killed the rest of its pid namespace, so pipe
#: EOF follows at once; this bound only guards against a writer outside the namespace.
DRAIN_GRACE_S = 2.0


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
        self._pipes: ContainerPipes | None = None
        self._logs: tuple[RotatingLog, RotatingLog] | None = None
        self._drained = trio.Event()
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
            init_template = _init_process_info(0, read_bundle_config(bundle))
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
        logs = (RotatingLog(self.paths.stdout_log), RotatingLog(self.paths.stderr_log))
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
            for log_file in logs:
                log_file.close()
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
        self._logs = logs
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

    async def run_adopted(self, record: ContainerRecord, kept_fds: list[int]) -> None:
        """Take over a container a previous server started, from its record and the reaper's pipe ends."""
        try:
            init_template = _init_process_info(0, read_bundle_config(self._bundle_path))
        except (ValueError, TypeError, AttributeError):
            init_template = ProcessInfo(pid=0, args=[], env=[], cwd="/", user=User())
        self._init = attrs.evolve(init_template, pid=record.pid)
        if len(kept_fds) == 3:
            stdin_write, stdout_read, stderr_read = kept_fds
        else:
            for fd in kept_fds:
                close_quietly(fd)
            stdin_write, stdout_read, stderr_read = -1, -1, -1
        self._pipes = ContainerPipes(-1, stdin_write, stdout_read, -1, stderr_read, -1)
        self._logs = (RotatingLog(self.paths.stdout_log), RotatingLog(self.paths.stderr_log))
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

    async def _supervise(self) -> None:
        assert self._pipes is not None and self._init is not None
        async with trio.open_nursery() as nursery:
            drains = trio.CancelScope()
            nursery.start_soon(self._drain_outputs, drains)
            nursery.start_soon(self._watch_init, self._init.pid)
            if self._oom_notify:
                await self._start_oom_watch(nursery)
            async for message in self._mailbox:
                if isinstance(message, SignalProcess):
                    self._signal(message)
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
        assert self._pipes is not None and self._logs is not None
        with scope:
            async with trio.open_nursery() as nursery:
                for fd, log_file in zip(
                    (self._pipes.stdout_read, self._pipes.stderr_read), self._logs, strict=True
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
        """Init is gone: delete it from runc, free the id, then tell the world."""
        assert self._init is not None and self._pipes is not None
        pid = self._init.pid
        if self._oom_notify:
            await self._report_ooms()  # an OOM kill is announced before the exit it caused
        close_quietly(self._pipes.stdin_write)
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        deleting_at = time.monotonic_ns()
        await self._delete_from_runc()
        tell(self._metrics, RecordDuration(CONTAINER_DELETE_TIME, time.monotonic_ns() - deleting_at))
        with trio.move_on_after(DRAIN_GRACE_S):
            await self._drained.wait()
        drains.cancel()
        self.paths.remove()
        await self._supervisor.send(ContainerRemoved(self.id))
        reason = None if status is not None else UNKNOWN_EXIT_REASON
        await self._events.send(EventDraft(EventType.EXIT, self.id, pid, status, reason))
        await self._exit_watcher.drop(self.id)
        await self._exit_watcher.acknowledge(pid)
        log.debug("container %s: init %d exited with %s", self.id, pid, status)

    # ------------------------------------------------------------------ commands

    def _signal(self, message: SignalProcess) -> None:
        assert self._init is not None
        if message.pid not in (0, self._init.pid):
            fail(
                message.reply_to,
                CommandError(
                    ErrorCode.NOT_FOUND, f"container {self.id!r} has no process with pid {message.pid}"
                ),
            )
            return
        try:
            if self._pidfd < 0:
                raise ProcessLookupError
            signals.pidfd_send_signal(self._pidfd, message.signal)
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
        return ContainerInfo(self.id, self.bundle, self._status, self._init.pid, [self._init])


def container_paths(containers_dir: Path, id: str) -> ContainerPaths:
    return ContainerPaths(containers_dir / id)
