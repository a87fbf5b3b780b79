"""What the supervisor's mailbox accepts: clients' requests, and its container actors' reports
(``ContainerUpdated``, ``ContainerRemoved``: defined with the container actor that sends them, so
imports run from the supervisor to the container actor only)."""

from __future__ import annotations

import trio

from containerd_actors.daemon.container.messages import ContainerRemoved, ContainerRequest, ContainerUpdated
from containerd_actors.daemon.mailbox import Ask
from containerd_actors.protocol import CreateContainer, ReadOutput, State

#: ``CreateContainer`` is answered with the pid, ``State`` with the containers, ``ReadOutput``
#: with the process's ``OutputView`` (the API server's task reads from it), and a
#: ``ContainerRequest`` by the actor it is routed to.
SupervisorRequest = CreateContainer | State | ReadOutput | ContainerRequest

SupervisorMessage = Ask[SupervisorRequest] | ContainerUpdated | ContainerRemoved
SupervisorMailbox = trio.MemorySendChannel[SupervisorMessage]
