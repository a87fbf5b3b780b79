"""Messages between the daemon's actors (never on the wire).

Each carries what the receiver needs and, for an ask, a one-shot ``reply_to`` channel.
"""

from __future__ import annotations

import attrs

from ..protocol import ContainerInfo
from .mailbox import ReplyTo

# --------------------------------------------------------------------------- to the supervisor


@attrs.frozen
class StartContainer:
    id: str
    bundle: str
    reply_to: ReplyTo


@attrs.frozen
class SignalContainer:
    id: str
    pid: int
    signal: int
    reply_to: ReplyTo


@attrs.frozen
class ListContainers:
    reply_to: ReplyTo


@attrs.frozen
class ContainerUpdated:
    """A container actor's latest snapshot; the supervisor answers State from these."""

    info: ContainerInfo


@attrs.frozen
class ContainerRemoved:
    """The actor has finished: its id is free again."""

    id: str


# --------------------------------------------------------------------------- to a container actor


@attrs.frozen
class SignalProcess:
    pid: int
    signal: int
    reply_to: ReplyTo


@attrs.frozen
class InitExited:
    status: int | None
