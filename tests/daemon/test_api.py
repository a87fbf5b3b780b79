"""The API server's table of handlers, and a Ping that never queues behind the events actor."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support.daemon import short_temp_dir

from containerd_actors import protocol as wire
from containerd_actors.daemon.api import ApiServer
from containerd_actors.daemon.config import DaemonConfig
from containerd_actors.daemon.events.actor import EventsActor
from containerd_actors.daemon.events.journal import EventJournal
from containerd_actors.daemon.events.messages import EventDraft, GetStatus
from containerd_actors.daemon.mailbox import ask

BURST = 5000


@pytest.fixture
def work_dir() -> Iterator[Path]:
    directory = short_temp_dir("ca-api-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def config(directory: Path) -> DaemonConfig:
    return DaemonConfig(
        id="t",
        debug=False,
        state_dir=directory,
        concurrency=1,
        metrics_interval=0,
        listen=f"ipc://{directory}/api.sock",
        events_address=f"ipc://{directory}/events.sock",
        oom_notify=False,
    )


def test_every_request_type_has_a_handler(work_dir: Path) -> None:
    unused, _ = trio.open_memory_channel[object](0)
    server = ApiServer(config(work_dir), unused, unused, unused)
    assert set(server.handlers) == set(wire.REQUEST_TYPES)


async def test_a_ping_answers_during_an_event_burst_with_a_journalled_seq(work_dir: Path) -> None:
    metrics, _ = trio.open_memory_channel[object](0)  # measurements are dropped unread
    journal = EventJournal(work_dir / "events")
    events = EventsActor(config(work_dir).events_address, journal, metrics)
    server = ApiServer(config(work_dir), metrics, events.mailbox, metrics, events.status)
    ping = server.handlers[wire.Ping]
    async with trio.open_nursery() as nursery:
        await nursery.start(events.run)
        for n in range(BURST):
            events.mailbox.send_nowait(EventDraft(wire.EventType.EXIT, f"c{n}", n, 0))
        while events.status.current.last_seq == 0:
            await trio.lowlevel.checkpoint()
        reply = await ping(wire.Ping(request_id="p"))
        # Answered in the middle of the burst, with a seq the journal holds.
        assert 0 < reply.last_event_seq < BURST
        assert reply.last_event_seq <= journal.last_seq
        await ask(events.mailbox, GetStatus)  # the burst is worked through
        assert (await ping(wire.Ping(request_id="p"))).last_event_seq == BURST
        nursery.cancel_scope.cancel()
