"""What the supervisor's mailbox accepts: clients' requests, and its container actors' reports
(``ContainerUpdated``, ``ContainerRemoved``: defined with the container actor that sends them, so
imports run from the supervisor to the container actor only), and ``ActorCrashed`` from the task
that ran a container actor whose loop raised."""

from __future__ import annotations

import attrs
import trio

from containerd_actors.daemon.container.actor import ContainerActor
from containerd_actors.daemon.container.messages import ContainerRemoved, ContainerRequest, ContainerUpdated
from containerd_actors.daemon.mailbox import Ask
from containerd_actors.protocol import CreateContainer, ReadOutput, State

#: ``CreateContainer`` is answered with the pid, ``State`` with the containers, ``ReadOutput``
#: with the process's ``OutputView`` (the API server's task reads from it), and a
#: ``ContainerRequest`` by the actor it is routed to.
SupervisorRequest = CreateContainer | State | ReadOutput | ContainerRequest


@attrs.frozen
class ActorCrashed:
    """A container actor's loop raised (told by the task that ran it): restart it, or give up."""

    actor: ContainerActor
    error: Exception


SupervisorMessage = Ask[SupervisorRequest] | ContainerUpdated | ContainerRemoved | ActorCrashed
SupervisorMailbox = trio.MemorySendChannel[SupervisorMessage]
