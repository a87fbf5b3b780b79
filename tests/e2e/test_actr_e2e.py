"""`actr` as a user runs it: a separate process against the real daemon, real runc and real sockets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import trio
from support.daemon import DaemonHandle, unique_id

from containerd_actors.client import Client

ACTR = [sys.executable, "-m", "ctl.main"]


async def actr(daemon: DaemonHandle, *args: str) -> tuple[int, str, str]:
    with trio.fail_after(60):
        result = await trio.run_process(
            [*ACTR, "--address", daemon.address, *args], capture_stdout=True, capture_stderr=True, check=False
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_start_list_kill_through_actr(daemon: DaemonHandle, client: Client, sleep_bundle) -> None:
    cid = unique_id("actr")
    code, out, err = await actr(daemon, "containers", "start", cid, str(sleep_bundle))
    assert code == 0, err
    pid = int(out.strip())
    assert pid > 1

    code, out, err = await actr(daemon, "containers")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "PATH", "STATUS", "PID1"]
    assert [cid, str(sleep_bundle), "running", str(pid)] in [line.split() for line in lines[1:]]

    code, out, err = await actr(daemon, "--json", "containers", "list")
    assert code == 0, err
    [entry] = json.loads(out)
    assert {k: entry[k] for k in ("id", "bundle", "status", "pid")} == {
        "id": cid,
        "bundle": str(sleep_bundle),
        "status": "running",
        "pid": pid,
    }

    async with client.subscribe() as events:
        code, _, err = await actr(daemon, "containers", "kill", "-s", "KILL", cid)
        assert code == 0, err
        with trio.fail_after(30):
            async for event in events:
                if event.type == "exit" and event.id == cid:
                    assert event.status == 128 + signal.SIGKILL
                    break
    code, out, _ = await actr(daemon, "--json", "containers")
    assert json.loads(out) == []

    # Gone from the list, but not unknown: its logs are still there, and state says so.
    code, _, err = await actr(daemon, "containers", "state", cid)
    assert code == 1
    assert err.strip() == (
        f"actr: not_found: container {cid!r} has exited (status {128 + signal.SIGKILL}); "
        f"its output: actr containers logs {cid}"
    )
    code, _, err = await actr(daemon, "containers", "state", unique_id("never"))
    assert code == 1 and "no such container" in err


async def test_actr_reports_refusals_in_one_line(daemon: DaemonHandle, tmp_path) -> None:
    code, out, err = await actr(daemon, "containers", "kill", "ghost")
    assert code == 1
    assert out == ""
    assert err.strip().splitlines() == ["actr: not_found: no such container: 'ghost'"]
    code, _, err = await actr(daemon, "containers", "start", unique_id("x"), str(tmp_path))
    assert code == 1
    assert "invalid_bundle" in err and "config.json" in err


async def test_actr_events_json_stream(daemon: DaemonHandle, client: Client, bundle_factory) -> None:
    quick = bundle_factory("sh", "-c", "exit 5")
    cid = unique_id("ev")
    lines: list[dict] = []
    events_process = await trio.lowlevel.open_process(
        [*ACTR, "--address", daemon.address, "--json", "events"], stdout=subprocess.PIPE
    )
    try:
        with trio.fail_after(20):
            while (await client.ping()).events_subscribers < 1:
                await trio.sleep(0.01)  # waiting on the daemon's own subscriber count
        pid = await client.create_container(cid, str(quick))
        buffer = b""
        with trio.fail_after(30):
            while not any(line.get("type") == "exit" for line in lines):
                chunk = await events_process.stdout.receive_some()
                assert chunk, "actr events ended early"
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                lines += [json.loads(line) for line in complete if line]
    finally:
        events_process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            code = await events_process.wait()
    assert code == 130
    assert [(e["type"], e["id"], e["pid"]) for e in lines] == [
        ("start-container", cid, pid),
        ("exit", cid, pid),
    ]
    assert lines[1]["status"] == 5
    assert lines[1]["seq"] == lines[0]["seq"] + 1
    assert set(lines[0]) == {"seq", "timestamp", "type", "id", "pid", "status", "reason"}


async def test_stats_table_checkpoints_and_metrics_through_actr(
    daemon: DaemonHandle, client: Client, sleep_bundle, bundle_factory
) -> None:
    busy = bundle_factory("sh", "-c", "while :; do :; done")
    ids = [unique_id("st1"), unique_id("st2")]
    await client.create_container(ids[0], str(sleep_bundle))
    await client.create_container(ids[1], str(busy))

    code, out, err = await actr(daemon, "containers", "stats", "--no-stream")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["CONTAINER", "CPU", "%"]
    rows = {line.split()[0]: line for line in lines[1:] if line.strip()}
    assert set(rows) == set(ids)
    assert "%" in rows[ids[1]] and "/" in rows[ids[1]]

    code, out, err = await actr(daemon, "--json", "containers", "stats", ids[1], "--no-stream")
    assert code == 0, err
    sample = json.loads(out)
    assert sample["id"] == ids[1] and sample["cgroup"]["cpu"]["usage"]["total"] > 0

    code, out, err = await actr(daemon, "containers", "pause", ids[0])
    assert code == 0, err
    code, out, _ = await actr(daemon, "containers")
    assert [ids[0], str(sleep_bundle), "paused"] in [line.split()[:3] for line in out.splitlines()]
    code, _, err = await actr(daemon, "containers", "resume", ids[0])
    assert code == 0, err

    code, out, err = await actr(daemon, "metrics")
    assert code == 0, err
    assert "container-start-time" in out and "events-subscribers" in out
    await client.signal(ids[0], signal.SIGKILL)
    await client.signal(ids[1], signal.SIGKILL)


async def test_checkpoints_through_actr(daemon: DaemonHandle, client: Client, bundle_factory) -> None:
    counter = bundle_factory("sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done")
    cid = unique_id("cp")
    await client.create_container(cid, str(counter))
    code, _, err = await actr(daemon, "checkpoints", "create", "--unix-sockets", cid, "first")
    assert code == 0, err
    code, out, err = await actr(daemon, "checkpoints", cid)  # the original's form: `ctr checkpoints ID`
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == ["NAME", "TCP", "UNIX", "SOCKETS", "SHELL", "CREATED"]
    assert row.split()[:4] == ["first", "false", "true", "false"]
    clone = unique_id("clone")
    code, out, err = await actr(daemon, "containers", "start", "--checkpoint", "first", clone, str(counter))
    assert code == 0, err
    assert int(out) > 1
    code, _, err = await actr(daemon, "checkpoints", "delete", cid, "first")
    assert code == 0, err
    code, out, _ = await actr(daemon, "--json", "checkpoints", "list", cid)
    assert json.loads(out) == []
    for container_id in (cid, clone):
        await client.signal(container_id, signal.SIGKILL)
