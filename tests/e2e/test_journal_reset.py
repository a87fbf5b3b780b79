"""A wiped event journal is noticed by a subscription, which then delivers the new journal's events."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import trio
from support.daemon import start_daemon, stop_daemon, unique_id

from containerd_actors.client import Client, DaemonUnreachable, JournalReset
from containerd_actors.protocol import EventType


async def test_a_subscription_notices_a_wiped_journal_and_delivers_the_new_events(
    state_dir: Path, sleep_bundle: Path
) -> None:
    handle = await start_daemon(state_dir)
    before, after = unique_id("before"), unique_id("after")
    resets: list[JournalReset] = []
    try:
        async with Client.connect(handle.address, timeout=10) as client:
            old_id = (await client.ping()).journal_id
            assert len(old_id) == 32
            async with client.subscribe(on_reset=resets.append) as events:
                await client.create_container(before, str(sleep_bundle))
                await client.pause(before)
                await client.resume(before)
                with trio.fail_after(30):
                    async for event in events:
                        if event.type == EventType.RESUME and event.id == before:
                            seq_before = event.seq
                            break
                await stop_daemon(handle)  # containers keep running
                shutil.rmtree(state_dir / "events")  # the journal is wiped while nobody runs
                handle = await start_daemon(state_dir)

                with trio.fail_after(30):
                    while True:
                        try:
                            await client.create_container(after, str(sleep_bundle))
                            break
                        except DaemonUnreachable:
                            await trio.sleep(0.05)  # the client's pipe reconnects by itself
                    async for event in events:
                        if event.type == EventType.START_CONTAINER and event.id == after:
                            break
                assert event.seq < seq_before, "the new journal numbers from 1 again"
                new_id = (await client.ping()).journal_id
                assert new_id != old_id
                assert resets == [JournalReset(old_id, new_id, seq_before + 1)]
                assert events.resets == resets
            for cid in (before, after):
                await client.signal(cid, signal.SIGKILL)
    finally:
        await stop_daemon(handle)
