"""The container actor: one per container, owning its init, its exec'd processes and their stdio.

It serves that container's requests one at a time from its mailbox, learns of every exit through
the same mailbox, and reports immutable snapshots to the supervisor. Its state (the processes,
their pidfds, the status, the container's directory) is touched by its own loop only. The tasks
it starts each own one resource and report through the mailbox: a drain per process appends to
its logs, a watcher per process waits for its exit, a stdin port per process writes its input,
and the OOM watcher counts kills.

A container's life, in order: ``start.start_init`` (or ``adopt`` after a server restart) runs the
init; the actor answers the creator, then serves requests (``exec``, ``checkpoint``, signals,
stats, pause). When the init exits, the kernel has killed the rest of the container, so the
actor waits for the exec'd processes' exits, announces them, deletes the container from runc
and announces the init's exit last.

Why one module of ~700 lines: it holds the actor's state and the one ``match`` that may change it;
every step that does not touch that state already lives beside it (start, adopt, exec, exits,
checkpoint, cgroups, stdio, migration's source). Splitting further would spread the state's
changes over modules, which is what the actor rule is there to prevent.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import math
import time
from collections.abc import Awaitable
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import trio

from containerd_actors import protocol as wire
from containerd_actors.daemon.container.adopt import Adoption, adopt_execs, adopt_init, release_unrecorded
from containerd_actors.daemon.container.cgroups import ContainerCgroups, oom_notifier, pause_or_resume
from containerd_actors.daemon.container.checkpoint import (
    delete_checkpoint,
    list_checkpoints,
    take_checkpoint,
)
from containerd_actors.daemon.container.deps import ActorDeps
from containerd_actors.daemon.container.drains import drain
from containerd_actors.daemon.container.exec import (
    ExecStarted,
    complete_exec,
    keep_exec_ends,
    record_exec,
    run_exec,
)
from containerd_actors.daemon.container.exec_files import ExecFilePids
from containerd_actors.daemon.container.exited import recall_exited_execs
from containerd_actors.daemon.container.exits import (
    EXEC_EXIT_UNSEEN_REASON,
    UNKNOWN_EXIT_REASON,
    announce_exec_exit,
    close_pidfd,
    end_exec,
    forget_exec_files,
    killed_by,
    remove_container,
    watch,
)
from containerd_actors.daemon.container.messages import (
    ContainerMailbox,
    ContainerMessage,
    ContainerSnapshot,
    ContainerUpdated,
    ExecExited,
    InitExited,
    InputClosed,
    MigrationFinished,
    OomNotified,
    take_queued_asks,
)
from containerd_actors.daemon.container.process import (
    DRAIN_GRACE_S,
    ContainerProcess,
    Launched,
    no_such_process,
)
from containerd_actors.daemon.container.start import start_and_answer
from containerd_actors.daemon.container.stdin import (
    StdinAsk,
    StdinPort,
    open_stdin_reply,
    refuse_closed,
    stdin_closed,
)
from containerd_actors.daemon.container.stdio import OutputView
from containerd_actors.daemon.events.messages import EventDraft
from containerd_actors.daemon.mailbox import (
    Ask,
    CommandError,
    ReplyTo,
    answer,
    fail,
    post,
    receive,
    refuse_queued,
)
from containerd_actors.daemon.metrics.messages import AddToCounter, RecordDuration, tell
from containerd_actors.daemon.metrics.registry import (
    CONTAINERS,
    EXEC_PROCESS_TIME,
)
from containerd_actors.daemon.state.layout import ContainerPaths
from containerd_actors.host.reaping import EXIT_REPORT_GRACE_S
from containerd_actors.protocol import Checkpoint, ContainerInfo, ContainerStats, ErrorCode, EventType
from containerd_actors.runc.driver import RuncError
from containerd_actors.runc.process_spec import exec_process_info, exec_spec

# A migration's source side is imported when a container migrates: a server whose containers never
# do need not carry it (tarfile, hashlib's OpenSSL, ssl: see ``migration/destination.py``).
if TYPE_CHECKING:
    from containerd_actors.daemon.migration.source import SourceContainer

log = logging.getLogger(__name__)

#: Requests queued for one container beyond this are refused by the supervisor as busy.
MAILBOX_SIZE = 64
#: Exited exec'd processes whose logs a container keeps (a health check exec'd every few seconds
#: must not fill the state directory); older ones are forgotten and their files removed.
KEPT_EXITED_EXECS = 64
#: How long the exec'd processes' exits may take to arrive after the init's: the exit watcher's own
#: grace for a report in flight, then the drain grace of each; the init's exit is announced then even
#: if some are missing (shorter, and an exec'd process's status the reaper did see would be lost).
EXECS_EXIT_GRACE_S = EXIT_REPORT_GRACE_S + DRAIN_GRACE_S


async def _raise(error: BaseException) -> None:
    """In the actor's nursery: a drain's unexpected error crashes the actor, as a drain task's did."""
    raise error


