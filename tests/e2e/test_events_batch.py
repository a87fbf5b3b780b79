"""The batch stream: many events per nng message, for subscribers that must keep up with a busy daemon.

Bursts come from the real events actor fed through its mailbox (as in test_events_lossless);
the daemon-process tests show that a real daemon advertises the stream, that ``Client.subscribe``
takes it by default, and that a client we did not write (nngcat) can read a batch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trio
from support.daemon import DaemonHandle, unique_id
from support.events_daemon import BATCH, PER_EVENT, PRODUCED, daemon_in_process, read

from containerd_actors.client import Client, ClientError
from containerd_actors.daemon.events.batch import MAX_BATCH_EVENTS
from containerd_actors.protocol import Event, EventType, decode_event_batch
from containerd_actors.protocol.schema import EVENT_BATCH_FILE, generate_schemas


async def test_a_burst_arrives_in_order_in_few_messages(work_dir: Path) -> None:
    async with (
        daemon_in_process(work_dir, BATCH, batch_events=MAX_BATCH_EVENTS) as daemon,
        Client.connect(daemon.address) as client,
        client.subscribe() as subscription,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(daemon.emit, PRODUCED)
        with trio.fail_after(60):
            received = await read(subscription, PRODUCED)
    assert [e.seq for e in received] == list(range(1, PRODUCED + 1))
    assert [e.id for e in received] == [f"c{n}" for n in range(PRODUCED)]
    stats = subscription.stats
    assert stats.lost == 0 and subscription.lost == []
    # A producer that tells events back to back fills batches: far fewer messages than events.
    assert 0 < stats.batches <= PRODUCED // 10, stats
    assert stats.live + stats.replayed == PRODUCED


async def test_a_batch_subscriber_that_falls_behind_loses_nothing(work_dir: Path) -> None:
    """A reader that stalls long enough for nng to drop whole batches gets them from the journal."""
    async with (
        daemon_in_process(work_dir, BATCH, batch_events=20) as daemon,
        Client.connect(daemon.address) as client,
        client.subscribe() as subscription,
    ):
        await daemon.emit(PRODUCED)
        await daemon.wait_for_seq(PRODUCED)
        # Nothing was read while 1000 batches were published: nng kept at most ~150 of them.
        with trio.fail_after(60):
            received = await read(subscription, PRODUCED)
    assert [e.seq for e in received] == list(range(1, PRODUCED + 1))
    stats = subscription.stats
    assert stats.gaps > 0 and stats.replayed > 0, stats
    assert stats.batches > 0 and stats.lost == 0, stats


async def test_an_idle_daemon_sends_each_event_at_once(work_dir: Path) -> None:
    """The end of a burst sends the batch: a lone event does not wait for a full batch or a timer."""
    async with (
        daemon_in_process(work_dir, BATCH, batch_events=MAX_BATCH_EVENTS) as daemon,
        Client.connect(daemon.address) as client,
        client.subscribe() as subscription,
    ):
        for n in range(3):
            await daemon.emit(1)
            # Well under the subscription's idle check (0.5 s), which would read the journal instead.
            with trio.fail_after(0.4):
                [event] = await read(subscription, 1)
            assert event.seq == n + 1
    assert (subscription.stats.live, subscription.stats.batches, subscription.stats.pages) == (3, 3, 0)


async def test_topic_prefixes_filter_batched_events_as_nng_would(work_dir: Path) -> None:
    kinds = (EventType.START_CONTAINER, EventType.EXIT, EventType.START_PROCESS)
    async with (
        daemon_in_process(work_dir, BATCH, batch_events=MAX_BATCH_EVENTS) as daemon,
        Client.connect(daemon.address) as client,
        client.subscribe("/containers/start") as lossless,
        client.subscribe("/containers/exit ", fill_gaps=False) as raw,
    ):
        await daemon.emit(300, kinds)
        with trio.fail_after(30):
            starts = await read(lossless, 200)
            exits = await read(raw, 100)
    assert [e.seq for e in starts] == [seq for seq in range(1, 301) if seq % 3 != 2]
    assert {e.type for e in starts} == {EventType.START_CONTAINER, EventType.START_PROCESS}
    assert [e.seq for e in exits] == list(range(2, 301, 3))
    assert raw.stats.batches > 0


async def test_the_per_event_stream_is_still_there_for_the_asking(work_dir: Path) -> None:
    async with (
        daemon_in_process(work_dir, BATCH) as daemon,
        Client.connect(daemon.address) as client,
        client.subscribe(batched=False) as per_event,
        client.subscribe() as batched,
    ):
        await daemon.emit(50)
        with trio.fail_after(30):
            one_by_one, in_batches = await read(per_event, 50), await read(batched, 50)
    assert one_by_one == in_batches
    assert per_event.stats.batches == 0 and batched.stats.batches > 0


async def test_insisting_on_batches_from_a_daemon_without_them_is_an_error(work_dir: Path) -> None:
    async with daemon_in_process(work_dir, PER_EVENT) as daemon, Client.connect(daemon.address) as client:
        assert (await client.ping()).events_batch_address is None
        with pytest.raises(ClientError, match="publishes no batch stream"):
            async with client.subscribe(batched=True):
                pass
        async with client.subscribe() as subscription:  # the default falls back to per-event
            await daemon.emit(1)
            with trio.fail_after(10):
                assert [e.seq for e in await read(subscription, 1)] == [1]
        assert subscription.stats.batches == 0


# --------------------------------------------------------------------------- the daemon process


async def test_the_daemon_publishes_batches_and_subscriptions_take_them(
    daemon: DaemonHandle, client: Client, bundle_factory
) -> None:
    ping = await client.ping()
    assert ping.events_batch_address == daemon.events_address.replace("events.sock", "events-batch.sock")
    quick = str(bundle_factory("true"))
    async with client.subscribe() as events:
        ids = [unique_id(f"b{n}") for n in range(3)]
        for container_id in ids:
            await client.create_container(container_id, quick)
        with trio.fail_after(60):
            received = await read(events, 6)
    assert [e.seq for e in received] == list(range(ping.last_event_seq + 1, ping.last_event_seq + 7))
    assert sorted(e.type for e in received) == [EventType.EXIT] * 3 + [EventType.START_CONTAINER] * 3
    assert {e.id for e in received} == set(ids)
    assert events.stats.batches > 0 and events.stats.live == 6


async def test_nngcat_reads_a_batch(daemon: DaemonHandle, client: Client, bundle_factory) -> None:
    """A client we did not write: subscribe to everything on the batch socket, print one message raw."""
    quick = bundle_factory("sh", "-c", "exit 7")
    batch_address = (await client.ping()).events_batch_address
    assert batch_address is not None
    argv = ["nngcat", "--sub", "--dial", batch_address, "--subscribe", "", "--raw"]
    argv += ["--count", "1", "--recv-timeout", "30"]
    output: dict[str, bytes] = {}

    async def run_subscriber() -> None:
        completed = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
        assert completed.returncode == 0, completed.stderr
        output["batch"] = completed.stdout

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_subscriber)
        with trio.fail_after(10):
            while (await client.ping()).events_subscribers < 1:
                await trio.sleep(0.01)
        started = time.time()
        cid = unique_id("nngcat-batch")
        pid = await client.create_container(cid, str(quick))
    raw = output["batch"]
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads(raw), generate_schemas()[EVENT_BATCH_FILE])
    events = decode_event_batch(raw).events()
    first = events[0]
    assert isinstance(first, Event)
    assert (first.type, first.id, first.pid) == (EventType.START_CONTAINER, cid, pid)
    assert first.timestamp >= started - 1
    assert [e.seq for e in events] == list(range(first.seq, first.seq + len(events)))
