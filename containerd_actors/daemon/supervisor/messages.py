"""What the supervisor's mailbox accepts: clients' requests, and its container actors' reports."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs
import trio

from containerd_actors.daemon.container.messages import ContainerRequest
from containerd_actors.daemon.container.stdio import OutputView
from containerd_actors.daemon.mailbox import Ask
from containerd_actors.protocol import ContainerInfo, CreateContainer, ReadOutput, State

#: ``CreateContainer`` is answered with the pid, ``State`` with the containers, ``ReadOutput``
#: with the process's ``OutputView`` (the API server's task reads from it), and a
#: ``ContainerRequest`` by the actor it is routed to.
SupervisorRequest = CreateContainer | State | ReadOutput | ContainerRequest


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
    the container never started (or its actor crashed).
    """

    id: str
    outputs: Mapping[int, OutputView] = attrs.field(factory=_no_outputs)
    init_pid: int = 0


SupervisorMessage = Ask[SupervisorRequest] | ContainerUpdated | ContainerRemoved
SupervisorMailbox = trio.MemorySendChannel[SupervisorMessage]
