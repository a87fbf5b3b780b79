"""The supervisor actor: registry of container actors, router of requests, keeper of the start slots.

Its loop never waits on runc: a start is handed to a new container actor at once, so State and
Signal stay fast while starts queue on the ``--concurrency`` limiter. It answers State and finds
a process's output for ReadOutput from the snapshots actors report, without asking 1000 actors
one by one.

**Restarts.** A container actor whose loop raises (any exception: a bug) is replaced by a new
actor that adopts the container from its record, as a restarted server would (``adopt``), with
the supervisor's own copies of its pipe ends (``keeper.PipeKeeper``: the dead actor's drains
closed theirs), so the container's stdio never breaks and its output continues in the same logs.
Requests still queued for the dead actor go to its successor; the one it crashed on was answered
with an internal error. Each restart is logged once with its traceback, published as an
``actor-restart`` event and counted in the ``actor-restarts`` metric. Past
``supervision.RESTARTS_PER_MINUTE`` restarts of one container's actor within a minute,
``RestartLimitExceeded`` ends the supervisor and the API server exits, for the reaper to start a
fresh one. An actor that crashes before its container is recorded (during its start, which
leaves no trace) has nothing to adopt: it is removed, and its creator got an error.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Awaitable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import trio

from containerd_actors.daemon.container.actor import ContainerActor
from containerd_actors.daemon.container.adopt import Adoption
from containerd_actors.daemon.container.checkpoint import delete_checkpoint, list_checkpoints
from containerd_actors.daemon.container.deps import ActorDeps, ContainerRuntime
from containerd_actors.daemon.container.exited import outputs_of
from containerd_actors.daemon.container.messages import (
    ContainerMailbox,
    ContainerRemoved,
    ContainerRequest,
    ContainerSnapshot,
    ContainerUpdated,
)
from containerd_actors.daemon.container.process import no_such_process
from containerd_actors.daemon.container.routes import ProcessRoutes
from containerd_actors.daemon.container.slots import StartSlots
from containerd_actors.daemon.container.stdin import refuse_closed, stdin_closed
from containerd_actors.daemon.container.stdio import OutputView
from containerd_actors.daemon.events.messages import EventDraft, EventsMailbox
from containerd_actors.daemon.faults import NO_FAULTS, FaultHook
from containerd_actors.daemon.mailbox import Ask, CommandError, ReplyTo, answer, fail, receive
from containerd_actors.daemon.metrics.messages import AddToCounter, MetricsMailbox, tell
from containerd_actors.daemon.metrics.registry import ACTOR_RESTARTS
from containerd_actors.daemon.state.layout import (
    ContainerRecord,
    container_paths,
    read_exited_records,
    unrecorded_log_dirs,
)
from containerd_actors.daemon.supervision import (
    RESTARTS_PER_MINUTE,
    RestartLimitExceeded,
    RestartWindow,
    crash_summary,
)
from containerd_actors.daemon.supervisor.keeper import PipeKeeper
from containerd_actors.daemon.supervisor.messages import ActorCrashed, SupervisorMailbox, SupervisorMessage
from containerd_actors.host.reaping import ExitWatcher
from containerd_actors.protocol import (
    ContainerInfo,
    CreateContainer,
    DeleteCheckpoint,
    ErrorCode,
    EventType,
    ListCheckpoints,
    OpenStdin,
    ReadOutput,
    ResizeTerminal,
    State,
    WriteInput,
)
from containerd_actors.transport.tls import TlsFiles

log = logging.getLogger(__name__)

#: Exited containers whose logs stay readable (ReadOutput, ``actr containers logs``) until their id
#: is reused; beyond this many, the oldest are forgotten and their log directories removed (with
#: their exited records, so this holds across restarts too).
KEPT_EXITED_CONTAINERS = 256
MAILBOX_SIZE = 1024


@attrs.define
class _Entry:
    """What the supervisor knows of one container: where to send requests, and its last snapshot."""

    mailbox: ContainerMailbox
    snapshot: ContainerSnapshot | None = None
    #: This container's actor restarts within the last minute.
    restarts: RestartWindow = attrs.field(factory=RestartWindow)
    #: The CreateContainer that made it (see ``_repeated_start``).
    request_id: str | None = None
    bundle: str = ""
    #: Repeats of that start that came while it still ran runc: answered with its first snapshot.
    repeats: list[ReplyTo] = attrs.Factory(list)


@attrs.frozen
class _Exited:
    """What is left of an exited container: its processes' output (logs and exit statuses), and
    the bundle its checkpoints are in."""

    outputs: Mapping[int, OutputView]
    init_pid: int
    bundle: str = ""


class Supervisor:
    def __init__(
        self,
        state_dir: Path,
        concurrency: int,
        runtime: ContainerRuntime,
        exit_watcher: ExitWatcher,
        events: EventsMailbox,
        metrics: MetricsMailbox,
        oom_notify: bool = False,
        faults: FaultHook = NO_FAULTS,
        restarts_per_minute: int = RESTARTS_PER_MINUTE,
        migration_tls: TlsFiles | None = None,
        migration_stream_min_mib: int | None = None,
        runc_root: Path | None = None,
    ) -> None:
        self._state_dir = state_dir
        self._registry: dict[str, _Entry] = {}
        #: What State answers, kept until a report changes it (see ``_list``).
        self._listing: list[ContainerInfo] | None = None
        self._exited: collections.OrderedDict[str, _Exited] = collections.OrderedDict()
        self._mailbox_send, self._mailbox = trio.open_memory_channel[SupervisorMessage](MAILBOX_SIZE)
        self._events = events
        self._metrics = metrics
        self._restarts_per_minute = restarts_per_minute
        #: Copies of every pipe end the actors hand the reaper, for an actor's successor.
        self.keeper = PipeKeeper(exit_watcher)
        #: The open stdin ports, for the API server to hand WriteInput straight to (``container.routes``).
        self.process_routes = ProcessRoutes()
        self._actor_deps = ActorDeps(
            runtime=runtime,
            start_slots=StartSlots(concurrency),
            exit_watcher=self.keeper,
            events=events,
            supervisor=self._mailbox_send,
            metrics=metrics,
            oom_notify=oom_notify,
            faults=faults,
            migration_tls=migration_tls,
            migration_stream_min_mib=migration_stream_min_mib,
            process_routes=self.process_routes,
            runc_root=runc_root,
        )

    @property
    def mailbox(self) -> SupervisorMailbox:
        return self._mailbox_send

    async def run(
        self, adoptions: list[Adoption] | None = None, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve requests; first take over ``adoptions``, the containers a previous server left running."""
        adopted = {adoption.record.id for adoption in adoptions or []}
        self._recall_exited(adopted)
        async with trio.open_nursery() as actors:
            await actors.start(self._actor_deps.start_slots.serve)
            for adoption in adoptions or []:
                record = adoption.record
                self.keeper.hold(record.id, adoption.init_fds)
                for key, fds in adoption.exec_fds.items():
                    self.keeper.hold(key, fds)
                actor = self._new_actor(record.id, record.bundle, record.request_id)
                actors.start_soon(self._run_actor, actor, actor.run_adopted(adoption))
            task_status.started()
            try:
                await self._serve(actors)
            finally:
                self.keeper.close_all()

    async def _serve(self, actors: trio.Nursery) -> None:
        while True:
            try:
                message = await receive(self._mailbox)
            except trio.EndOfChannel:
                return
            try:
                self._handle(message, actors)
            except RestartLimitExceeded:
                raise
            except Exception:
                # A bug in handling one message must not take the registry down with it.
                log.exception("supervisor: failed to handle %r", message)
                if isinstance(message, Ask):
                    fail(
                        message.reply_to,
                        CommandError(ErrorCode.INTERNAL, "internal error; see daemon log"),
                    )

    def _handle(self, message: SupervisorMessage, actors: trio.Nursery) -> None:
        """The one dispatch of everything the supervisor is told or asked."""
        match message:
            case Ask(CreateContainer() as request, reply_to, by):
                self._start(request, reply_to, actors, by)
            case Ask(State(), reply_to):
                answer(reply_to, self._list())
            case Ask(ReadOutput() as request, reply_to):
                self._find_output(request, reply_to)
            case Ask(ListCheckpoints(bundle=bundle), reply_to) if bundle:
                self._checkpoints_of(bundle, reply_to)
            case Ask(ListCheckpoints(id=""), reply_to):
                fail(reply_to, CommandError(ErrorCode.INVALID_REQUEST, "ListCheckpoints: give id or bundle"))
            case Ask(request, reply_to) if isinstance(request, ContainerRequest):
                self._route(message)
            case ContainerUpdated(snapshot):
                self._listing = None
                entry = self._registry.get(snapshot.info.id)
                if entry is not None:
                    entry.snapshot = snapshot
                    self._answer_repeats(entry, snapshot.info.pid)
            case ContainerRemoved(id, outputs, init_pid, bundle):
                self._listing = None
                entry = self._registry.pop(id, None)
                self.keeper.forget(id)
                if entry is not None:
                    self._answer_repeats(entry, init_pid if outputs else None)
                if outputs:
                    self._keep_exited(id, _Exited(outputs, init_pid, bundle))
            case ActorCrashed(actor, error):
                self._listing = None
                self._restart(actor, error, actors)
            case _:
                log.error("supervisor: unexpected message %r", message)

    def _new_actor(self, id: str, bundle: str, request_id: str | None = None) -> ContainerActor:
        actor = ContainerActor(id, bundle, container_paths(self._state_dir, id), self._actor_deps)
        self._registry[id] = _Entry(
            actor.mailbox,
            restarts=RestartWindow(self._restarts_per_minute),
            request_id=request_id,
            bundle=bundle,
        )
        return actor

    def _start(
        self, request: CreateContainer, reply_to: ReplyTo, actors: trio.Nursery, by: str | None = None
    ) -> None:
        if self._repeated_start(request, reply_to):
            return
        if request.id in self._registry:
            fail(reply_to, CommandError(ErrorCode.ALREADY_EXISTS, f"container {request.id!r} already exists"))
            return
        self._exited.pop(request.id, None)  # the new actor removes the old logs
        actor = self._new_actor(request.id, request.bundle, request.request_id)
        actors.start_soon(
            self._run_actor,
            actor,
            actor.run(request.checkpoint, reply_to, request.terminal, request.request_id, by),
        )

    def _repeated_start(self, request: CreateContainer, reply_to: ReplyTo) -> bool:
        """The same start again (same id, bundle and request id): a client that lost the reply,
        to a server crash or a dropped connection, learns the pid of the container it made.

        Answered with that pid at once, or when the start is done if it is still running runc.
        Once the container has exited, its id is free: the same request starts a new one.
        """
        entry = self._registry.get(request.id)
        if entry is None or entry.request_id != request.request_id:
            return False  # the usual case: no Path made to compare bundles
        if entry.bundle == request.bundle or Path(entry.bundle) == Path(request.bundle):
            if entry.snapshot is not None:
                answer(reply_to, entry.snapshot.info.pid)
            else:
                entry.repeats.append(reply_to)
            return True
        return False

    def _answer_repeats(self, entry: _Entry, pid: int | None) -> None:
        """Answer the repeats of a start: its pid, or (None) the start failed and left nothing."""
        for reply_to in entry.repeats:
            if pid is not None:
                answer(reply_to, pid)
            else:
                failed = f"the start with request id {entry.request_id!r} failed (see its first reply)"
                fail(reply_to, CommandError(ErrorCode.RUNTIME_FAILED, failed))
        entry.repeats.clear()

    async def _run_actor(self, actor: ContainerActor, work: Awaitable[None]) -> None:
        """An actor that crashes is reported to the supervisor's loop, which restarts it."""
        try:
            await work
        except Exception as error:
            await self._mailbox_send.send(ActorCrashed(actor, error))

    def _restart(self, crashed: ContainerActor, error: Exception, actors: trio.Nursery) -> None:
        """Replace a crashed actor by one that adopts its container (see the module docstring)."""
        id = crashed.id
        entry = self._registry.get(id)
        if entry is None or entry.mailbox is not crashed.mailbox:
            # Its container was removed (its last report came before the crash) or it was replaced.
            log.error("container actor %s crashed after it had finished", id, exc_info=error)
            return
        record = _read_record(crashed.paths.record)
        if record is None:
            log.error("container actor %s crashed before its container was recorded", id, exc_info=error)
            self._registry.pop(id, None)
            self.keeper.forget(id)
            gone = CommandError(ErrorCode.NOT_FOUND, f"container {id!r} failed to start")
            for ask in crashed.hand_over():
                fail(ask.reply_to, gone)
            return
        restarts = entry.restarts.record(f"the actor of container {id}")  # raises past the limit
        log.error(
            "container actor %s crashed; restarting it to re-adopt the container (%d of %d restarts "
            "allowed within %g s)",
            id,
            restarts,
            entry.restarts.limit,
            entry.restarts.window_s,
            exc_info=error,
        )
        actor = ContainerActor(id, record.bundle, crashed.paths, self._actor_deps)
        for ask in crashed.hand_over():
            try:
                actor.mailbox.send_nowait(ask)
            except trio.WouldBlock:
                fail(ask.reply_to, CommandError(ErrorCode.INTERNAL, f"container {id!r} is busy; retry"))
        entry.mailbox = actor.mailbox
        status = entry.snapshot.info.status if entry.snapshot is not None else "running"
        init_fds, exec_fds = self.keeper.copies_for(id)
        adoption = Adoption(record, init_fds, exec_fds)
        actors.start_soon(self._run_actor, actor, actor.run_adopted(adoption, status))
        reason = (
            f"the container's actor crashed ({crash_summary(error)}) and was restarted "
            f"({restarts} of {entry.restarts.limit} restarts allowed within {entry.restarts.window_s:g} s)"
        )
        try:
            self._events.send_nowait(EventDraft(EventType.ACTOR_RESTART, id, record.pid, None, reason))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            log.error("container %s: the actor-restart event could not be told to the events actor", id)
        tell(self._metrics, AddToCounter(ACTOR_RESTARTS))

    def _route(self, ask: Ask[ContainerRequest]) -> None:
        id = ask.request.id
        entry = self._registry.get(id)
        if entry is None or entry.snapshot is None:
            exited = self._served_exited(id)
            if exited is not None and exited.bundle and isinstance(ask.request, ListCheckpoints):
                self._checkpoints_of(exited.bundle, ask.reply_to)
                return
            if exited is not None and exited.bundle and isinstance(ask.request, DeleteCheckpoint):
                self._delete_checkpoint(exited.bundle, ask.request.name, ask.reply_to)
                return
            if exited is not None and isinstance(ask.request, WriteInput | ResizeTerminal):
                # Its processes' stdin went with it, but a client attached to one hears why.
                pid = ask.request.pid or exited.init_pid
                if pid in exited.outputs:
                    refuse_closed(ask, id, pid)
                    return
                fail(ask.reply_to, no_such_process(id, ask.request.pid))
                return
            if exited is not None and isinstance(ask.request, OpenStdin):
                pid = ask.request.pid or exited.init_pid
                known = pid in exited.outputs
                fail(ask.reply_to, stdin_closed(id, pid) if known else no_such_process(id, ask.request.pid))
                return
            fail(ask.reply_to, CommandError(ErrorCode.NOT_FOUND, f"no such container: {id!r}"))
            return
        try:
            entry.mailbox.send_nowait(ask)
        except trio.WouldBlock:
            fail(ask.reply_to, CommandError(ErrorCode.INTERNAL, f"container {id!r} is busy; retry"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            fail(ask.reply_to, CommandError(ErrorCode.NOT_FOUND, f"container {id!r} has exited"))

    def _checkpoints_of(self, bundle: str, reply_to: ReplyTo) -> None:
        """A bundle's checkpoints with no container: after its exit (``checkpoints create --exit``
        included), or named by path. A directory listing, so the loop never waits on runc."""
        if not Path(bundle).is_dir():
            fail(reply_to, CommandError(ErrorCode.NOT_FOUND, f"no bundle directory {bundle!r}"))
            return
        try:
            answer(reply_to, list_checkpoints(Path(bundle)))
        except OSError as exc:
            fail(reply_to, CommandError(ErrorCode.RUNTIME_FAILED, f"cannot list checkpoints: {exc}"))

    def _delete_checkpoint(self, bundle: str, name: str, reply_to: ReplyTo) -> None:
        try:
            delete_checkpoint(Path(bundle), name)
        except CommandError as error:
            fail(reply_to, error)
        except OSError as exc:
            fail(
                reply_to, CommandError(ErrorCode.RUNTIME_FAILED, f"cannot delete checkpoint {name!r}: {exc}")
            )
        else:
            answer(reply_to, None)

    def _recall_exited(self, adopted: set[str]) -> None:
        """The exited containers a previous server recorded, oldest exit first, so their logs and
        checkpoints are served as before and the oldest beyond ``KEPT_EXITED_CONTAINERS`` are
        pruned. A record whose container is being adopted (its server was killed between the two
        writes) is left to the adopting actor, which writes it again at the exit. Log directories
        with no record at all (an older daemon's) serve nothing but are pruned in their turn."""
        exited: list[tuple[float, str, _Exited]] = []
        for record in read_exited_records(self._state_dir):
            if record.id in adopted:
                continue
            outputs = outputs_of(record, container_paths(self._state_dir, record.id))
            exited.append((record.exited, record.id, _Exited(outputs, record.init_pid, record.bundle)))
        for modified, id in unrecorded_log_dirs(self._state_dir):
            if id not in adopted:
                exited.append((modified, id, _Exited(MappingProxyType({}), 0)))
        for _, id, kept in sorted(exited, key=lambda item: item[0]):
            self._keep_exited(id, kept)

    def _served_exited(self, id: str) -> _Exited | None:
        """An exited container, unless all that is left of it is an unrecorded log directory."""
        exited = self._exited.get(id)
        return exited if exited is not None and exited.outputs else None

    def _keep_exited(self, id: str, exited: _Exited) -> None:
        self._exited[id] = exited
        self._exited.move_to_end(id)
        while len(self._exited) > KEPT_EXITED_CONTAINERS:
            old_id, _ = self._exited.popitem(last=False)
            if old_id not in self._registry:
                container_paths(self._state_dir, old_id).remove_logs()

    def _find_output(self, request: ReadOutput, reply_to: ReplyTo) -> None:
        entry = self._registry.get(request.id)
        if entry is not None and entry.snapshot is not None:
            outputs, init_pid = entry.snapshot.outputs, entry.snapshot.info.pid
        elif (exited := self._served_exited(request.id)) is not None:
            outputs, init_pid = exited.outputs, exited.init_pid
        else:
            fail(reply_to, CommandError(ErrorCode.NOT_FOUND, f"no such container: {request.id!r}"))
            return
        view = outputs.get(request.pid or init_pid)
        if view is None:
            fail(reply_to, no_such_process(request.id, request.pid))
            return
        answer(reply_to, view)

    def _list(self) -> list[ContainerInfo]:
        """The containers State reports: the same list object until a report changes it.

        Every change of a container (started, exited, paused, resumed, an exec begun or ended,
        migrated) reaches this loop as a report, which drops the list; so the API server may keep
        the list's encoding while it is handed the very same object (``api.StateCache``). The list
        is never changed in place: a new one is made.
        """
        if self._listing is None:
            self._listing = [
                entry.snapshot.info for entry in self._registry.values() if entry.snapshot is not None
            ]
        return self._listing


def _read_record(path: Path) -> ContainerRecord | None:
    """The container's record, or None when there is none (or it cannot be used)."""
    try:
        return ContainerRecord.parse(json.loads(path.read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("cannot read %s: %s", path, exc)
        return None
