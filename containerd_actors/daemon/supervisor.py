"""The supervisor actor: registry of container actors, router of commands, limiter of starts.

Its loop never waits on runc: a start is handed to a new container actor at once, so State and
Signal stay fast while starts queue on the ``--concurrency`` limiter. It answers State from the
snapshots actors report, without asking 1000 actors one by one.
"""

from __future__ import annotations

import collections
import logging
import shutil
from collections.abc import Awaitable
from typing import Any

import attrs
import trio

from containerd_actors.daemon.config import DaemonConfig
from containerd_actors.daemon.container.actor import ActorDeps, ContainerActor, container_paths
from containerd_actors.daemon.container.messages import (
    ContainerRemoved,
    ContainerUpdated,
    FindProcessIO,
    ListContainers,
    StartContainer,
    ToContainer,
)
from containerd_actors.daemon.container.stdio import ProcessIO
from containerd_actors.daemon.mailbox import CommandError, answer, fail
from containerd_actors.daemon.state.layout import ContainerRecord
from containerd_actors.host.fds import close_quietly
from containerd_actors.host.reaping import ExitWatcher
from containerd_actors.protocol import ContainerInfo, ErrorCode
from containerd_actors.runc.driver import Runc

log = logging.getLogger(__name__)

#: Exited containers whose logs stay readable (ReadOutput, ``actr containers logs``) until their id
#: is reused; beyond this many, the oldest are forgotten and their log directories removed.
KEPT_EXITED_CONTAINERS = 256


@attrs.define
class _Entry:
    """What the supervisor knows of one container: where to send commands, and its last snapshot."""

    mailbox: trio.MemorySendChannel[Any]
    #: The actor's own dict of process stdio by pid; read here, written only by the actor.
    processes: dict[int, ProcessIO]
    info: ContainerInfo | None = None


@attrs.frozen
class _Exited:
    """What is left of an exited container: its processes' stdio (logs, exit statuses)."""

    processes: dict[int, ProcessIO]
    init_pid: int


