"""The metrics actor: owns the registry, takes measurements as messages, flushes them to the log.

Other actors never touch the registry; they tell this actor what they measured. It answers the
Metrics request with a snapshot and, every ``--metrics-interval``, logs the original's Telemetry
block (``timer container-start-time`` / ``count: 22`` / ...).

It is supervised (``daemon.supervision``): after a crash ``run`` is called again on the same
object, with the same mailbox and the same registry. The registry is kept on purpose: counters
such as ``containers`` are running totals that other actors maintain by deltas, and a fresh one
would be wrong for the rest of the server's life. An ask in flight is answered with an error.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from containerd_actors.daemon.faults import NO_FAULTS, FaultHook
from containerd_actors.daemon.mailbox import Ask, CommandError, answer, fail, receive
from containerd_actors.daemon.metrics.messages import (
    AddToCounter,
    MetricsMailbox,
    MetricsMessage,
    RecordDuration,
    TakeSnapshot,
)
from containerd_actors.daemon.metrics.registry import daemon_registry, snapshot_log_lines
from containerd_actors.protocol import ErrorCode, Metrics, MetricsSnapshot

log = logging.getLogger("containerd_actors.daemon.metrics.registry")


class MetricsActor:
    def __init__(self, flush_interval: float, faults: FaultHook = NO_FAULTS) -> None:
        self.flush_interval = flush_interval
        self._faults = faults
        self._registry = daemon_registry()
        self._mailbox_send, self._mailbox = trio.open_memory_channel[MetricsMessage](100_000)

    @property
    def mailbox(self) -> MetricsMailbox:
        return self._mailbox_send

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """One incarnation: the flush task and the mailbox loop; called again after a crash."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flush_periodically)
            task_status.started()
            while True:
                try:
                    message = await receive(self._mailbox)
                except trio.EndOfChannel:
                    break
                try:
                    self._handle(message)
                except BaseException:
                    if isinstance(message, TakeSnapshot | Ask):
                        failed = CommandError(ErrorCode.INTERNAL, "the metrics actor failed; see daemon log")
                        fail(message.reply_to, failed)
                    raise

    def _handle(self, message: MetricsMessage) -> None:
        """The one dispatch of everything this actor is told or asked."""
        self._faults.check("metrics", message)
        match message:
            case RecordDuration(timer, nanoseconds):
                self._registry.timer(timer).update(nanoseconds)
            case AddToCounter(name, delta):
                counter = self._registry.counter(name)
                counter.inc(delta) if delta >= 0 else counter.dec(-delta)
            case TakeSnapshot(reply_to) | Ask(Metrics(), reply_to):
                answer(reply_to, self._snapshot())

    def _snapshot(self) -> MetricsSnapshot:
        return self._registry.snapshot()

    async def _flush_periodically(self) -> None:
        if self.flush_interval <= 0:
            return
        while True:
            await trio.sleep(self.flush_interval)
            for line in snapshot_log_lines(self._snapshot(), compact=True):
                log.info("%s", line)
