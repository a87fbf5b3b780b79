"""Messages between the daemon's actors (never on the wire).

Each carries what the receiver needs and, for an ask, a one-shot ``reply_to`` channel.
"""

from __future__ import annotations

from typing import Any

import attrs

from containerd_actors.daemon.mailbox import ReplyTo
from containerd_actors.protocol import ContainerInfo

# --------------------------------------------------------------------------- to the supervisor


@attrs.frozen
class StartContainer:
    id: str
    bundle: str
    checkpoint: str | None
    reply_to: ReplyTo


@attrs.frozen
class ToContainer:
    """Route ``command`` (a message below, carrying its own reply_to) to the actor of container ``id``."""

    id: str
    command: Any


@attrs.frozen
class ListContainers:
    reply_to: ReplyTo


@attrs.frozen
class ContainerUpdated:
    """A container actor's latest snapshot; the supervisor answers State from these."""

    info: ContainerInfo


@attrs.frozen
class ContainerRemoved:
    """The actor has finished: its id is free again.

    ``processes`` are the stdio of its processes (by pid) and ``init_pid`` its init, kept so that
    their logs stay readable after the exit; empty when the container never started.
    """

    id: str
    processes: dict[int, Any] = attrs.field(factory=dict)
    init_pid: int = 0


@attrs.frozen
class FindProcessIO:
    """Ask the supervisor for the ProcessIO of a (live or exited) container's process; pid 0 is the init."""

    id: str
    pid: int
    reply_to: ReplyTo


# --------------------------------------------------------------------------- to a container actor


@attrs.frozen
class SignalProcess:
    pid: int
    signal: int
    reply_to: ReplyTo


@attrs.frozen
class AddProcessCommand:
    """Exec a process into the container (runc exec -d); answered with its pid."""

    args: list[str]
    env: list[str]
    cwd: str
    user: Any  # protocol.User | None
    terminal: bool
    rows: int
    cols: int
    reply_to: ReplyTo


@attrs.frozen
class InitExited:
    status: int | None


@attrs.frozen
class TakeCheckpoint:
    name: str
    tcp: bool
    unix_sockets: bool
    shell: bool
    exit: bool
    reply_to: ReplyTo


@attrs.frozen
class ListCheckpointsCommand:
    reply_to: ReplyTo


@attrs.frozen
class DeleteCheckpointCommand:
    name: str
    reply_to: ReplyTo


@attrs.frozen
class SampleStats:
    reply_to: ReplyTo


@attrs.frozen
class ChangeStatus:
    """Pause ("paused") or resume ("running")."""

    status: str
    reply_to: ReplyTo


@attrs.frozen
class OomNotified:
    """The container's memory cgroup signalled an OOM kill."""
