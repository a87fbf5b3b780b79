"""End-to-end lifecycle through the real daemon process, real runc and real nng sockets."""

from __future__ import annotations

import os
import signal

import trio
from support.daemon import DaemonHandle, unique_id

from containerd_actors.client import Client, RequestFailed
from containerd_actors.protocol import ErrorCode, Event, EventType


async def collect_until(subscription, predicate, limit: int = 10_000) -> list[Event]:
    """Read events until ``predicate(events_so_far)`` holds; the caller sets the deadline."""
    seen: list[Event] = []
    async for event in subscription:
        seen.append(event)
        if predicate(seen) or len(seen) >= limit:
            return seen
    return seen


async def test_twenty_concurrent_starts_list_and_kill(
    client: Client, daemon: DaemonHandle, sleep_bundle
) -> None:
    ids = [unique_id(f"many{n}") for n in range(20)]
    pids: dict[str, int] = {}

    async def start(container_id: str) -> None:
        pids[container_id] = await client.create_container(container_id, str(sleep_bundle))

    async with client.subscribe() as events:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for container_id in ids:
                    nursery.start_soon(start, container_id)

        listed = {c.id: c for c in await client.containers()}
        assert set(listed) == set(ids)
        for container_id in ids:
            info = listed[container_id]
            assert info.status == "running"
            assert info.pid == pids[container_id]
            assert info.bundle == str(sleep_bundle)
            assert info.processes[0].pid == pids[container_id]
            assert info.processes[0].args == ["sleep", "1000000"]
            os.kill(info.pid, 0)  # the pid is a live process on this host
        assert set(daemon.runc_ids()) == set(ids)

        for container_id in ids:
            await client.signal(container_id, signal.SIGKILL)
        with trio.fail_after(60):
            seen = await collect_until(events, lambda evs: sum(e.type == EventType.EXIT for e in evs) == 20)

    exits = {e.id: e for e in seen if e.type == EventType.EXIT}
    assert set(exits) == set(ids)
    assert all(e.status == 137 and e.pid == pids[e.id] for e in exits.values())
    assert await client.containers() == []
    assert daemon.runc_ids() == []
    assert os.listdir(daemon.state_dir / "containers") == []


async def test_exit_statuses_and_event_order(client: Client, bundle_factory) -> None:
    exit3 = bundle_factory("sh", "-c", "exit 3")
    cid = unique_id("exit3")
    async with client.subscribe() as events:
        pid = await client.create_container(cid, str(exit3))
        with trio.fail_after(30):
            seen = await collect_until(events, lambda evs: evs[-1].type == EventType.EXIT)
    assert [(e.type, e.id, e.pid) for e in seen] == [
        (EventType.START_CONTAINER, cid, pid),
        (EventType.EXIT, cid, pid),
    ]
    assert seen[-1].status == 3
    assert seen[1].seq == seen[0].seq + 1
    assert seen[0].timestamp <= seen[1].timestamp


async def test_events_have_consecutive_seq_across_many_containers(client: Client, bundle_factory) -> None:
    quick = bundle_factory("true")
    ids = [unique_id(f"seq{n}") for n in range(10)]
    async with client.subscribe() as events:
        async with trio.open_nursery() as nursery:
            for container_id in ids:
                nursery.start_soon(client.create_container, container_id, str(quick))
        with trio.fail_after(60):
            seen = await collect_until(
                events, lambda evs: sum(e.type == EventType.EXIT for e in evs) == len(ids)
            )
    seqs = [e.seq for e in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    for container_id in ids:
        kinds = [e.type for e in seen if e.id == container_id]
        assert kinds == [EventType.START_CONTAINER, EventType.EXIT]
        assert next(e.status for e in seen if e.id == container_id and e.type == EventType.EXIT) == 0


async def test_signal_by_name_number_and_to_unknown_pid(client: Client, sleep_bundle) -> None:
    cid = unique_id("sig")
    pid = await client.create_container(cid, str(sleep_bundle))
    try:
        await client.signal(cid, signal.SIGKILL, pid=pid + 100_000)
    except RequestFailed as failure:
        assert failure.code == ErrorCode.NOT_FOUND
        assert str(pid + 100_000) in failure.message
    else:
        raise AssertionError("signalling a pid outside the container must fail")
    async with client.subscribe() as events:
        await client.signal(cid, signal.SIGKILL, pid=pid)
        with trio.fail_after(30):
            seen = await collect_until(events, lambda evs: evs[-1].type == EventType.EXIT)
    assert seen[-1].status == 137


async def test_container_id_reusable_after_exit(client: Client, bundle_factory) -> None:
    quick = bundle_factory("true")
    cid = unique_id("reuse")
    for _ in range(2):
        async with client.subscribe() as events:
            await client.create_container(cid, str(quick))
            with trio.fail_after(30):
                await collect_until(events, lambda evs: evs[-1].type == EventType.EXIT and evs[-1].id == cid)


async def test_stdout_and_stderr_drained_to_state_dir(
    client: Client, daemon: DaemonHandle, bundle_factory
) -> None:
    talker = bundle_factory("sh", "-c", "echo to-out; echo to-err >&2; sleep 1000000")
    cid = unique_id("talk")
    await client.create_container(cid, str(talker))
    directory = daemon.state_dir / "logs" / cid

    def logged(name: str) -> bytes:
        # The start is answered before the drain tasks open the logs, so a log may not exist yet.
        try:
            return (directory / name).read_bytes()
        except FileNotFoundError:
            return b""

    with trio.fail_after(10):
        while b"to-err" not in logged("stderr.log") or b"to-out" not in logged("stdout.log"):
            await trio.sleep(0.01)  # the log file is the state under test; nothing announces a write
    assert (directory / "stdout.log").read_bytes() == b"to-out\n"
    await client.signal(cid, signal.SIGKILL)
