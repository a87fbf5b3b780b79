"""Hostile clients on the TLS port: a handshake flood held open, plain bytes, a wrong CA, an
expired certificate. None may stop the daemon, and local clients must not wait on them: the
local ipc Ping latency is measured with the flood held open and without it.

The bound is generous (a p99 of 200 ms) because this 2-core test machine is shared; the measured
numbers are printed (``pytest -s``) for the record.

Found here: after every connection that fails its handshake (plain bytes, a certificate it does not
trust), nng's listener rests 100 ms before it accepts the next one (its cool-down for errors it does
not know to be the peer's), so a trusted remote client that connects right after one waits ~100 ms
more. The half-open connections cost nothing of the kind, and local clients never wait on either.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support.certs import free_port_run, make_test_certs
from support.daemon import start_daemon, stop_daemon
from support.restarts import server_pid

from containerd_actors.client import Client, DaemonUnreachable, TlsFiles

FLOOD = 200
PINGS = 300
P99_BOUND_S = 0.200
#: A trusted remote client connects and gets its Ping answered within this, flood or not.
GOOD_CLIENT_BOUND_S = 5.0
#: The first bytes of a TLS 1.2 ClientHello: a record header announcing 512 bytes, and a handshake
#: header announcing more; the rest never comes, so the daemon's handshake waits for it.
PARTIAL_CLIENT_HELLO = bytes.fromhex("16030102000100 01fc 0303".replace(" ", "")) + os.urandom(16)
GARBAGE = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b'{"type":"Ping","request_id":"1"}', os.urandom(600)]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    return make_test_certs(tmp_path_factory.mktemp("hostile-certs"))


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Raw connections a test opens; every one is closed at its end, however it ends."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def ping_latencies(client: Client, count: int = PINGS) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await client.ping()
        latencies.append(time.perf_counter() - started)
    return latencies


def summary(latencies: list[float]) -> tuple[float, float]:
    """The median and the 99th percentile, in seconds."""
    cuts = statistics.quantiles(latencies, n=100)
    return statistics.median(latencies), cuts[98]


async def good_client_round_trip(address: str, files: TlsFiles) -> float:
    """Seconds for a trusted client to connect (the handshake) and get one Ping answered."""
    started = time.perf_counter()
    async with Client.connect(address, timeout=20, tls=files) as good:
        await good.ping()
    return time.perf_counter() - started


def half_open(port: int, partial: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if partial:
        sock.sendall(PARTIAL_CLIENT_HELLO)
    return sock


async def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """Whether the daemon closes (or resets) ``sock`` within ``within_s``, reading what it sends."""
    sock.setblocking(False)
    with trio.move_on_after(within_s):
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                if not sock.recv(4096):
                    return True
            except ConnectionResetError:
                return True
            except BlockingIOError:
                continue
    return False


async def test_a_handshake_flood_garbage_and_bad_certificates_neither_stop_nor_delay_the_daemon(
    state_dir: Path, certs: dict[str, TlsFiles], sockets: list[socket.socket]
) -> None:
    port = free_port_run(3)
    files = certs["server"]
    remote = f"tls+tcp://127.0.0.1:{port}"
    handle = await start_daemon(
        state_dir,
        "--listen", remote,
        "--tls-cert", str(files.cert), "--tls-key", str(files.key), "--tls-ca", str(files.ca),
        debug=False,  # debug logging would weigh on the latencies measured
    )  # fmt: skip
    try:
        pid = server_pid(handle)
        async with Client.connect(handle.address, timeout=20) as local:
            await ping_latencies(local, 50)  # warm
            quiet = await ping_latencies(local)
            fds_before = open_fds(pid)
            quiet_connect_s = await good_client_round_trip(remote, certs["admin"])
            with trio.fail_after(30):
                while open_fds(pid) > fds_before:
                    await trio.sleep(0.05)  # that client's connection is closed on the daemon's side too

            # The flood: half the connections say nothing, half send a partial ClientHello.
            for n in range(FLOOD):
                sockets.append(half_open(port, partial=n % 2 == 1))
            # The daemon has accepted them all (each holds a descriptor there) before measuring.
            with trio.fail_after(30):
                while open_fds(pid) < fds_before + FLOOD:
                    await trio.sleep(0.05)
            flooded = await ping_latencies(local)
            flood_connect_s = await good_client_round_trip(remote, certs["admin"])

            # Meanwhile, plain bytes on the TLS port are dropped: the daemon closes each connection.
            for data in GARBAGE:
                noisy = socket.create_connection(("127.0.0.1", port), timeout=10)
                sockets.append(noisy)
                noisy.sendall(data)
                closed = await closed_by_peer(noisy, 20)
                assert closed, f"the daemon kept a connection that sent {data[:20]!r}"
            # Certificates it does not trust fail at the handshake, flood or not.
            for who in ("stranger", "expired"):
                with pytest.raises(DaemonUnreachable, match="TLS handshake failed"):
                    async with Client.connect(remote, timeout=10, tls=certs[who]) as bad:
                        await bad.ping()
            # A good remote client is still served while the flood is held open.
            good_connect_s = await good_client_round_trip(remote, certs["admin"])

            for sock in sockets:
                sock.close()
            sockets.clear()
            # The flood's descriptors are given back once its connections close.
            with trio.fail_after(30):
                while open_fds(pid) > fds_before + 5:
                    await trio.sleep(0.05)
            after = await ping_latencies(local, 50)

        quiet_p50, quiet_p99 = summary(quiet)
        flood_p50, flood_p99 = summary(flooded)
        print(
            f"\nlocal ipc Ping, {PINGS} sequential: quiet p50 {quiet_p50 * 1e3:.2f} ms p99 "
            f"{quiet_p99 * 1e3:.2f} ms; with {FLOOD} half-open TLS connections p50 {flood_p50 * 1e3:.2f} ms "
            f"p99 {flood_p99 * 1e3:.2f} ms; a good TLS client connected and pinged in "
            f"{quiet_connect_s * 1e3:.1f} ms before the flood, {flood_connect_s * 1e3:.1f} ms during it, "
            f"{good_connect_s * 1e3:.1f} ms after the garbage and the refused certificates"
        )
        assert flood_p99 < P99_BOUND_S, f"local pings waited on the flood: p99 {flood_p99 * 1e3:.1f} ms"
        assert flood_connect_s < GOOD_CLIENT_BOUND_S and good_connect_s < GOOD_CLIENT_BOUND_S
        assert len(after) == 50
        assert handle.process.returncode is None and server_pid(handle) == pid, "the API server restarted"
    finally:
        await stop_daemon(handle)
