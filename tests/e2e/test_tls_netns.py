"""The API over mutual TLS from another host: a client in a network namespace of its own, joined to
the daemon's by a veth pair, while the daemon also serves 127.0.0.1 and its local socket.

The namespace, the pair and their 198.18.0.0/15 addresses are made by ``support.netns`` for this
module alone and deleted by name at its end; nothing else on the machine's network is touched.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support import netns
from support.certs import free_port_run, make_ca, sign
from support.daemon import DaemonHandle, start_daemon, stop_daemon, unique_id

from containerd_actors.client import Client, TlsFiles
from containerd_actors.protocol import EventType

REMOTE_CLIENT = Path(__file__).resolve().parent.parent / "support" / "remote_client.py"
CLIENT_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def veth() -> Iterator[netns.VethNetns]:
    try:
        made = netns.create()
    except netns.NetnsRefused as refused:
        pytest.skip(f"cannot make a network namespace here: {refused}")
    try:
        yield made
    finally:
        netns.remove(made)
        assert netns.leftovers(made) == [], "the namespace or the veth pair outlived the tests"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory, veth: netns.VethNetns) -> dict[str, TlsFiles]:
    directory = tmp_path_factory.mktemp("netns-certs")
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    return {
        "server": sign(directory, "ca", "server", "localhost", ips=(veth.host_address,)),
        "admin": sign(directory, "ca", "admin", "admin"),
        "stranger": sign(directory, "other-ca", "stranger", "admin"),
    }


def run_remote(veth: netns.VethNetns, *args: str) -> dict:
    """Run ``support/remote_client.py`` inside the namespace; its one line of JSON."""
    done = subprocess.run(
        veth.exec_argv(sys.executable, str(REMOTE_CLIENT), *args),
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
    )
    assert done.returncode == 0, f"remote client failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


async def run_remote_async(veth: netns.VethNetns, *args: str) -> dict:
    return await trio.to_thread.run_sync(lambda: run_remote(veth, *args))


async def start_on_both(
    state_dir: Path, veth: netns.VethNetns, certs: dict[str, TlsFiles]
) -> tuple[DaemonHandle, str, str]:
    loopback_port, veth_port = free_port_run(3), free_port_run(3)
    files = certs["server"]
    loopback = f"tls+tcp://127.0.0.1:{loopback_port}"
    remote = f"tls+tcp://{veth.host_address}:{veth_port}"
    handle = await start_daemon(
        state_dir,
        "--listen", loopback, "--listen", remote,
        "--tls-cert", str(files.cert), "--tls-key", str(files.key), "--tls-ca", str(files.ca),
    )  # fmt: skip
    return handle, loopback, remote


async def test_a_client_in_another_namespace_starts_lists_execs_kills_and_subscribes(
    state_dir: Path, sleep_bundle: Path, veth: netns.VethNetns, certs: dict[str, TlsFiles]
) -> None:
    handle, loopback, remote = await start_on_both(state_dir, veth, certs)
    admin = certs["admin"]
    cid = unique_id("netns")
    try:
        async with Client.connect(handle.address) as local, local.subscribe() as local_events:
            seen = await run_remote_async(
                veth, "lifecycle", remote, str(admin.cert), str(admin.key), str(admin.ca),
                str(sleep_bundle), cid,
            )  # fmt: skip
            pid, exec_pid = seen["pid"], seen["exec_pid"]
            assert seen["listed"] == [cid] and seen["listed_after"] == []
            # The streams announced beside the listener it dialed, on the veth address it reaches.
            port = int(remote.rpartition(":")[2])
            assert seen["events_address"] == f"tls+tcp://{veth.host_address}:{port + 1}"
            assert [(e["type"], e["pid"], e["status"], e["by"]) for e in seen["events"]] == [
                (EventType.START_CONTAINER, pid, None, "admin"),
                (EventType.START_PROCESS, exec_pid, None, "admin"),
                (EventType.EXIT, exec_pid, 0, None),  # ended by itself
                (EventType.EXIT, pid, 128 + signal.SIGKILL, "admin"),
            ]
            # A local subscriber saw the same, and the loopback listener serves meanwhile.
            with trio.fail_after(20):
                async for event in local_events:
                    if event.type == EventType.EXIT and event.id == cid and event.pid == pid:
                        assert event.by == "admin"
                        break
            async with Client.connect(loopback, timeout=20, tls=admin) as near:
                assert await near.containers() == []
                loopback_port = int(loopback.rpartition(":")[2])
                assert (await near.event_streams())[0] == f"tls+tcp://127.0.0.1:{loopback_port + 1}"
        assert f"CreateContainer for {cid} by client 'admin'" in handle.log_text()
    finally:
        await stop_daemon(handle)


async def test_clients_without_a_good_certificate_are_refused_at_the_handshake(
    state_dir: Path, veth: netns.VethNetns, certs: dict[str, TlsFiles]
) -> None:
    handle, loopback, remote = await start_on_both(state_dir, veth, certs)
    stranger = certs["stranger"]
    try:
        other_ca = await run_remote_async(
            veth, "refused", remote, str(stranger.cert), str(stranger.key), str(certs["server"].ca)
        )
        assert other_ca["refused"], other_ca
        assert "TLS handshake failed" in other_ca["error"]
        no_cert = await run_remote_async(veth, "no-cert", remote, str(certs["server"].ca))
        assert no_cert["refused"], no_cert
        assert no_cert["error"].startswith("dial: Cryptographic error"), no_cert  # the handshake itself
        # Nobody got in, and everybody else is still served.
        assert "by client" not in handle.log_text()
        async with Client.connect(handle.address) as local:
            await local.ping()
        admin = certs["admin"]
        good = await run_remote_async(veth, "refused", remote, str(admin.cert), str(admin.key), str(admin.ca))
        assert good == {"refused": False, "error": None}
        async with Client.connect(loopback, timeout=20, tls=admin) as near:
            await near.ping()
    finally:
        await stop_daemon(handle)
