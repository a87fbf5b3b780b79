"""Bad input gets a clear error reply, leaves no trace, and the daemon keeps serving."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pynng
import pytest
import trio
from support.daemon import DaemonHandle, unique_id

import containerd_actors.protocol as wire
from containerd_actors.client import Client, RequestFailed
from containerd_actors.protocol import ErrorCode, ErrorReply, decode_reply


async def raw_request(address: str, payload: bytes) -> ErrorReply:
    """Send bytes the client library would never produce, and decode the reply."""
    with pynng.Req0(resend_time=0, recv_timeout=10_000) as sock:
        sock.dial(address, block=True)
        await sock.asend(payload)
        reply = decode_reply(await sock.arecv())
    assert isinstance(reply, ErrorReply), reply
    return reply


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    [
        (b"{not json", ErrorCode.MALFORMED, "not valid JSON"),
        (b"[1, 2]", ErrorCode.MALFORMED, "JSON object"),
        (b"\xff\xfe\x00garbage", ErrorCode.MALFORMED, "not valid JSON"),
        (b"[" * 100_000, ErrorCode.MALFORMED, "not valid JSON"),
        (b'{"request_id": "r1"}', ErrorCode.UNKNOWN_TYPE, "missing"),
        (b'{"type": "Explode", "request_id": "r1"}', ErrorCode.UNKNOWN_TYPE, "Explode"),
        (
            b'{"type": "CreateContainer", "request_id": "r1", "id": "x"}',
            ErrorCode.INVALID_REQUEST,
            "$.bundle",
        ),
        (
            b'{"type": "CreateContainer", "request_id": "r1", "id": "x", "bundle": "/b", "color": "red"}',
            ErrorCode.INVALID_REQUEST,
            "color",
        ),
        (
            b'{"type": "Signal", "request_id": "r1", "id": "x", "signal": "loud"}',
            ErrorCode.INVALID_REQUEST,
            "signal",
        ),
        (b'{"type": "Signal", "request_id": "r1", "id": "x", "signal": 99}', ErrorCode.INVALID_REQUEST, "64"),
        (b'{"type": "State"}', ErrorCode.INVALID_REQUEST, "request_id"),
    ],
)
async def test_malformed_requests_get_error_replies(daemon: DaemonHandle, payload, code, words) -> None:
    reply = await raw_request(daemon.address, payload)
    assert reply.code == code
    assert words in reply.message
    if b'"request_id": "r1"' in payload:
        assert reply.request_id == "r1"
    # ...and the daemon still answers a good request afterwards.
    async with Client.connect(daemon.address) as client:
        assert (await client.ping()).daemon_id


@pytest.mark.parametrize(
    "bad_id", ["../escape", "a/b", "", ".hidden", "-dash", "x" * 129, "sp ace", "nul\x00"]
)
async def test_ids_with_path_tricks_are_refused(
    client: Client, daemon: DaemonHandle, sleep_bundle, bad_id
) -> None:
    request = {"type": "CreateContainer", "request_id": "r1", "id": bad_id, "bundle": str(sleep_bundle)}
    reply = await raw_request(daemon.address, json.dumps(request).encode())
    assert reply.code == ErrorCode.INVALID_REQUEST
    assert "must match" in reply.message
    # The client library refuses the same id before sending anything.
    with pytest.raises(ValueError, match="must match"):
        await client.create_container(bad_id, str(sleep_bundle))
    assert os.listdir(daemon.state_dir / "containers") == []
    assert daemon.runc_ids() == []


async def test_duplicate_id_is_refused(client: Client, sleep_bundle) -> None:
    cid = unique_id("dup")
    pid = await client.create_container(cid, str(sleep_bundle))
    with pytest.raises(RequestFailed) as failure:
        await client.create_container(cid, str(sleep_bundle))
    assert failure.value.code == ErrorCode.ALREADY_EXISTS
    assert cid in failure.value.message
    [info] = await client.containers()
    assert info.pid == pid  # the original is untouched
    await client.signal(cid, signal.SIGKILL)


async def test_concurrent_duplicate_starts_yield_one_container(
    client: Client, daemon: DaemonHandle, sleep_bundle
):
    cid = unique_id("race")
    outcomes: list[object] = []

    async def attempt() -> None:
        try:
            outcomes.append(await client.create_container(cid, str(sleep_bundle)))
        except RequestFailed as failure:
            outcomes.append(failure.code)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(attempt)
    assert sorted(map(str, outcomes)).count(ErrorCode.ALREADY_EXISTS) == 4
    assert daemon.runc_ids() == [cid]
    await client.signal(cid, signal.SIGKILL)


async def test_bad_bundles_are_refused_without_trace(client: Client, daemon: DaemonHandle, tmp_path: Path):
    no_config = tmp_path / "empty"
    no_config.mkdir()
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    broken_json = tmp_path / "broken"
    broken_json.mkdir()
    (broken_json / "config.json").write_text("{ nope")
    cases = {
        "relative/bundle": "absolute",
        str(tmp_path / "missing"): "not a directory",
        str(not_a_dir): "not a directory",
        str(no_config): "config.json",
        str(broken_json): "config.json",
    }
    for bundle, words in cases.items():
        with pytest.raises(RequestFailed) as failure:
            await client.create_container(unique_id("bad"), bundle)
        assert failure.value.code == ErrorCode.INVALID_BUNDLE, bundle
        assert words in failure.value.message
    assert os.listdir(daemon.state_dir / "containers") == []
    assert daemon.runc_ids() == []


async def test_runc_failure_carries_its_stderr_and_leaves_no_trace(
    client: Client, daemon: DaemonHandle, bundle_factory
) -> None:
    missing_binary = bundle_factory("/bin/definitely-not-here")
    cid = unique_id("fail")
    with pytest.raises(RequestFailed) as failure:
        await client.create_container(cid, str(missing_binary))
    assert failure.value.code == ErrorCode.RUNTIME_FAILED
    assert "definitely-not-here" in failure.value.message
    assert "no such file" in failure.value.message.lower()
    assert os.listdir(daemon.state_dir / "containers") == []
    assert daemon.runc_ids() == []
    # The same id is free again.
    with pytest.raises(RequestFailed) as again:
        await client.create_container(cid, str(missing_binary))
    assert again.value.code == ErrorCode.RUNTIME_FAILED


async def test_bundle_config_runc_rejects(client: Client, daemon: DaemonHandle, bundle_factory) -> None:
    bundle = bundle_factory("true")
    config = json.loads((bundle / "config.json").read_text())
    config["ociVersion"] = 42  # a type runc cannot parse
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(RequestFailed) as failure:
        await client.create_container(unique_id("cfg"), str(bundle))
    assert failure.value.code == ErrorCode.RUNTIME_FAILED
    assert "json" in failure.value.message.lower()
    assert daemon.runc_ids() == []


async def test_signal_unknown_container(client: Client) -> None:
    with pytest.raises(RequestFailed) as failure:
        await client.signal("nobody-home", signal.SIGTERM)
    assert failure.value.code == ErrorCode.NOT_FOUND
    assert "nobody-home" in failure.value.message


async def test_json_beyond_its_limit_is_refused_though_a_frame_that_big_is_taken(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    """From revision 6 the socket takes frames of up to 4 MiB; JSON stays at 1 MiB, refused in words."""
    big_json = b'{"type":"Ping","request_id":"' + b"x" * (2 << 20) + b'"}'
    refused = await raw_request(daemon.address, big_json)
    assert refused.code == wire.ErrorCode.MALFORMED and "at most" in refused.message

    cid = unique_id("big")
    await client.create_container(cid, str(sleep_bundle))
    pid = await client.add_process(cid, ["sh", "-c", "cat > /dev/null"])
    data = os.urandom(wire.MAX_FRAME_BYTES - (64 << 10))
    frame = wire.encode_request(wire.WriteInput("w-1", id=cid, pid=pid, data=data), framed=True)
    with pynng.Req0(resend_time=0, recv_timeout=10_000) as sock:
        sock.dial(daemon.address, block=True)
        await sock.asend(frame)
        reply = decode_reply(await sock.arecv())
    assert isinstance(reply, wire.WriteInputReply) and reply.written == len(data)


async def test_oversized_message_is_dropped_and_daemon_serves_on(daemon: DaemonHandle) -> None:
    huge = b'{"type":"Ping","request_id":"' + b"x" * wire.MAX_FRAME_BYTES + b'"}'
    with pynng.Req0(resend_time=0, recv_timeout=1000) as sock:
        sock.dial(daemon.address, block=True)
        await sock.asend(huge)
        with pytest.raises(pynng.NNGException):
            await sock.arecv()  # nng closes the pipe that sent it; no reply comes
    async with Client.connect(daemon.address) as client:
        assert (await client.ping()).version
