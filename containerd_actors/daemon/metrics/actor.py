"""The metrics actor: owns the registry, takes measurements as messages, flushes them to the log.

Other actors never touch the registry; they tell this actor what they measured. It answers the
Metrics request with a snapshot and, every ``--metrics-interval``, logs the original's Telemetry
block (``timer container-start-time`` / ``count: 22`` / ...).
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio

from containerd_actors.daemon.mailbox import ReplyTo, answer
from containerd_actors.daemon.metrics.registry import daemon_registry, snapshot_log_lines
from containerd_actors.protocol import MetricsSnapshot

log = logging.getLogger("containerd_actors.daemon.metrics.registry")


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
    reply_to: ReplyTo


class MetricsActor:
    def __init__(self, flush_interval: float) -> None:
        self.flush_interval = flush_interval
        self._registry = daemon_registry()
        self._mailbox_send, self._mailbox = trio.open_memory_channel[Any](100_000)

    @property
    def mailbox(self) -> trio.MemorySendChannel[Any]:
        return self._mailbox_send

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flush_periodically)
            task_status.started()
            async for message in self._mailbox:
                if isinstance(message, RecordDuration):
                    self._registry.timer(message.timer).update(message.nanoseconds)
                elif isinstance(message, AddToCounter):
                    counter = self._registry.counter(message.counter)
                    counter.inc(message.delta) if message.delta >= 0 else counter.dec(-message.delta)
                elif isinstance(message, TakeSnapshot):
                    answer(message.reply_to, self.snapshot())

    def snapshot(self) -> MetricsSnapshot:
        return self._registry.snapshot()

    async def _flush_periodically(self) -> None:
        if self.flush_interval <= 0:
            return
        while True:
            await trio.sleep(self.flush_interval)
            for line in snapshot_log_lines(self.snapshot(), compact=True):
                log.info("%s", line)


def tell(mailbox: trio.MemorySendChannel[Any], message: Any) -> None:
    """Measurements are best effort: a full metrics mailbox drops a sample rather than stall an actor."""
    try:
        mailbox.send_nowait(message)
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
