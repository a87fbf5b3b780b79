"""The API server's table of handlers, and a Ping that never queues behind the events actor."""

from __future__ import annotations

from pathlib import Path

import trio
from support.events_daemon import InProcessDaemon

from containerd_actors import protocol as wire
from containerd_actors.daemon.api import streams_beside
from containerd_actors.daemon.config import RemoteStreams
from containerd_actors.daemon.events.messages import EventDraft, GetStatus
from containerd_actors.daemon.mailbox import ask

BURST = 5000


def test_every_request_type_has_a_handler(work_dir: Path) -> None:
    daemon = InProcessDaemon(work_dir, retention=10, segment_events=None)
    assert set(daemon.api.handlers) == set(wire.REQUEST_TYPES)


async def test_a_ping_answers_during_an_event_burst_with_a_journalled_seq(work_dir: Path) -> None:
    async with InProcessDaemon(work_dir, retention=BURST, segment_events=None).running() as daemon:
        events, ping = daemon.events, daemon.api.handlers[wire.Ping]
        for n in range(BURST):
            events.mailbox.send_nowait(EventDraft(wire.EventType.EXIT, f"c{n}", n, 0))
        while events.status.current.last_seq == 0:
            await trio.lowlevel.checkpoint()
        reply = await ping(wire.Ping(request_id="p"))
        # Answered in the middle of the burst, with a seq the journal holds.
        assert 0 < reply.last_event_seq < BURST
        assert reply.last_event_seq <= daemon.journal.last_seq
        await ask(events.mailbox, GetStatus)  # the burst is worked through
        assert (await ping(wire.Ping(request_id="p"))).last_event_seq == BURST


def test_a_ping_announces_thestreams_beside_the_listener_it_came_on() -> None:
    streams = (
        RemoteStreams("tls+tcp://127.0.0.1:7000", "tls+tcp://127.0.0.1:7001", "tls+tcp://127.0.0.1:7002"),
        RemoteStreams("tls+tcp://198.18.0.1:7000", "tls+tcp://198.18.0.1:7001", "tls+tcp://198.18.0.1:7002"),
        RemoteStreams("tls+tcp://0.0.0.0:9000", "tls+tcp://0.0.0.0:9001", "tls+tcp://0.0.0.0:9002"),
    )
    assert streams_beside(streams, "198.18.0.1:7000") is streams[1]  # same port, the host decides
    assert streams_beside(streams, "127.0.0.1:7000") is streams[0]
    assert streams_beside(streams, "10.0.0.5:9000") is streams[2]  # every interface: by port
    assert streams_beside(streams, "10.0.0.5:1234") is None
