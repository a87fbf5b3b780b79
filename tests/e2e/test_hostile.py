"""Hostile clients against the live daemon: generated garbage, socket noise, clients that never read."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pynng
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.daemon import DaemonHandle, remove_containers

from containerd_actors.client import Client
from containerd_actors.protocol import REQUEST_TYPES, ErrorReply, decode_reply

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
_tags = st.sampled_from([cls.__name__ for cls in REQUEST_TYPES]) | _json
_fields = st.sampled_from(
    ["request_id", "id", "bundle", "pid", "signal", "name", "status", "checkpoint", "x"]
)
_request_like = st.builds(
    lambda tag, extra: json.dumps({"type": tag, **extra}).encode(),
    _tags,
    st.dictionaries(_fields, _json, max_size=6),
)
_payloads = _request_like | st.binary(max_size=300) | _json.map(lambda value: json.dumps(value).encode())


@pytest.fixture(scope="module")
def fuzzed_daemon() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """One daemon for all generated cases: hypothesis runs examples in a loop, a daemon each is slow."""
    top = Path(tempfile.mkdtemp(prefix="ca-fuzz-", dir="/tmp"))
    state = top / "state"
    notify_path = top / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(30)
        address = f"ipc://{state}/sock/containerd.sock"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "containerd_actors.daemon.main",
                "--state-dir",
                str(state),
                "--listen",
                address,
            ],
            env=dict(os.environ, NOTIFY_SOCKET=str(notify_path)),
            stdout=subprocess.DEVNULL,
            stderr=open(top / "log", "wb"),  # noqa: SIM115 (closed with the process)
        )
        while b"READY=1" not in notify.recv(4096):
            pass
    try:
        yield address, process
    finally:
        process.terminate()
        process.wait(timeout=30)
        remove_containers(state / "runc")
        shutil.rmtree(top, ignore_errors=True)


FUZZ_CASES = [0]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_payloads)
def test_generated_messages_get_answers_and_the_daemon_stays_up(
    fuzzed_daemon: tuple[str, subprocess.Popen[bytes]], payload: bytes
) -> None:
    """Every generated message is answered (an error for nonsense), and the daemon never dies.

    No container is ever started: generated bundles never exist.
    """
    address, process = fuzzed_daemon
    with pynng.Req0(resend_time=0, recv_timeout=10_000, dial=address) as sock:
        sock.send(payload)
        reply = decode_reply(sock.recv())
    FUZZ_CASES[0] += 1
    if isinstance(reply, ErrorReply):
        assert reply.code and reply.message
    assert process.poll() is None


def test_the_fuzzed_daemon_is_still_healthy(fuzzed_daemon: tuple[str, subprocess.Popen[bytes]]) -> None:
    address, process = fuzzed_daemon
    assert FUZZ_CASES[0] >= 100, "the generated cases should have run first"
    with pynng.Req0(resend_time=0, recv_timeout=10_000, dial=address) as sock:
        sock.send(b'{"type":"Ping","request_id":"after-fuzz"}')
        assert decode_reply(sock.recv()).request_id == "after-fuzz"
    assert process.poll() is None


async def test_raw_socket_noise_is_dropped(daemon: DaemonHandle, client: Client) -> None:
    """Bytes that are not even the nng handshake: the pipe is closed, nothing else happens."""
    path = daemon.address.removeprefix("ipc://")
    for noise in (b"\x00" * 8, b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 64):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(path)
            raw.sendall(noise)
            raw.settimeout(5)
            try:
                while raw.recv(4096):
                    pass
            except (TimeoutError, ConnectionResetError):
                pass
    assert (await client.ping()).version


async def test_a_client_that_never_reads_replies_cannot_stall_others(
    daemon: DaemonHandle, client: Client
) -> None:
    rude = pynng.Req0(resend_time=0)
    rude.dial(daemon.address, block=True)
    contexts = [rude.new_context() for _ in range(400)]
    try:
        for context in contexts:
            await context.asend(b'{"type":"State","request_id":"rude"}')  # and never receive
        latencies = []
        for _ in range(50):
            started = trio.current_time()
            with trio.fail_after(10):
                await client.ping()
            latencies.append(trio.current_time() - started)
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.5, latencies
    finally:
        for context in contexts:
            context.close()
        rude.close()
    assert (await client.ping()).version
