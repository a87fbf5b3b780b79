"""What a container actor's mailbox accepts, and what it reports to its supervisor.

Clients' requests arrive as ``Ask(request)`` with the wire request itself (routed by the supervisor
on ``request.id``). The other messages come from the actor's own tasks: its exit watchers, its
OOM watcher and its stdin ports. None of them ever travels on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
import trio

from containerd_actors.daemon.container.stdio import OutputView
from containerd_actors.daemon.mailbox import Ask
from containerd_actors.protocol import (
    AddProcess,
    ContainerInfo,
    CreateCheckpoint,
    DeleteCheckpoint,
    ListCheckpoints,
    MigrateContainer,
    OpenStdin,
    ResizeTerminal,
    Signal,
    Stats,
    UpdateContainer,
    WriteInput,
)

#: The wire requests a container actor serves. (``ReadOutput`` is not one: the supervisor answers
#: it from the output views in the actor's last snapshot, so a long poll never waits in here.)
ContainerRequest = (
    Signal
    | AddProcess
    | Stats
    | UpdateContainer
    | CreateCheckpoint
    | ListCheckpoints
    | DeleteCheckpoint
    | WriteInput
    | ResizeTerminal
    | OpenStdin
    | MigrateContainer
)


@attrs.frozen
class InitExited:
    """The init process has exited and its output is drained (or the grace for that has passed)."""

    status: int | None


@attrs.frozen
class ExecExited:
    """An exec'd process has exited and its output is drained (or the grace for that has passed)."""

    pid: int
    status: int | None


@attrs.frozen
class OomNotified:
    """The container's memory cgroup signalled an OOM kill."""


@attrs.frozen
class InputClosed:
    """A client's EOF closed the stdin pipe of process ``pid``: the reaper must let go of its copy."""

    pid: int


@attrs.frozen
class MigrationFinished:
    """The actor's migration task is done: the container runs at the destination (``result``, the
    request's ``MigrateContainerReply``) or still here (``error``). The actor answers ``ask``."""

    ask: Ask[MigrateContainer]
    result: Any = None
    error: Exception | None = None


ContainerMessage = (
    Ask[ContainerRequest] | InitExited | ExecExited | OomNotified | InputClosed | MigrationFinished
)
ContainerMailbox = trio.MemorySendChannel[ContainerMessage]


def take_queued_asks(mailbox: trio.MemoryReceiveChannel[ContainerMessage]) -> list[Ask[Any]]:
    """The requests still queued in ``mailbox``, which is then closed; other messages are dropped."""
    asks = []
    while True:
        try:
            message = mailbox.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
        if isinstance(message, Ask):
            asks.append(message)
    mailbox.close()
    return asks


# --------------------------------------------------------------------------- to the supervisor


def _no_outputs() -> Mapping[int, OutputView]:
    return MappingProxyType({})


@attrs.frozen
class ContainerSnapshot:
    """A container actor's state as others may see it: immutable, replaced whole on every change."""

    info: ContainerInfo
    #: Every process whose output is still readable (exited ones included), by pid.
    outputs: Mapping[int, OutputView] = attrs.field(factory=_no_outputs)


@attrs.frozen
class ContainerUpdated:
    """A container actor's latest snapshot; the supervisor answers State and ReadOutput from these."""

    snapshot: ContainerSnapshot


@attrs.frozen
class ContainerRemoved:
    """The actor has finished: its id is free again.

    ``outputs`` and ``init_pid`` keep its processes' output readable after the exit; empty when
    the container never started (or its actor crashed). ``bundle`` is where its checkpoints stay
    listable (and deletable) after the exit; empty when unknown.
    """

    id: str
    outputs: Mapping[int, OutputView] = attrs.field(factory=_no_outputs)
    init_pid: int = 0
    bundle: str = ""


ContainerReport = ContainerUpdated | ContainerRemoved
ReportsMailbox = trio.MemorySendChannel[ContainerReport]
