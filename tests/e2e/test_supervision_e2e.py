"""Supervision in a real daemon: a container actor crashed by the tests' fault hook is restarted,
and its container, run by real runc, stays controllable through the client.

The fault hook (``containerd_actors.daemon.faults``) is armed through the daemon's environment,
which only whoever starts the daemon controls; nothing on the wire can reach it.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from support.daemon import DaemonHandle, running_daemon, unique_id
from support.event_waits import next_event
from support.restarts import server_pid, wait_for_new_server

from containerd_actors.client import Client, RequestFailed
from containerd_actors.daemon.faults import ENABLE_VARIABLE, FAULTS_VARIABLE
from containerd_actors.daemon.supervision import EXIT_RESTART_LIMIT, RESTARTS_PER_MINUTE
from containerd_actors.protocol import ErrorCode, EventType


async def output_until(client: Client, cid: str, pid: int, expected: bytes) -> bytes:
    seen = b""
    with trio.fail_after(30):
        async for chunk in client.follow_output(cid, pid):
            seen += chunk.stdout
            if expected in seen:
                return seen
    raise AssertionError(f"the process exited without writing {expected!r}; it wrote {seen!r}")


@asynccontextmanager
async def daemon_with_faults(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, faults: str
) -> AsyncIterator[DaemonHandle]:
    monkeypatch.setenv(ENABLE_VARIABLE, "1")
    monkeypatch.setenv(FAULTS_VARIABLE, faults)
    async with running_daemon(state_dir) as handle:
        yield handle


async def test_a_crashed_container_actor_is_restarted_and_its_container_stays_controllable(
    state_dir: Path, bundle_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = unique_id("crash")
    async with daemon_with_faults(state_dir, monkeypatch, f"container={cid}:Stats:1") as handle:
        async with Client.connect(handle.address, timeout=60) as client, client.subscribe() as events:
            pid = await client.create_container(cid, str(bundle_factory("cat")))
            await client.write_input(cid, b"before\n")
            await output_until(client, cid, pid, b"before\n")

            with pytest.raises(RequestFailed) as failure:
                await client.stats(cid)
            assert failure.value.code == ErrorCode.INTERNAL
            restart = await next_event(events, EventType.ACTOR_RESTART, cid)
            assert restart.pid == pid and restart.reason and "InjectedFault" in restart.reason

            # State: still listed, same init.
            [info] = [c for c in await client.containers() if c.id == cid]
            assert (info.pid, info.status) == (pid, "running")
            # Its stdio survived the crash: the init still reads what we write, and its output
            # goes on in the same log.
            await client.write_input(cid, b"after\n")
            assert await output_until(client, cid, pid, b"after\n") == b"before\nafter\n"
            # Exec and stats are served by the new actor.
            exec_pid = await client.add_process(cid, ["echo", "exec'd"])
            assert await output_until(client, cid, exec_pid, b"exec'd\n") == b"exec'd\n"
            assert (await client.stats(cid)).id == cid
            # Kill: the exit is reported with the status the reaper saw.
            await client.signal(cid, signal.SIGKILL)
            exit_event = await next_event(events, EventType.EXIT, cid)
            while exit_event.pid != pid:
                exit_event = await next_event(events, EventType.EXIT, cid)
            assert exit_event.status == 128 + signal.SIGKILL
            assert cid not in [c.id for c in await client.containers()]
            counters = {counter.name: counter.count for counter in (await client.metrics()).counters}
            assert counters["actor-restarts"] == 1
        assert handle.runc_ids() == []
        log = handle.log_text()
        assert log.count(f"container actor {cid} crashed; restarting it") == 1
        assert "InjectedFault" in log and "Traceback" in log


async def test_past_the_restart_limit_the_reaper_restarts_the_server_which_adopts_the_container(
    state_dir: Path, sleep_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = unique_id("loop")
    async with daemon_with_faults(state_dir, monkeypatch, f"container={cid}:Stats") as handle:
        async with Client.connect(handle.address, timeout=60) as client:
            pid = await client.create_container(cid, str(sleep_bundle))
            first_server = server_pid(handle)
            for _ in range(RESTARTS_PER_MINUTE):
                with pytest.raises(RequestFailed):
                    await client.stats(cid)
            with pytest.raises(Exception):  # noqa: B017 - an error reply, or the server already gone
                await client.stats(cid)
        await wait_for_new_server(handle, first_server)
        assert f"exiting with status {EXIT_RESTART_LIMIT}" in handle.log_text()
        async with Client.connect(handle.address, timeout=60) as client, client.subscribe() as events:
            [info] = [c for c in await client.containers() if c.id == cid]
            assert info.pid == pid
            await client.signal(cid, signal.SIGKILL)
            exit_event = await next_event(events, EventType.EXIT, cid)
            assert (exit_event.pid, exit_event.status) == (pid, 128 + signal.SIGKILL)


async def test_the_events_and_metrics_actors_are_restarted_and_their_restarts_published(
    state_dir: Path, sleep_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = "events:Events:1,metrics:Metrics:1"
    async with (
        daemon_with_faults(state_dir, monkeypatch, faults) as handle,
        Client.connect(handle.address, timeout=60) as client,
    ):
        cid = unique_id("ev")
        await client.create_container(cid, str(sleep_bundle))
        with pytest.raises(RequestFailed) as failure:
            await client.events_page(1)
        assert failure.value.code == ErrorCode.INTERNAL
        with pytest.raises(RequestFailed) as failure:
            await client.metrics()
        assert failure.value.code == ErrorCode.INTERNAL
        # Both answer again; the restarts are journalled and counted (each told once the
        # supervisor has restarted the actor, just after the failed ask).
        with trio.fail_after(30):
            while True:
                counters = {c.name: c.count for c in (await client.metrics()).counters}
                page = await client.events_page(1)
                if counters["actor-restarts"] == 2 and len(page.events) == 3:
                    break
                await trio.sleep(0.05)
        assert [(event.seq, event.type, event.id) for event in page.events] == [
            (1, EventType.START_CONTAINER, cid),
            (2, EventType.ACTOR_RESTART, ""),
            (3, EventType.ACTOR_RESTART, ""),
        ]
        reasons = [event.reason or "" for event in page.events[1:]]
        assert "the events actor crashed (InjectedFault" in reasons[0]
        assert "the metrics actor crashed (InjectedFault" in reasons[1]
        assert counters["containers"] == 1  # a running total that survived the metrics actor's restart
        await client.signal(cid, signal.SIGKILL)
