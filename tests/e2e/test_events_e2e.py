"""Events with the real daemon process and real containers: seq and replay across a restart,
``actr events --from/--since``, and the ``Events`` request from a client we did not write."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from typing import Any

import trio
from support.daemon import DaemonHandle, start_daemon, stop_daemon, unique_id
from test_lifecycle import collect_until
from test_nngcat_interop import parse_quoted_lines

from containerd_actors.client import Client
from containerd_actors.protocol import Event, EventType, converter

ACTR = [sys.executable, "-m", "ctl.main"]


def exits(count: int):
    return lambda events: sum(e.type == EventType.EXIT for e in events) == count


class JsonLines:
    """Reads ``actr --json events`` output one JSON object per line."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self._buffer = b""
        self.lines: list[dict[str, Any]] = []

    async def read(self, count: int) -> list[dict[str, Any]]:
        start = len(self.lines)
        while len(self.lines) < start + count:
            assert self._process.stdout is not None
            chunk = await self._process.stdout.receive_some()
            assert chunk, "actr events ended early"
            self._buffer += chunk
            *complete, self._buffer = self._buffer.split(b"\n")
            self.lines += [json.loads(line) for line in complete if line]
        return self.lines[start : start + count]


def as_json(event: Event) -> dict[str, Any]:
    return converter.unstructure(event, Event)


async def start_quick_containers(client: Client, bundle: str, prefix: str, count: int) -> list[str]:
    ids = [unique_id(f"{prefix}{n}") for n in range(count)]
    for container_id in ids:
        await client.create_container(container_id, bundle)
    return ids


async def test_seq_continues_across_a_restart_and_actr_replays_from_1(state_dir, bundle_factory) -> None:
    quick = str(bundle_factory("true"))
    first = await start_daemon(state_dir)
    try:
        async with Client.connect(first.address, timeout=60) as client, client.subscribe() as events:
            ids = await start_quick_containers(client, quick, "before", 3)
            with trio.fail_after(60):
                before = await collect_until(events, exits(3))
    finally:
        assert await stop_daemon(first) == 0, first.log_text()
    assert [e.seq for e in before] == [1, 2, 3, 4, 5, 6]
    assert {e.id for e in before} == set(ids)
    assert sorted((state_dir / "events").iterdir())  # the journal outlives the daemon

    second = await start_daemon(state_dir)
    actr = None
    try:
        assert "next event seq=7" in second.log_text()
        async with Client.connect(second.address, timeout=60) as client:
            assert (await client.ping()).last_event_seq == 6
            actr = await trio.lowlevel.open_process(
                [*ACTR, "--address", second.address, "--json", "events", "--from", "1"],
                stdout=subprocess.PIPE,
            )
            output = JsonLines(actr)
            with trio.fail_after(30):
                replayed = await output.read(6)
            assert replayed == [as_json(e) for e in before]  # the old daemon's events, as they were
            later = await start_quick_containers(client, quick, "after", 2)
            with trio.fail_after(60):
                live = await output.read(4)
    finally:
        if actr is not None:
            actr.kill()
            await actr.wait()
        assert await stop_daemon(second) == 0, second.log_text()
    assert [line["seq"] for line in replayed + live] == list(range(1, 11))  # no gap, no repeat
    assert {line["id"] for line in live} == set(later)
    assert sorted(line["type"] for line in live) == ["exit", "exit", "start-container", "start-container"]


async def test_a_subscription_lives_through_a_daemon_restart(state_dir, bundle_factory) -> None:
    """The client library redials, and whatever the old daemon published late is read back."""
    quick = str(bundle_factory("true"))
    first = await start_daemon(state_dir)
    second = None
    try:
        async with Client.connect(first.address, timeout=60) as client, client.subscribe() as events:
            await start_quick_containers(client, quick, "old", 1)
            with trio.fail_after(60):
                seen = await collect_until(events, exits(1))
            assert await stop_daemon(first) == 0, first.log_text()
            second = await start_daemon(state_dir)
            async with Client.connect(second.address, timeout=60) as other:
                await start_quick_containers(other, quick, "new", 2)
            with trio.fail_after(60):
                seen += await collect_until(events, exits(2))
    finally:
        await stop_daemon(first)
        if second is not None:
            await stop_daemon(second)
    assert [e.seq for e in seen] == list(range(1, 7))
    assert events.lost == []


async def test_actr_since_replays_what_happened_after_that_time(state_dir, bundle_factory) -> None:
    quick = str(bundle_factory("true"))
    daemon = await start_daemon(state_dir)
    actr = None
    try:
        async with Client.connect(daemon.address, timeout=60) as client:
            async with client.subscribe() as events:
                await start_quick_containers(client, quick, "early", 1)
                with trio.fail_after(60):
                    early = await collect_until(events, exits(1))
                ids = await start_quick_containers(client, quick, "late", 1)
                with trio.fail_after(60):
                    late = await collect_until(events, exits(1))
            since = repr(late[0].timestamp)
            actr = await trio.lowlevel.open_process(
                [*ACTR, "--address", daemon.address, "--json", "events", "--since", since],
                stdout=subprocess.PIPE,
            )
            with trio.fail_after(30):
                replayed = await JsonLines(actr).read(2)
    finally:
        if actr is not None:
            actr.send_signal(signal.SIGKILL)
            await actr.wait()
        await stop_daemon(daemon)
    assert early[-1].seq < late[0].seq
    assert replayed == [as_json(e) for e in late]
    assert {line["id"] for line in replayed} == set(ids)


async def test_nngcat_reads_the_journal_with_an_events_request(
    daemon: DaemonHandle, client: Client, bundle_factory
) -> None:
    async with client.subscribe() as events:
        await start_quick_containers(client, str(bundle_factory("true")), "nngcat", 1)
        with trio.fail_after(60):
            seen = await collect_until(events, exits(1))
    request = {"type": "Events", "request_id": "e1", "from_seq": 2, "limit": 1}
    argv = ["nngcat", "--req", "--dial", daemon.address, "--data", json.dumps(request), "--quoted"]
    with trio.fail_after(30):
        completed = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    assert completed.returncode == 0, completed.stderr
    [reply_bytes] = parse_quoted_lines(completed.stdout)
    reply = json.loads(reply_bytes)
    assert re.fullmatch(r"[0-9a-f]{32}", reply.pop("journal_id"))
    assert reply == {
        "type": "EventsReply",
        "request_id": "e1",
        "events": [as_json(seen[1])],
        "next_seq": 3,
        "last_seq": 2,
        "first_available_seq": 1,
    }
