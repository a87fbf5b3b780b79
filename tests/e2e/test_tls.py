"""The API over mutual TLS: who may connect, who may change what, and certificates renewed in place."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from support.certs import free_port_run, make_test_certs
from support.daemon import (
    DaemonHandle,
    daemon_argv,
    remove_containers,
    short_temp_dir,
    start_daemon,
    stop_daemon,
    unique_id,
)
from support.restarts import server_pid

from containerd_actors.client import Client, ClientError, DaemonUnreachable, RequestFailed, TlsFiles
from containerd_actors.protocol import ErrorCode, EventType


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    return make_test_certs(tmp_path_factory.mktemp("certs"))


def tls_args(files: TlsFiles, port: int, *extra: str) -> list[str]:
    return [
        "--listen", f"tls+tcp://127.0.0.1:{port}",
        "--tls-cert", str(files.cert), "--tls-key", str(files.key), "--tls-ca", str(files.ca),
        *extra,
    ]  # fmt: skip


@asynccontextmanager
async def tls_daemon(
    state_dir: Path, files: TlsFiles, *extra: str
) -> AsyncIterator[tuple[DaemonHandle, int]]:
    """A daemon serving mutual TLS on a free run of ports; yields it and its API port, and stops it."""
    port = free_port_run(3)
    handle = await start_daemon(state_dir, *tls_args(files, port, *extra))
    try:
        yield handle, port
    finally:
        await stop_daemon(handle)


async def test_mutual_tls_serves_the_api_and_events_while_ipc_stays(
    state_dir: Path, sleep_bundle: Path, certs: dict[str, TlsFiles]
) -> None:
    async with tls_daemon(state_dir, certs["server"]) as (handle, port):
        remote = f"tls+tcp://127.0.0.1:{port}"
        cid = unique_id("tls")
        async with Client.connect(remote, timeout=20, tls=certs["admin"]) as client:
            ping = await client.ping()
            assert ping.remote_events_address == f"tls+tcp://127.0.0.1:{port + 1}"
            assert ping.remote_events_batch_address == f"tls+tcp://127.0.0.1:{port + 2}"
            async with client.subscribe() as events:
                pid = await client.create_container(cid, str(sleep_bundle))
                with trio.fail_after(20):
                    async for event in events:  # the event stream over TLS, lossless as over ipc
                        if event.type == EventType.START_CONTAINER and event.id == cid:
                            assert event.pid == pid
                            break
        async with Client.connect(handle.address) as local:  # the local ipc socket stays
            assert [c.id for c in await local.containers()] == [cid]
            await local.signal(cid, signal.SIGKILL)
        assert f"CreateContainer for {cid} by client 'admin'" in handle.log_text()


async def test_a_read_only_client_reads_and_is_refused_every_change(
    state_dir: Path, sleep_bundle: Path, certs: dict[str, TlsFiles]
) -> None:
    async with tls_daemon(state_dir, certs["server"], "--read-only-client", "reader") as (handle, port):
        remote = f"tls+tcp://127.0.0.1:{port}"
        cid = unique_id("ro")
        async with Client.connect(handle.address) as local:
            await local.create_container(cid, str(sleep_bundle))
        async with Client.connect(remote, timeout=20, tls=certs["reader"]) as reader:
            assert [c.id for c in await reader.containers()] == [cid]
            assert (await reader.stats(cid)).id == cid
            assert await reader.list_checkpoints(cid) == []
            for change in (
                reader.signal(cid, signal.SIGKILL),
                reader.create_container(unique_id("ro2"), str(sleep_bundle)),
                reader.pause(cid),
                reader.add_process(cid, ["true"]),
            ):
                with pytest.raises(RequestFailed) as refused:
                    await change
                assert refused.value.code == ErrorCode.PERMISSION_DENIED
                assert "may only read" in refused.value.message
        async with Client.connect(remote, timeout=20, tls=certs["admin"]) as admin:
            await admin.signal(cid, signal.SIGKILL)  # another CN of the same CA keeps full rights
        log = handle.log_text()
        assert "from read-only client 'reader'" in log
        assert f"Signal for {cid} by client 'admin'" in log


@pytest.mark.parametrize("who", ["expired", "stranger"])
async def test_a_certificate_the_daemon_does_not_trust_fails_at_the_handshake(
    state_dir: Path, certs: dict[str, TlsFiles], who: str
) -> None:
    async with tls_daemon(state_dir, certs["server"]) as (handle, port):
        with pytest.raises(DaemonUnreachable) as refused:
            async with Client.connect(f"tls+tcp://127.0.0.1:{port}", timeout=5, tls=certs[who]) as client:
                await client.ping()
        assert "TLS handshake failed" in str(refused.value)
        async with Client.connect(handle.address) as local:
            await local.ping()  # the daemon serves on


async def test_a_client_without_a_certificate_and_one_that_sends_nothing_harm_nobody(
    state_dir: Path, certs: dict[str, TlsFiles]
) -> None:
    async with tls_daemon(state_dir, certs["server"]) as (_, port):
        silent = socket.create_connection(("127.0.0.1", port))  # connects, never speaks TLS
        try:
            no_cert = TlsFiles(Path("/nonexistent.crt"), certs["admin"].key, certs["admin"].ca)
            with pytest.raises(ClientError, match=r"cannot read the TLS certificate /nonexistent\.crt"):
                async with Client.connect(f"tls+tcp://127.0.0.1:{port}", tls=no_cert):
                    pass
            async with Client.connect(f"tls+tcp://127.0.0.1:{port}", timeout=20, tls=certs["admin"]) as c:
                await c.ping()
        finally:
            silent.close()


def test_plain_tcp_is_refused_unless_insecure_tcp_is_given(tmp_path: Path) -> None:
    port = free_port_run(3)
    argv = daemon_argv(tmp_path / "state", f"ipc://{tmp_path}/c.sock", "--listen", f"tcp://127.0.0.1:{port}")
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0
    assert "--insecure-tcp" in refused.stderr
    missing = subprocess.run(
        daemon_argv(
            tmp_path / "state", f"ipc://{tmp_path}/c.sock", "--listen", f"tls+tcp://127.0.0.1:{port}"
        ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode != 0
    assert "--tls-cert, --tls-key, --tls-ca" in missing.stderr


async def test_insecure_tcp_serves_with_a_warning(state_dir: Path) -> None:
    port = free_port_run(3)
    handle = await start_daemon(state_dir, "--listen", f"tcp://127.0.0.1:{port}", "--insecure-tcp")
    try:
        async with Client.connect(f"tcp://127.0.0.1:{port}", timeout=20) as client:
            assert (await client.ping()).remote_events_address == f"tcp://127.0.0.1:{port + 1}"
            async with client.subscribe():
                pass  # the event stream is reachable from other hosts too
        assert "plain tcp (--insecure-tcp)" in handle.log_text()
    finally:
        await stop_daemon(handle)


async def test_renewed_certificates_are_served_after_sighup_without_dropping_local_clients(
    state_dir: Path, sleep_bundle: Path, certs: dict[str, TlsFiles], tmp_path: Path
) -> None:
    live = TlsFiles(tmp_path / "server.crt", tmp_path / "server.key", certs["server"].ca)
    shutil.copy(certs["server"].cert, live.cert)
    shutil.copy(certs["server"].key, live.key)
    async with tls_daemon(state_dir, live) as (handle, port):
        remote = f"tls+tcp://127.0.0.1:{port}"
        cid = unique_id("renew")
        async with Client.connect(handle.address) as local:
            pid = await local.create_container(cid, str(sleep_bundle))
            shutil.copy(certs["renewed"].cert, live.cert)
            shutil.copy(certs["renewed"].key, live.key)
            os.kill(server_pid(handle), signal.SIGHUP)
            with trio.fail_after(20):
                while "TLS certificates reloaded (SIGHUP)" not in handle.log_text():
                    await trio.sleep(0.05)  # the reload is announced only in the log
            # The same local connection, the same container, and a new TLS client on the new certificate.
            assert [(c.id, c.pid) for c in await local.containers()] == [(cid, pid)]
            async with Client.connect(remote, timeout=20, tls=certs["admin"]) as client:
                await client.ping()
            served = subprocess.run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(live.ca),
                 "-cert", str(certs["admin"].cert), "-key", str(certs["admin"].key)],
                input="", capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            renewed_serial = subprocess.run(
                ["openssl", "x509", "-noout", "-serial", "-in", str(certs["renewed"].cert)],
                capture_output=True, text=True, check=True,
            ).stdout.strip().split("=")[1]  # fmt: skip
            shown = subprocess.run(
                ["openssl", "x509", "-noout", "-serial"], input=served.stdout, capture_output=True, text=True
            ).stdout
            assert renewed_serial in shown, "the listener still serves the old certificate"
            await local.signal(cid, signal.SIGKILL)


async def test_events_name_the_tls_client_that_caused_them_and_nobody_for_local_clients(
    state_dir: Path, sleep_bundle: Path, certs: dict[str, TlsFiles]
) -> None:
    async with tls_daemon(state_dir, certs["server"]) as (handle, port):
        remote, mine = unique_id("by-tls"), unique_id("by-local")
        async with (
            Client.connect(handle.address) as local,
            Client.connect(f"tls+tcp://127.0.0.1:{port}", timeout=20, tls=certs["admin"]) as admin,
            local.subscribe() as events,
        ):
            init = await admin.create_container(remote, str(sleep_bundle))
            exec_pid = await admin.add_process(remote, ["sleep", "60"])
            await admin.pause(remote)
            await admin.resume(remote)
            await admin.signal(remote, signal.SIGKILL, pid=exec_pid)
            await local.create_container(mine, str(sleep_bundle))
            await local.signal(mine, signal.SIGKILL)
            await admin.signal(remote, signal.SIGKILL)
            seen: list[tuple[str, str, int, str | None]] = []
            exited: set[str] = set()
            with trio.fail_after(30):
                async for event in events:
                    seen.append((event.type, event.id, event.pid, event.by))
                    if event.type == EventType.EXIT and event.id in (remote, mine) and event.pid != exec_pid:
                        exited.add(event.id)  # the two containers exit in either order
                        if exited == {remote, mine}:
                            break
        assert (EventType.START_CONTAINER, remote, init, "admin") in seen
        assert (EventType.START_PROCESS, remote, exec_pid, "admin") in seen
        assert (EventType.PAUSE, remote, init, "admin") in seen
        assert (EventType.RESUME, remote, init, "admin") in seen
        assert (EventType.EXIT, remote, exec_pid, "admin") in seen  # died of admin's SIGKILL
        assert (EventType.EXIT, remote, init, "admin") in seen
        # A local client's start and kill name nobody.
        assert [by for kind, id, _pid, by in seen if id == mine] == [None, None]
        assert [kind for kind, id, _pid, _by in seen if id == mine] == [
            EventType.START_CONTAINER,
            EventType.EXIT,
        ]
        # The journal keeps the caller too: a late reader of the Events request sees it.
        async with Client.connect(handle.address) as local:
            journal = await local.events_page(1)
        journalled = [(e.type, e.id, e.by) for e in journal.events]
        assert (EventType.START_CONTAINER, remote, "admin") in journalled
        assert (EventType.START_CONTAINER, mine, None) in journalled


async def test_actr_lists_several_daemons_one_over_tls_with_a_host_column(
    sleep_bundle: Path, certs: dict[str, TlsFiles]
) -> None:
    port = free_port_run(3)
    first = await start_daemon(short_temp_dir("tls-a") / "state", "--id", "host-a")
    second = await start_daemon(
        short_temp_dir("tls-b") / "state", "--id", "host-b", *tls_args(certs["server"], port)
    )
    ids = unique_id("on-a"), unique_id("on-b")
    try:
        for handle, cid in zip((first, second), ids, strict=True):
            async with Client.connect(handle.address) as client:
                await client.create_container(cid, str(sleep_bundle))
        admin = certs["admin"]
        env = dict(
            os.environ, ACTR_TLS_CERT=str(admin.cert), ACTR_TLS_KEY=str(admin.key), ACTR_TLS_CA=str(admin.ca)
        )
        remote = f"tls+tcp://127.0.0.1:{port}"
        actr = [sys.executable, "-m", "ctl", "--address", first.address, "--address", remote, "containers"]
        listed = await trio.run_process(actr, capture_stdout=True, capture_stderr=True, env=env, check=False)
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.decode().splitlines()
        assert lines[0].split() == ["HOST", "ID", "PATH", "STATUS", "PID1"]
        assert sorted(line.split()[:2] for line in lines[1:]) == [["host-a", ids[0]], ["host-b", ids[1]]]
        # The flags instead of the environment; without a certificate the handshake fails.
        alone = [sys.executable, "-m", "ctl", "--address", remote, "--tls-cert", str(admin.cert),
                 "--tls-key", str(admin.key), "--tls-ca", str(admin.ca), "--json", "containers"]  # fmt: skip
        shown = await trio.run_process(alone, capture_stdout=True, capture_stderr=True, check=False)
        assert shown.returncode == 0, shown.stderr
        assert [c["id"] for c in json.loads(shown.stdout)] == [ids[1]]
        stranger = certs["stranger"]
        refused = await trio.run_process(
            [sys.executable, "-m", "ctl", "--address", remote, "--tls-cert", str(stranger.cert),
             "--tls-key", str(stranger.key), "--tls-ca", str(admin.ca), "containers"],
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
        assert refused.returncode == 1
        assert b"TLS handshake failed" in refused.stderr
        # stats and events merge the daemons too, each row or event named by its daemon.
        both = [sys.executable, "-m", "ctl", "--address", first.address, "--address", remote]
        stats = await trio.run_process(
            [*both, "containers", "stats", "--no-stream"], capture_stdout=True, capture_stderr=True, env=env
        )
        rows = stats.stdout.decode().splitlines()
        assert rows[0].split()[:2] == ["HOST", "CONTAINER"]
        assert sorted(row.split()[:2] for row in rows[1:]) == [["host-a", ids[0]], ["host-b", ids[1]]]
        followed = await trio.run_process(
            ["timeout", "5", *both, "--json", "events", "--from", "1"],
            capture_stdout=True, capture_stderr=True, env=env, check=False,
        )  # fmt: skip
        assert followed.returncode == 124, followed.stderr  # still following when timeout ended it
        events = [json.loads(line) for line in followed.stdout.decode().splitlines()]
        starts = sorted((e["host"], e["id"]) for e in events if e["type"] == "start-container")
        assert starts == [("host-a", ids[0]), ("host-b", ids[1])]
        for handle, cid in zip((first, second), ids, strict=True):
            async with Client.connect(handle.address) as client:
                await client.signal(cid, signal.SIGKILL)
    finally:
        for handle in (first, second):
            remove_containers(handle.runc_root)
            await stop_daemon(handle)
            shutil.rmtree(handle.state_dir.parent, ignore_errors=True)
