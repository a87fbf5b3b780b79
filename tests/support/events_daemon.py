"""The daemon's events actor and API server in the test's trio loop, on temporary ipc addresses.

Producing thousands of events with real containers would take minutes; feeding the events
actor's mailbox directly is what container actors do, only faster. The real client library reads
through real nng Sub0/Req0 sockets.

Import it as ``from support.events_daemon import daemon_in_process`` (pyproject puts tests/ on
pytest's path).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from containerd_actors.client import EventSubscription
from containerd_actors.daemon.api import ApiServer
from containerd_actors.daemon.config import DaemonConfig
from containerd_actors.daemon.events.actor import EventsActor
from containerd_actors.daemon.events.batch import MAX_BATCH_EVENTS
from containerd_actors.daemon.events.journal import EventJournal
from containerd_actors.daemon.events.messages import EventDraft
from containerd_actors.daemon.faults import NO_FAULTS, FaultHook
from containerd_actors.daemon.supervision import supervise
from containerd_actors.protocol import Event, EventType

PRODUCED = 20_000
PER_EVENT = "per-event"
BATCH = "batch"
#: Events per batch on the batch stream in these tests: small, so that nng drops some of them.
SMALL_BATCH_EVENTS = 10


class InProcessDaemon:
    """The daemon's events actor and API server, without the supervisor (no containers).

    With ``batch_events`` it also publishes the batch stream, at most that many events a batch.
    """

    def __init__(
        self,
        directory: Path,
        retention: int,
        segment_events: int | None,
        batch_events: int | None = None,
        faults: FaultHook = NO_FAULTS,
    ) -> None:
        self.config = DaemonConfig(
            id="test",
            debug=False,
            state_dir=directory,
            concurrency=1,
            metrics_interval=60.0,
            listen=f"ipc://{directory}/api.sock",
            events_address=f"ipc://{directory}/events.sock",
            oom_notify=False,
            events_retention=retention,
            events_batch_address=None if batch_events is None else f"ipc://{directory}/events-batch.sock",
        )
        self.journal = EventJournal(self.config.events_dir, retention, segment_events)
        # Measurements are dropped unread: this test is about events, not telemetry.
        self._metrics, _ = trio.open_memory_channel[object](0)
        self.events = EventsActor(
            self.config.events_address,
            self.journal,
            self._metrics,
            self.config.events_batch_address,
            batch_events or MAX_BATCH_EVENTS,
            faults=faults,
        )
        #: (actor, exception) of each restart of the events actor, which runs supervised as in the daemon.
        self.restarts: list[tuple[str, BaseException]] = []
        # Ping and Events never reach the supervisor; a request that did would wait forever.
        supervisor, _ = trio.open_memory_channel[object](0)
        self.api = ApiServer(self.config, supervisor, self.events.mailbox, self._metrics, self.events.status)

    def _restarted(self, name: str, error: BaseException, _restarts: int) -> None:
        self.restarts.append((name, error))

    @property
    def address(self) -> str:
        return self.config.listen

    async def emit(self, count: int, kinds: tuple[str, ...] = (EventType.EXIT,)) -> None:
        """Tell the events actor ``count`` events, as fast as its mailbox takes them."""
        for n in range(count):
            await self.events.mailbox.send(EventDraft(kinds[n % len(kinds)], f"c{n}", 1000 + n, 0))

    async def wait_for_seq(self, seq: int) -> None:
        while self.journal.last_seq < seq:
            await trio.sleep(0)  # the events actor runs in this loop; let it work

    @asynccontextmanager
    async def running(self) -> AsyncIterator[InProcessDaemon]:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "events", self.events.run, self._restarted)
            await nursery.start(self.api.run)
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()


@asynccontextmanager
async def daemon_in_process(
    directory: Path,
    stream: str = PER_EVENT,
    retention: int = 1_000_000,
    segment_events: int | None = None,
    batch_events: int = SMALL_BATCH_EVENTS,
    faults: FaultHook = NO_FAULTS,
) -> AsyncIterator[InProcessDaemon]:
    """An in-process daemon whose subscriptions read ``stream`` (they take the batch one if published)."""
    batches = batch_events if stream == BATCH else None
    async with InProcessDaemon(directory, retention, segment_events, batches, faults).running() as daemon:
        yield daemon


async def read(
    subscription: EventSubscription, count: int, every: int = 0, pause: float = 0.0
) -> list[Event]:
    """Read ``count`` events; with ``every``, sleep ``pause`` after every ``every`` events (a slow reader)."""
    received: list[Event] = []
    async for event in subscription:
        received.append(event)
        if every and len(received) % every == 0:
            await trio.sleep(pause)
        if len(received) == count:
            break
    return received
