"""Observe and control through the real daemon: stats, OOM events, pause/resume, telemetry."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from support.bundles import make_bundle
from support.daemon import DaemonHandle, start_daemon, stop_daemon, unique_id

from containerd_actors.client import Client, RequestFailed
from containerd_actors.daemon.metrics.http import parse_host_port
from containerd_actors.protocol import ErrorCode, EventType

COUNTER = ["sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 0.02; done"]
LIMIT_16_MIB = 16 << 20


def has_swap() -> bool:
    lines = Path("/proc/swaps").read_text().splitlines()
    return len(lines) > 1


async def test_busy_container_cpu_rises_and_memory_is_within_its_limit(
    client: Client, bundles_dir: Path
) -> None:
    bundle = make_bundle(bundles_dir / "busy", ["sh", "-c", "while :; do :; done"], memory_limit=64 << 20)
    cid = unique_id("busy")
    await client.create_container(cid, str(bundle))
    first = await client.stats(cid)
    # user/kernel come from cpuacct.stat in 10 ms ticks, so wait for more CPU than a few ticks:
    # on a loaded host the busy loop may get little of it.
    with trio.fail_after(30):
        while (
            second := await client.stats(cid)
        ).cgroup.cpu.usage.total <= first.cgroup.cpu.usage.total + 50e6:
            await trio.sleep(0.1)
    assert second.timestamp > first.timestamp
    assert second.cgroup.cpu.usage.user + second.cgroup.cpu.usage.kernel > 0
    memory = second.cgroup.memory
    assert memory is not None
    assert memory.usage.limit == 64 << 20
    assert 0 < memory.usage.usage <= memory.usage.limit
    assert second.cgroup.pids is not None and second.cgroup.pids.current >= 1
    await client.signal(cid, 9)


async def test_stats_of_unknown_container(client: Client) -> None:
    with pytest.raises(RequestFailed) as failure:
        await client.stats("nobody")
    assert failure.value.code == ErrorCode.NOT_FOUND


@pytest.mark.skipif(has_swap(), reason="host has swap: a memory limit alone does not force an OOM kill")
async def test_oom_kill_is_announced_before_the_exit(state_dir: Path, bundles_dir: Path) -> None:
    hog = make_bundle(bundles_dir / "hog", ["sh", "-c", "tail /dev/zero"], memory_limit=LIMIT_16_MIB)
    handle = await start_daemon(state_dir, "--oom-notify")
    try:
        async with Client.connect(handle.address) as client, client.subscribe() as events:
            cid = unique_id("oom")
            pid = await client.create_container(cid, str(hog))
            seen = []
            with trio.fail_after(30):
                async for event in events:
                    if event.id == cid:
                        seen.append(event)
                    if event.type == EventType.EXIT and event.id == cid:
                        break
    finally:
        await stop_daemon(handle)
    assert [(e.type, e.pid) for e in seen] == [
        (EventType.START_CONTAINER, pid),
        (EventType.OOM, pid),
        (EventType.EXIT, pid),
    ]
    assert seen[-1].status == 137
    assert [e.seq for e in seen] == list(range(seen[0].seq, seen[0].seq + 3))


async def test_pause_freezes_and_resume_thaws(client: Client, daemon: DaemonHandle, bundle_factory) -> None:
    bundle = bundle_factory(*COUNTER)
    cid = unique_id("freeze")
    log = daemon.state_dir / "logs" / cid / "stdout.log"

    def count() -> int:
        try:
            return len(log.read_bytes().split())
        except FileNotFoundError:
            return 0  # made with the container's first byte of output

    async def grows_beyond(value: int) -> int:
        with trio.fail_after(10):
            while (now := count()) <= value:
                await trio.sleep(0.02)  # the container's own output is the state under test
        return now

    pid = await client.create_container(cid, str(bundle))
    await grows_beyond(3)
    async with client.subscribe() as events:
        await client.pause(cid)
        frozen_at = count()
        [info] = await client.containers()
        assert info.status == "paused"
        # Frozen: a quarter second (about 12 counter periods) passes without a single new line.
        await trio.sleep(0.25)
        assert count() == frozen_at
        await client.pause(cid)  # pausing a paused container is a no-op
        await client.resume(cid)
        await grows_beyond(frozen_at)
        [info] = await client.containers()
        assert info.status == "running"
        kinds = []
        with trio.fail_after(10):
            async for event in events:
                kinds.append((event.type, event.id, event.pid))
                if event.type == EventType.RESUME:
                    break
    assert kinds == [(EventType.PAUSE, cid, pid), (EventType.RESUME, cid, pid)]
    await client.signal(cid, 9)


async def test_metrics_log_lines_and_prometheus(state_dir: Path, sleep_bundle: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handle = await start_daemon(
        state_dir, "--metrics-interval", "300ms", "--metrics-address", f"127.0.0.1:{port}"
    )
    try:
        async with Client.connect(handle.address) as client:
            ids = [unique_id("m") for _ in range(3)]
            for cid in ids:
                await client.create_container(cid, str(sleep_bundle))
            snapshot = await client.metrics()
            start_timer = next(t for t in snapshot.timers if t.name == "container-start-time")
            assert start_timer.count == 3
            assert 0 < start_timer.min <= start_timer.median <= start_timer.p99 <= start_timer.max
            assert next(c for c in snapshot.counters if c.name == "containers").count == 3

            # The log flush shows the original's Telemetry block with the same count.
            # A block is logged line by line: wait for its last line ("mean rate:"), not only its
            # count, or a read in the middle of the flush sees half a block.
            with trio.fail_after(10):
                while not (
                    "count: 3" in (block := timer_block(handle.log_text(), "container-start-time"))
                    and "mean rate:" in block
                ):
                    await trio.sleep(0.05)  # the flush interval is the state under test
            for field in ("min:", "max:", "mean:", "stddev:", "median:", "75%:", "95%:", "99%:", "99.9%:"):
                assert field in block
            assert "1-min rate:" in block and "mean rate:" in block

            # actr metrics --prometheus and the HTTP endpoint parse with prometheus_client's parser.
            actr = await trio.run_process(
                [sys.executable, "-m", "ctl.main", "--address", handle.address, "metrics", "--prometheus"],
                capture_stdout=True,
                check=True,
            )
            scraped = await http_get(port, "/metrics")
            for text in (actr.stdout.decode(), scraped):
                families = {f.name: f for f in text_string_to_metric_families(text)}
                summary = families["containerd_actors_container_start_time_seconds"]
                count = next(s for s in summary.samples if s.name.endswith("_count"))
                assert count.value == 3
                assert any(s.labels.get("quantile") == "0.99" for s in summary.samples)
            for cid in ids:
                await client.signal(cid, 9)
    finally:
        await stop_daemon(handle)


def timer_block(log: str, name: str) -> str:
    """The lines of the last flush of timer ``name``, up to the next metric."""
    lines = [line.split(" ", 3)[-1] for line in log.splitlines() if line.startswith("[containerd-actors]")]
    starts = [i for i, line in enumerate(lines) if line == f"timer {name}"]
    if not starts:
        return ""
    block = []
    for line in lines[starts[-1] + 1 :]:
        if line.startswith(("timer ", "counter ", "gauge ")):
            break
        block.append(line)
    return "\n".join(block)


async def http_get(port: int, path: str) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    return body.decode()


def test_prometheus_address_must_be_host_port() -> None:
    assert parse_host_port("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_host_port(":9100") == ("127.0.0.1", 9100)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_host_port("localhost")