class Phase(enum.Enum):
    RUNNING = "running"
    #: A checkpoint with ``exit`` is taken: waiting for the init's exit to answer it.
    EXITING = "exiting"
    #: A migration task runs (the container is frozen for most of it): only what a frozen
    #: container can answer is served.
    MIGRATING = "migrating"
    #: The init has exited: waiting for the exec'd processes' exits.
    FINISHING = "finishing"
    DONE = "done"


class ContainerActor:
    def __init__(self, id: str, bundle: str, paths: ContainerPaths, deps: ActorDeps) -> None:
        self.id = id
        self.bundle = bundle
        self.paths = paths
        self._bundle_path = Path(bundle)
        self._deps = deps
        self._runtime = deps.runtime
        self._exit_watcher = deps.exit_watcher
        self._events = deps.events
        self._supervisor = deps.supervisor
        self._metrics = deps.metrics
        self._oom_notify = deps.oom_notify
        self._faults = deps.faults
        self._mailbox_send: trio.MemorySendChannel[ContainerMessage]
        self._mailbox: trio.MemoryReceiveChannel[ContainerMessage]
        # Unsubscripted: ``open_memory_channel[T]`` costs a trip through typing at every start.
        self._mailbox_send, self._mailbox = trio.open_memory_channel(MAILBOX_SIZE)
        self._nursery: trio.Nursery | None = None
        self._phase = Phase.RUNNING
        self._status = "running"
        #: The bundle's OCI process object: the template of every exec'd process's spec.
        self._process_spec: dict[str, Any] = {}
        self._init: ContainerProcess | None = None
        self._init_status: int | None = None
        self._execs: dict[int, ContainerProcess] = {}
        #: Every process whose output is readable, the init's and exited exec'd ones' included.
        self._outputs: dict[int, OutputView] = {}
        self._exited_execs: collections.deque[int] = collections.deque()
        self._exec_file_pids = ExecFilePids(self.paths)
        self._exec_numbers = itertools.count(1)
        #: Exec'd processes recorded and answered whose exec's intent is still to be completed.
        self._execs_to_complete: collections.deque[ExecStarted] = collections.deque()
        self._finish_by = math.inf
        #: The migration under way, answered when its task reports (or when the container exits).
        self._migrating: Ask[wire.MigrateContainer] | None = None
        #: The answer a checkpoint with ``exit`` gives once the container is gone.
        self._checkpoint_reply: tuple[ReplyTo, Checkpoint] | None = None
        self._cgroup_state: ContainerCgroups | None = None
        #: The last signal a TLS client sent each live process, and who: if the process then dies
        #: of that signal, its ``exit`` event names that client (``by``).
        self._signalled_by: dict[int, tuple[int, str]] = {}

    @property
    def mailbox(self) -> ContainerMailbox:
        return self._mailbox_send

    # ------------------------------------------------------------------ lifecycle

    async def run(
        self,
        checkpoint: str | None,
        start_reply: ReplyTo,
        terminal: bool | None = None,
        request_id: str | None = None,
        by: str | None = None,
    ) -> None:
        """Start the container, answer the creator (``by``: its TLS CN, or None if local), then
        serve requests until the init exits."""
        started = await start_and_answer(
            self.id, self.bundle, checkpoint, self.paths, self._deps, start_reply, terminal, request_id, by
        )
        if started is None:
            return
        self._bundle_path = started.bundle
        self._process_spec = started.process_spec
        await self._serve(started.launched, [])

    async def run_adopted(self, adoption: Adoption, status: str = "running") -> None:
        """Take over a container a previous server (or a crashed actor) started, from its record
        and the pipe ends the reaper (or the supervisor) kept; ``status`` is the last one known."""
        self._status = status
        adopted = adopt_init(self.id, self._bundle_path, self.paths, adoption)
        self._process_spec = adopted.process_spec
        if adoption.status == "paused":
            self._status = "paused"
        exec_fds = dict(adoption.exec_fds)
        execs = adopt_execs(self.id, self.paths, exec_fds)
        live = {adopted.launched.info.pid, *(launched.info.pid for launched in execs)}
        for view in recall_exited_execs(self.id, self.paths, live):
            self._outputs[view.pid] = view  # their logs stay readable, as before the restart
            self._exited_execs.append(view.pid)
        await release_unrecorded(exec_fds, execs, self._exit_watcher)
        await self._serve(adopted.launched, execs)

    async def _serve(self, init: Launched, execs: list[Launched]) -> None:
        tell(self._metrics, AddToCounter(CONTAINERS, +1))
        crashed = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._init = self._own(init, is_init=True)
                for launched in execs:
                    self._execs[launched.info.pid] = self._own(launched, is_init=False)
                await self._report()
                if self._oom_notify:
                    await self._cgroups().watch_ooms(nursery, oom_notifier(self._mailbox_send))
                await self._serve_mailbox()
                nursery.cancel_scope.cancel()
        except Exception:
            crashed = True
            raise
        finally:
            if self._deps.process_routes is not None:  # before a successor can register its ports
                self._deps.process_routes.forget(self.id, self._mailbox_send)
            tell(self._metrics, AddToCounter(CONTAINERS, -1))
            for process in (self._init, *self._execs.values()):
                if process is not None:  # as its tasks were: the drains end with the actor
                    process.drains.cancel()
            for process in self._execs.values():  # exits that never came: their watchers are gone
                close_pidfd(process)
            if crashed:
                # The supervisor restarts this actor: its successor adopts the container with the
                # supervisor's copies of the pipe ends, and takes the queued requests (hand_over).
                for process in (self._init, *self._execs.values()):
                    if process is not None:
                        close_pidfd(process)
                        process.stdin.close()
            elif self._phase is Phase.DONE:
                refuse_queued(
                    self._mailbox, CommandError(ErrorCode.NOT_FOUND, f"container {self.id!r} has exited")
                )
            else:
                stopped = f"the actor of container {self.id!r} stopped; see daemon log"
                refuse_queued(self._mailbox, CommandError(ErrorCode.INTERNAL, stopped))

    async def _serve_mailbox(self) -> None:
        while self._phase is not Phase.DONE:
            message = await self._next_message()
            if message is None:
                log.warning(
                    "container %s: exec'd processes outlived the init by %g s", self.id, EXECS_EXIT_GRACE_S
                )
                # Their exits are announced all the same (the delete from runc ends them anyway):
                # a pid a client was given never goes without an exit event. The last one
                # finishes the container.
                for pid in list(self._execs):
                    await self._exec_exited(pid, None, EXEC_EXIT_UNSEEN_REASON)
                if self._phase is not Phase.DONE:
                    await self._finish()
                return
            try:
                if self._faults:  # tests only (daemon.faults)
                    self._faults.check(f"container={self.id}", message)
                await self._handle(message)
            except BaseException:
                if isinstance(message, Ask):
                    fail(message.reply_to, CommandError(ErrorCode.INTERNAL, "internal error; see daemon log"))
                raise

    async def _next_message(self) -> ContainerMessage | None:
        """The next message; None once the exec'd processes have had their grace after the init."""
        if self._finish_by == math.inf:  # no deadline yet: no cancel scope per message
            return await receive(self._mailbox)
        with trio.move_on_at(self._finish_by):
            return await self._mailbox.receive()
        return None

    async def _handle(self, message: ContainerMessage) -> None:
        """The one dispatch of everything this actor is told or asked."""
        match message:
            case Ask(wire.WriteInput() | wire.ResizeTerminal(), _):
                # Served in every phase: a process that is still running still reads its stdin.
                self._to_stdin(message)
            case Ask(wire.OpenStdin() as request, reply_to):
                # Served in every phase, as a WriteInput is.
                self._open_stdin(request, reply_to)
            case Ask(wire.ListCheckpoints(), reply_to):
                # Also while exiting: a ``checkpoints create --exit`` is listed at once.
                answer(reply_to, list_checkpoints(self._bundle_path))
            case MigrationFinished() as finished:
                await self._migration_finished(finished)
            case Ask(wire.Stats(), reply_to) if self._phase is Phase.MIGRATING:
                await self._reply(reply_to, self._sample_stats())
            case Ask(_, reply_to) if self._phase is Phase.MIGRATING:
                fail(reply_to, CommandError(ErrorCode.INVALID_STATE, f"container {self.id!r} is migrating"))
            case Ask(_, reply_to) if self._phase is not Phase.RUNNING:
                state = "is exiting" if self._phase is Phase.EXITING else "has exited"
                fail(reply_to, CommandError(ErrorCode.NOT_FOUND, f"container {self.id!r} {state}"))
            case Ask(wire.Signal() as request, reply_to, by):
                await self._reply(reply_to, self._signal(request, by))
            case Ask(wire.AddProcess() as request, reply_to, by):
                await self._reply(reply_to, self._add_process(request, by))
                await self._complete_execs()
            case Ask(wire.Stats(), reply_to):
                await self._reply(reply_to, self._sample_stats())
            case Ask(wire.UpdateContainer() as request, reply_to, by):
                await self._reply(reply_to, self._change_status(request.status, by))
            case Ask(wire.MigrateContainer(), _) as ask:
                self._start_migration(ask)
            case Ask(wire.CreateCheckpoint() as request, reply_to, by):
                await self._create_checkpoint(request, reply_to, by)
            case Ask(wire.DeleteCheckpoint() as request, reply_to):
                await self._reply(reply_to, self._delete_checkpoint(request.name))
            case InitExited(status):
                await self._init_exited(status)
            case ExecExited(pid, status):
                await self._exec_exited(pid, status)
            case OomNotified():
                await self._report_ooms()
            case InputClosed(pid):
                await self._release_kept_stdin(pid)

    async def _reply(self, reply_to: ReplyTo, work: Awaitable[Any]) -> None:
        """Run one request to completion, answering with its result or its CommandError."""
        try:
            result = await work
        except CommandError as error:
            fail(reply_to, error)
        else:
            answer(reply_to, result)

    def hand_over(self) -> list[Ask[Any]]:
        """After this actor crashed: the requests still queued, for the actor that replaces it.

        The reports of its own tasks (exits, OOM, stdin closed) go with it: its successor's tasks
        watch the same processes again. The mailbox is closed; nothing can be added to it since
        the supervisor routes to the successor from now on.
        """
        return take_queued_asks(self._mailbox)

    # ------------------------------------------------------------------ processes

    def _own(self, launched: Launched, *, is_init: bool) -> ContainerProcess:
        """Drain, watch and take the stdin of a process, whether this server started it or adopted it."""
        assert self._nursery is not None
        pid = launched.info.pid
        port = StdinPort(
            self.id,
            pid,
            launched.stdin_fd,
            launched.output.terminal,
            self._mailbox_send,
            self._nursery,
            self._deps.process_routes,
            is_init=is_init,
        )
        nursery = self._nursery
        drains = drain(launched.out_fds, launched.output, lambda error: nursery.start_soon(_raise, error))
        process = ContainerProcess(
            launched.info, launched.key, launched.pidfd, launched.output, port, launched.out_fds, drains
        )
        self._outputs[pid] = view = launched.output.view
        if self._deps.process_routes is not None:
            self._deps.process_routes.add_view(self.id, view, self._mailbox_send, is_init=is_init)
        nursery.start_soon(
            watch, process, is_init, self._exit_watcher, self._mailbox_send, launched.started_here
        )
        return process

    async def _init_exited(self, status: int | None) -> None:
        assert self._init is not None
        if self._oom_notify:
            await self._report_ooms()  # an OOM kill is announced before the exit it caused
        self._init.stdin.close()
        self._init_status = status
        self._phase = Phase.FINISHING
        self._finish_by = trio.current_time() + EXECS_EXIT_GRACE_S
        if not self._execs:
            await self._finish()

    async def _exec_exited(self, pid: int, status: int | None, reason: str = UNKNOWN_EXIT_REASON) -> None:
        """``reason`` says why a null ``status`` is unknown."""
        process = self._execs.pop(pid, None)
        if process is None:
            return
        end_exec(self.id, self.paths, process, status)
        self._exited_execs.append(pid)
        while len(self._exited_execs) > KEPT_EXITED_EXECS:
            self._forget_exec(self._exited_execs[0])
        exit_reason = None if status is not None else reason
        # The supervisor's snapshot first: a client that sees the exit event and then asks for
        # State must not still find the process listed (its State queues behind this report).
        await self._report()
        by = killed_by(self._signalled_by.pop(pid, None), status)
        await announce_exec_exit(self.id, self.paths, process, status, exit_reason, by, self._deps)
        if self._phase is Phase.FINISHING and not self._execs:
            await self._finish()

    async def _finish(self) -> None:
        """The init and the exec'd processes are gone: delete from runc, free the id, tell the world.

        The exec'd processes' exits were announced first: an ``exit`` for the init is the
        container's last event.
        """
        assert self._init is not None
        init, status = self._init, self._init_status
        by = killed_by(self._signalled_by.pop(init.pid, None), status)
        outputs = self._outputs_now()
        bundle = str(self._bundle_path)
        if self._deps.process_routes is not None:  # the supervisor serves them from the removal on
            self._deps.process_routes.forget(self.id, self._mailbox_send)
        await remove_container(
            self.id, self.bundle, bundle, self.paths, init, status, outputs, by, self._deps
        )
        self._phase = Phase.DONE
        if self._migrating is not None:  # its task ends with this actor, having thawed nothing
            gone = CommandError(
                ErrorCode.RUNTIME_FAILED, f"container {self.id!r} exited during its migration"
            )
            fail(self._migrating.reply_to, gone)
        if self._checkpoint_reply is not None:
            reply_to, checkpoint = self._checkpoint_reply
            answer(reply_to, checkpoint)
        log.debug("container %s: init %d exited with %s", self.id, init.pid, status)

    def _forget_exec(self, pid: int) -> None:
        """Drop an exited exec'd process's output and log files (not the init's, not a live one's)."""
        if pid in self._execs or self._init is None or pid == self._init.pid:
            return
        if pid in self._exited_execs:
            self._exited_execs.remove(pid)
        if not self._exec_file_pids.may_exist(pid, self._outputs):
            return  # a new pid, as usual: nothing to remove
        self._outputs.pop(pid, None)
        if self._deps.process_routes is not None:
            self._deps.process_routes.remove_view(self.id, pid)
        forget_exec_files(self.paths, pid)
        self._exec_file_pids.removed(pid)

    def _process(self, pid: int) -> ContainerProcess | None:
        """A live process by pid; 0 is the init."""
        assert self._init is not None
        if pid in (0, self._init.pid):
            return self._init
        return self._execs.get(pid)

    # ------------------------------------------------------------------ snapshots

    def _outputs_now(self) -> MappingProxyType[int, OutputView]:
        return MappingProxyType(dict(self._outputs))

    async def _report(self) -> None:
        assert self._init is not None
        processes = [self._init.info, *(process.info for process in self._execs.values())]
        info = ContainerInfo(self.id, self.bundle, self._status, self._init.pid, processes)
        await post(self._supervisor, ContainerUpdated(ContainerSnapshot(info, self._outputs_now())))

    # ------------------------------------------------------------------ requests

    async def _signal(self, request: wire.Signal, by: str | None = None) -> None:
        process = self._process(request.pid)
        if process is None:
            raise no_such_process(self.id, request.pid)
        process.signal(request.signal, self.id)
        if by is not None:
            self._signalled_by[process.pid] = (request.signal, by)
        else:
            self._signalled_by.pop(process.pid, None)  # a local client signalled it last

    async def _add_process(self, request: wire.AddProcess, by: str | None = None) -> int:
        """``runc exec -d`` a process, then own it like the init: drain, watch, report its exit."""
        reached_at = time.monotonic_ns()
        assert self._init is not None
        if self._status == "paused":
            raise CommandError(ErrorCode.INVALID_STATE, f"container {self.id!r} is paused; resume it first")
        spec = exec_spec(self._process_spec, self._init.info, request)
        started = await run_exec(
            self._runtime,
            self.id,
            self.paths,
            next(self._exec_numbers),
            spec,
            bundle=self.bundle,
            request_id=request.request_id,
            exit_watcher=self._exit_watcher,
        )
        tell(self._metrics, RecordDuration(EXEC_PROCESS_TIME, time.monotonic_ns() - reached_at))
        self._forget_exec(started.pid)  # a recycled pid must not append to an older process's logs
        info = exec_process_info(started.pid, spec, request, self._init.info)
        launched = record_exec(self.id, self.paths, info, started)
        await keep_exec_ends(self.paths, launched, started, self._exit_watcher)
        self._execs_to_complete.append(started)
        self._execs[started.pid] = self._own(launched, is_init=False)
        await post(self._events, EventDraft(EventType.START_PROCESS, self.id, started.pid, by=by))
        await self._report()
        return started.pid

    async def _complete_execs(self) -> None:
        """After the reply: the exec's intent, files and pending reaper key go.

        The process's record and its pipe ends under its pid already stand for it, so these only
        cost the client time before its answer. A server that dies before this step leaves
        both intent and record, as it could before (``state.reconcile`` completes the intent).
        """
        if not self._execs_to_complete:
            return
        # ``answer`` only made the API worker runnable: without a pass it would send the reply
        # after these unlinks and reaper messages. Two passes, since trio runs each batch of
        # runnable tasks in a random direction: after the second the worker has had its turn.
        await trio.lowlevel.cancel_shielded_checkpoint()
        await trio.lowlevel.cancel_shielded_checkpoint()
        while self._execs_to_complete:
            await complete_exec(self._execs_to_complete.popleft(), self.paths, self._exit_watcher)

    def _to_stdin(self, ask: StdinAsk) -> None:
        """Hand a write or resize to the process's stdin port, which answers it; never wait here."""
        request = ask.request
        process = self._process(request.pid)
        if process is not None:
            process.stdin.offer(ask)
        elif request.pid in self._outputs:
            refuse_closed(ask, self.id, request.pid)  # an exited exec'd process
        else:
            fail(ask.reply_to, no_such_process(self.id, request.pid))

    def _open_stdin(self, request: wire.OpenStdin, reply_to: ReplyTo) -> None:
        """An ``OpenStdin`` the API server's routes did not hold (usually a closed stdin, or
        a process being adopted); the same answer as theirs."""
        process = self._process(request.pid)
        if process is not None:
            try:
                answer(reply_to, open_stdin_reply(process.stdin, request.request_id))
            except CommandError as error:
                fail(reply_to, error)
        elif request.pid in self._outputs:
            fail(reply_to, stdin_closed(self.id, request.pid))  # an exited exec'd process
        else:
            fail(reply_to, no_such_process(self.id, request.pid))

    async def _release_kept_stdin(self, pid: int) -> None:
        process = self._process(pid)
        if process is not None:
            await process.keep_only_outputs(self._exit_watcher)

    async def _change_status(self, status: str, by: str | None = None) -> None:
        """Pause or resume the whole container (``cgroups.pause_or_resume``), then tell the world."""
        assert self._init is not None
        if status == self._status:
            return
        await pause_or_resume(self._runtime, self.id, status)
        self._status = status
        await self._report()
        kind = EventType.PAUSE if status == "paused" else EventType.RESUME
        await self._events.send(EventDraft(kind, self.id, self._init.pid, by=by))

    async def _create_checkpoint(
        self, request: wire.CreateCheckpoint, reply_to: ReplyTo, by: str | None = None
    ) -> None:
        """With ``exit``, the answer comes only once the container is gone, so its id can be
        restored at once; until then the actor refuses requests as exiting."""
        assert self._init is not None
        try:
            checkpoint = await take_checkpoint(
                self._runtime, self.id, self._bundle_path, self.paths, request, self._init.info.terminal
            )
        except CommandError as error:
            fail(reply_to, error)
            return
        await self._events.send(EventDraft(EventType.CHECKPOINT, self.id, self._init.pid, by=by))
        if request.exit:
            self._checkpoint_reply = (reply_to, checkpoint)
            self._phase = Phase.EXITING
        else:
            answer(reply_to, checkpoint)

    def _start_migration(self, ask: Ask[wire.MigrateContainer]) -> None:
        """Move the container to another daemon in a task of its own (``migration.source``).

        Meanwhile the actor goes on serving what a frozen container can still answer (stats,
        checkpoints listed, input queued) and refuses the rest as migrating; the task reports
        ``MigrationFinished``, and the request is answered from there.
        """
        assert self._init is not None and self._nursery is not None
        if self._status == "paused":
            paused = CommandError(
                ErrorCode.INVALID_STATE, f"container {self.id!r} is paused; resume it first"
            )
            fail(ask.reply_to, paused)
            return
        self._phase = Phase.MIGRATING
        self._migrating = ask
        from containerd_actors.daemon.migration.source import SourceContainer

        source = SourceContainer(
            self.id,
            self._bundle_path,
            self.paths,
            self._init.info.terminal,
            self._anonymous_memory(),
            self._deps.migration_stream_min_mib,
        )
        self._nursery.start_soon(self._migration_task, ask, source)

    async def _migration_task(self, ask: Ask[wire.MigrateContainer], source: SourceContainer) -> None:
        from containerd_actors.daemon.migration.source import migrate_out

        try:
            result = await migrate_out(self._runtime, source, ask.request, self._deps.migration_tls)
        except CommandError as error:
            await self._mailbox_send.send(MigrationFinished(ask, error=error))
        except Exception as error:
            log.exception("container %s: migration failed unexpectedly", self.id)
            failure = CommandError(ErrorCode.INTERNAL, f"migration failed: {error!r}; see daemon log")
            await self._mailbox_send.send(MigrationFinished(ask, error=failure))
        else:
            await self._mailbox_send.send(MigrationFinished(ask, result=result))

    async def _migration_finished(self, finished: MigrationFinished) -> None:
        """Answer the migration; once it runs elsewhere, delete the frozen copy, whose exit ends
        this actor as any exit does."""
        assert self._init is not None
        request, reply_to = finished.ask.request, finished.ask.reply_to
        self._migrating = None
        if finished.error is not None:
            if self._phase is Phase.MIGRATING:
                self._phase = Phase.RUNNING
            fail(reply_to, finished.error)
            return
        result = finished.result
        reason = f"to={request.to} frozen={result.frozen_s:.3f}s"
        await self._events.send(
            EventDraft(EventType.MIGRATE_OUT, self.id, self._init.pid, reason=reason, by=finished.ask.by)
        )
        if self._phase is Phase.MIGRATING:
            self._phase = Phase.EXITING
        try:
            await self._runtime.delete(self.id, force=True)
        except RuncError as exc:
            log.error(
                "container %s: migrated; its frozen copy here was not deleted: %s", self.id, exc.message
            )
        if not request.keep_source:
            from containerd_actors.daemon.migration.source import forget_migrated_bundle

            forget_migrated_bundle(self.paths.state_dir, self._bundle_path)
        answer(reply_to, result)

    async def _delete_checkpoint(self, name: str) -> None:
        delete_checkpoint(self._bundle_path, name)

    # ------------------------------------------------------------------ cgroups: stats and OOM

    def _cgroups(self) -> ContainerCgroups:
        assert self._init is not None
        if self._cgroup_state is None:
            self._cgroup_state = ContainerCgroups(self.id, self._init.pid, self._deps.runc_root)
        return self._cgroup_state

    def _anonymous_memory(self) -> int | None:
        """The container's memory less its page cache (what a dump writes), if its cgroup says."""
        try:
            memory = self._cgroups().sample().cgroup.memory
        except CommandError:
            return None
        return None if memory is None else max(0, memory.usage.usage - memory.cache)

    async def _sample_stats(self) -> ContainerStats:
        return self._cgroups().sample()

    async def _report_ooms(self) -> None:
        """Announce every OOM kill the cgroup has counted that is not yet announced."""
        assert self._init is not None
        for _ in range(self._cgroups().unannounced_oom_kills()):
            await self._events.send(EventDraft(EventType.OOM, self.id, self._init.pid))