class Supervisor:
    def __init__(
        self,
        config: DaemonConfig,
        runc: Runc,
        exit_watcher: ExitWatcher,
        events: trio.MemorySendChannel[Any],
        metrics: trio.MemorySendChannel[Any],
    ) -> None:
        self._config = config
        self._registry: dict[str, _Entry] = {}
        self._exited: collections.OrderedDict[str, _Exited] = collections.OrderedDict()
        self._mailbox_send, self._mailbox = trio.open_memory_channel[Any](1024)
        self._actor_deps = ActorDeps(
            runc=runc,
            start_limiter=trio.CapacityLimiter(config.concurrency),
            exit_watcher=exit_watcher,
            events=events,
            supervisor=self._mailbox_send,
            metrics=metrics,
            oom_notify=config.oom_notify,
        )

    @property
    def mailbox(self) -> trio.MemorySendChannel[Any]:
        return self._mailbox_send

    async def run(
        self,
        adopt: list[ContainerRecord] | None = None,
        kept_fds: dict[str, list[int]] | None = None,
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve commands; first take over ``adopt``, the containers a previous server left running."""
        async with trio.open_nursery() as actors:
            kept_fds = dict(kept_fds or {})
            for record in adopt or []:
                exec_fds = {
                    key: kept_fds.pop(key) for key in list(kept_fds) if key.startswith(record.id + "/")
                }
                self._adopt(record, kept_fds.pop(record.id, []), exec_fds, actors)
            for orphan_key, fds in kept_fds.items():
                log.warning("reaper held pipes for %s, which has no record; closing them", orphan_key)
                for fd in fds:
                    close_quietly(fd)
                await self._actor_deps.exit_watcher.drop(orphan_key)
            task_status.started()
            async for message in self._mailbox:
                try:
                    await self._handle(message, actors)
                except Exception:
                    # A bug in handling one message must not take the registry down with it.
                    log.exception("supervisor: failed to handle %r", message)
                    if hasattr(message, "reply_to"):
                        fail(
                            message.reply_to,
                            CommandError(ErrorCode.INTERNAL, "internal error; see daemon log"),
                        )

    async def _handle(self, message: Any, actors: trio.Nursery) -> None:
        if isinstance(message, StartContainer):
            self._start(message, actors)
        elif isinstance(message, ToContainer):
            self._route(message)
        elif isinstance(message, ListContainers):
            answer(message.reply_to, self._list())
        elif isinstance(message, ContainerUpdated):
            entry = self._registry.get(message.info.id)
            if entry is not None:
                entry.info = message.info
        elif isinstance(message, FindProcessIO):
            self._find_process_io(message)
        elif isinstance(message, ContainerRemoved):
            self._registry.pop(message.id, None)
            if message.processes:
                self._keep_exited(message.id, _Exited(message.processes, message.init_pid))
        else:
            log.error("supervisor: unexpected message %r", message)

    def _start(self, message: StartContainer, actors: trio.Nursery) -> None:
        if message.id in self._registry:
            fail(
                message.reply_to,
                CommandError(ErrorCode.ALREADY_EXISTS, f"container {message.id!r} already exists"),
            )
            return
        self._exited.pop(message.id, None)  # the new actor removes the old logs
        actor = ContainerActor(
            message.id,
            message.bundle,
            message.checkpoint,
            container_paths(self._config.containers_dir, message.id),
            self._actor_deps,
        )
        self._registry[message.id] = _Entry(actor.mailbox, actor.processes)
        actors.start_soon(self._run_actor, actor, actor.run(message.reply_to))

    def _adopt(
        self, record: ContainerRecord, fds: list[int], exec_fds: dict[str, list[int]], actors: trio.Nursery
    ) -> None:
        actor = ContainerActor(
            record.id,
            record.bundle,
            None,
            container_paths(self._config.containers_dir, record.id),
            self._actor_deps,
        )
        self._registry[record.id] = _Entry(actor.mailbox, actor.processes)
        actors.start_soon(self._run_actor, actor, actor.run_adopted(record, fds, exec_fds))

    async def _run_actor(self, actor: ContainerActor, work: Awaitable[None]) -> None:
        """An actor that crashes is reported and removed; it never takes the daemon down."""
        try:
            await work
        except Exception:
            log.exception("container actor %s crashed", actor.id)
            await self._mailbox_send.send(ContainerRemoved(actor.id))

    def _route(self, message: ToContainer) -> None:
        reply_to = message.command.reply_to
        entry = self._registry.get(message.id)
        if entry is None or entry.info is None:
            fail(reply_to, CommandError(ErrorCode.NOT_FOUND, f"no such container: {message.id!r}"))
            return
        try:
            entry.mailbox.send_nowait(message.command)
        except trio.WouldBlock:
            fail(reply_to, CommandError(ErrorCode.INTERNAL, f"container {message.id!r} is busy; retry"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            fail(reply_to, CommandError(ErrorCode.NOT_FOUND, f"container {message.id!r} has exited"))

    def _keep_exited(self, id: str, exited: _Exited) -> None:
        self._exited[id] = exited
        self._exited.move_to_end(id)
        while len(self._exited) > KEPT_EXITED_CONTAINERS:
            old_id, _ = self._exited.popitem(last=False)
            if old_id not in self._registry:
                shutil.rmtree(self._config.state_dir / "logs" / old_id, ignore_errors=True)

    def _find_process_io(self, message: FindProcessIO) -> None:
        entry = self._registry.get(message.id)
        if entry is not None and entry.info is not None:
            processes, init_pid = entry.processes, entry.info.pid
        elif message.id in self._exited:
            exited = self._exited[message.id]
            processes, init_pid = exited.processes, exited.init_pid
        else:
            fail(message.reply_to, CommandError(ErrorCode.NOT_FOUND, f"no such container: {message.id!r}"))
            return
        io = processes.get(message.pid or init_pid)
        if io is None:
            fail(
                message.reply_to,
                CommandError(
                    ErrorCode.NOT_FOUND, f"container {message.id!r} has no process with pid {message.pid}"
                ),
            )
            return
        answer(message.reply_to, io)

    def _list(self) -> list[ContainerInfo]:
        return [entry.info for entry in self._registry.values() if entry.info is not None]
