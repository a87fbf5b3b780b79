"""The wire protocol works with a client we did not write: nngcat, the C nng tool from Debian's nng-utils."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import trio
from support.daemon import DaemonHandle, unique_id

from containerd_actors.client import Client


def parse_quoted_lines(output: bytes) -> list[bytes]:
    """nngcat --quoted prints each message as a C-style quoted string on its own line."""
    messages = []
    for line in output.decode().splitlines():
        line = line.strip()
        if line.startswith('"') and line.endswith('"'):
            messages.append(line[1:-1].encode().decode("unicode_escape").encode("latin-1"))
    return messages


async def test_nngcat_events_content(client: Client, daemon: DaemonHandle, bundle_factory) -> None:
    quick = bundle_factory("sh", "-c", "exit 7")
    argv = ["nngcat", "--sub", "--dial", daemon.events_address, "--subscribe", "/containers/exit", "--quoted"]
    argv += ["--count", "1", "--recv-timeout", "30"]
    result: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def run_subscriber() -> None:
        result["sub"] = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_subscriber)
        with trio.fail_after(10):
            while (await client.ping()).events_subscribers < 1:
                await trio.sleep(0.01)
        cid = unique_id("nngcat")
        pid = await client.create_container(cid, str(quick))
    completed = result["sub"]
    assert completed.returncode == 0, completed.stderr
    [frame] = parse_quoted_lines(completed.stdout)
    topic, _, payload = frame.partition(b" ")
    assert topic == b"/containers/exit"  # the subscription filtered out start-container
    event = json.loads(payload)
    assert event["type"] == "exit"
    assert event["id"] == cid
    assert event["pid"] == pid
    assert event["status"] == 7
    assert isinstance(event["seq"], int) and event["seq"] >= 2


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ('{"type":"Ping"', "malformed"),
        ('{"type":"Launch","request_id":"c1"}', "unknown_type"),
        ('{"type":"Signal","request_id":"c1","id":"x"}', "not_found"),
    ],
)
async def test_nngcat_requester_gets_error_replies(daemon: DaemonHandle, data: str, code: str) -> None:
    argv = ["nngcat", "--req", "--dial", daemon.address, "--data", data, "--quoted"]
    with trio.fail_after(30):
        completed = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    assert completed.returncode == 0, completed.stderr
    [reply_bytes] = parse_quoted_lines(completed.stdout)
    reply = json.loads(reply_bytes)
    assert reply["type"] == "ErrorReply"
    assert reply["code"] == code
    assert reply["message"]


async def test_nngcat_can_start_and_kill_a_container(daemon: DaemonHandle, sleep_bundle) -> None:
    cid = unique_id("c-from-nngcat")
    start = {"type": "CreateContainer", "request_id": "n1", "id": cid, "bundle": str(sleep_bundle)}
    argv = ["nngcat", "--req", "--dial", daemon.address, "--data", json.dumps(start), "--quoted"]
    with trio.fail_after(30):
        completed = await trio.run_process(argv, capture_stdout=True, check=False)
    [reply_bytes] = parse_quoted_lines(completed.stdout)
    reply = json.loads(reply_bytes)
    assert reply["type"] == "CreateContainerReply", reply
    assert reply["request_id"] == "n1"
    assert reply["pid"] > 1
    kill = {"type": "Signal", "request_id": "n2", "id": cid, "signal": int(signal.SIGKILL)}
    argv = ["nngcat", "--req", "--dial", daemon.address, "--data", json.dumps(kill), "--quoted"]
    with trio.fail_after(30):
        completed = await trio.run_process(argv, capture_stdout=True, check=False)
    [reply_bytes] = parse_quoted_lines(completed.stdout)
    assert json.loads(reply_bytes) == {"type": "SignalReply", "request_id": "n2"}
