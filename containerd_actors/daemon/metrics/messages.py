"""What the metrics actor accepts: measurements told by other actors, and asks for a snapshot."""

from __future__ import annotations

import attrs
import trio

from containerd_actors.daemon.mailbox import Ask, ReplyTo
from containerd_actors.protocol import Metrics


@attrs.frozen
class RecordDuration:
    """A timer sample, in nanoseconds."""

    timer: str
    nanoseconds: int


@attrs.frozen
class AddToCounter:
    counter: str
    delta: int = 1


@attrs.frozen
class TakeSnapshot:
    """A snapshot for the Prometheus endpoint, which serves no wire request (the API asks ``Metrics``)."""

    reply_to: ReplyTo


MetricsMessage = RecordDuration | AddToCounter | TakeSnapshot | Ask[Metrics]
MetricsMailbox = trio.MemorySendChannel[MetricsMessage]


def tell(mailbox: MetricsMailbox, message: RecordDuration | AddToCounter) -> None:
    """Measurements are best effort: a full metrics mailbox drops a sample rather than stall an actor."""
    try:
        mailbox.send_nowait(message)
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
