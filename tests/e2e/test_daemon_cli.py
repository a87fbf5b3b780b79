"""The daemon's flags (the original containerd's), its socket directory, and a clean stop."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trio
from support.daemon import daemon_argv, start_daemon, stop_daemon, unique_id

from containerd_actors.client import Client
from containerd_actors.daemon.main import config_from_args, duration_arg


def test_defaults_match_the_original() -> None:
    config = config_from_args([])
    assert config.state_dir.as_posix() == "/run/containerd-actors"
    assert config.concurrency == 10
    assert config.metrics_interval == 60.0
    assert config.listen == "ipc:///run/containerd-actors/containerd.sock"
    assert config.events_address == "ipc:///run/containerd-actors/events.sock"
    assert config.events_batch_address == "ipc:///run/containerd-actors/events-batch.sock"
    assert config.oom_notify is False
    assert config.debug is False
    assert config.id == os.uname().nodename
    assert config.events_retention == 100_000
    assert config.events_dir.as_posix() == "/run/containerd-actors/events"


def test_flags_are_parsed() -> None:
    config = config_from_args(
        [
            *("--id", "deathstar", "--debug", "--state-dir", "/tmp/x", "-c", "3"),
            *("--metrics-interval", "1m30s", "-l", "/tmp/x/api.sock", "--oom-notify"),
            *("--events-retention", "500"),
        ]
    )
    assert (config.id, config.debug, config.concurrency, config.oom_notify) == ("deathstar", True, 3, True)
    assert config.events_retention == 500
    assert config.metrics_interval == 90.0
    assert config.listen == "ipc:///tmp/x/api.sock"
    assert config.events_address == "ipc:///tmp/x/events.sock"


@pytest.mark.parametrize(
    ("text", "seconds"), [("1m0s", 60.0), ("500ms", 0.5), ("2h", 7200.0), ("1.5s", 1.5), ("10", 10.0)]
)
def test_go_durations(text: str, seconds: float) -> None:
    assert duration_arg(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1x", "m", "1m fast"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        duration_arg(text)


def test_remote_events_addresses_are_the_next_ports() -> None:
    config = config_from_args(["-l", "tcp://127.0.0.1:7000", "--insecure-tcp"])
    assert config.remote_listen == ("tcp://127.0.0.1:7000",)
    assert config.remote_events_address == "tcp://127.0.0.1:7001"
    assert config.remote_events_batch_address == "tcp://127.0.0.1:7002"
    assert config.listen.startswith("ipc://"), "the local socket stays"


def test_every_remote_listener_has_its_own_event_streams() -> None:
    config = config_from_args(["-l", "tcp://127.0.0.1:7000", "-l", "tcp://198.18.0.1:8000", "--insecure-tcp"])
    assert [(s.api, s.events, s.batch) for s in config.remote_streams] == [
        ("tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"),
        ("tcp://198.18.0.1:8000", "tcp://198.18.0.1:8001", "tcp://198.18.0.1:8002"),
    ]
    assert config.remote_events_address == "tcp://127.0.0.1:7001", "the first one's are the default"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["-l", "inproc://api"],
            "cannot derive an events address from 'inproc://api'; pass --events-address",
        ),
        (
            ["--events-address", "inproc://events"],
            "cannot derive an event batch address from 'inproc://events'; pass --events-batch-address",
        ),
    ],
)
def test_an_address_that_cannot_be_derived_names_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        config_from_args(argv)


def test_the_batch_stream_sits_beside_the_events_socket_unless_told_otherwise() -> None:
    moved = config_from_args(["-l", "/tmp/x/api.sock", "--events-address", "/tmp/y/ev.sock"])
    assert moved.events_batch_address == "ipc:///tmp/y/events-batch.sock"
    told = config_from_args(["--events-batch-address", "tcp://127.0.0.1:9000"])
    assert told.events_batch_address == "tcp://127.0.0.1:9000"


def test_the_reaper_process_does_not_carry_the_servers_libraries() -> None:
    """The reaper is the process that parses the flags; it lives as long as the host's containers.

    Nor attrs, dataclasses or inspect (~3 MiB of its memory): its flags are parsed into NamedTuples.
    """
    heavy = ("attr", "attrs", "cattrs", "dataclasses", "inspect", "orjson", "pynng", "trio")
    code = (
        "import sys, containerd_actors.daemon.main, containerd_actors.reaper.process\n"
        "from containerd_actors.daemon.flags import parse_flags\n"
        "parse_flags(['-l', 'tcp://127.0.0.1:7000', '--insecure-tcp'])\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"


def test_the_api_server_carries_nothing_an_idle_server_never_runs() -> None:
    """What the server imports and never uses at idle stays out of its memory: asyncio (pynng's),
    ssl and hmac (trio's; they load OpenSSL) are in ``sys.modules`` unexecuted until a name of
    theirs is used, a migration's modules are imported when a migration comes, and the debugging
    hooks' tracemalloc and cProfile when their variables are set."""
    unused = (
        "_hashlib",
        "hashlib",
        "_ssl",
        "asyncio.base_events",
        "cProfile",
        "containerd_actors.daemon.migration.bulk",
        "containerd_actors.daemon.migration.source",
        "tarfile",
        "tracemalloc",
    )
    code = (
        "import sys\n"
        "from containerd_actors.daemon.main import import_server\n"
        "import_server()\n"
        "from containerd_actors import protocol as wire\n"
        "wire.is_migration_chunk(b'{}')\n"  # asked of every request
        f"print(sorted(m for m in {unused!r} if m in sys.modules))\n"
        "import asyncio, hmac, ssl\n"  # a name used: the real module runs
        "print(asyncio.get_event_loop_policy() is not None, len(hmac.digest(b'k', b'm', 'sha256')),\n"
        "      ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED)\n"
    )
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("CONTAINERD_ACTORS_TRACEMALLOC", "CONTAINERD_ACTORS_PROFILE")
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment
    )
    assert result.stdout == "[]\nTrue 32 True\n"


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_lists_every_original_flag(flag: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "containerd_actors.daemon.main", flag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in [
        "--id",
        "--debug",
        "--state-dir",
        "--concurrency",
        "--metrics-interval",
        "--listen",
        "--oom-notify",
        "--events-retention",
    ]:
        assert option in out


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "containerd_actors.daemon.main", "-v"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("containerd-actors ")


def test_bad_events_retention_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "containerd_actors.daemon.main", "--events-retention", "0"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "--events-retention must be at least 1" in result.stderr


def test_bad_concurrency_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "containerd_actors.daemon.main", "-c", "0"], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "--concurrency" in result.stderr


async def test_socket_directory_is_private_and_sigterm_leaves_containers_running(
    state_dir, sleep_bundle
) -> None:
    handle = await start_daemon(state_dir)
    try:
        socket_dir = state_dir / "sock"
        mode = stat.S_IMODE(socket_dir.stat().st_mode)
        assert mode == 0o700
        assert socket_dir.stat().st_uid == 0
        cid = unique_id("survivor")
        async with Client.connect(handle.address) as client:
            pid = await client.create_container(cid, str(sleep_bundle))
    finally:
        code = await stop_daemon(handle)
    assert code == 0, handle.log_text()
    assert "received SIGTERM" in handle.log_text()
    os.kill(pid, 0)  # still running after the daemon stopped
    assert handle.runc_ids() == [cid]
    # The state fixture removes it by id; an operator would use `runc --root <state-dir>/runc delete -f`.


async def test_a_second_daemon_on_the_same_socket_is_refused(state_dir) -> None:
    handle = await start_daemon(state_dir)
    try:
        second = state_dir.parent / "second"
        with trio.fail_after(30):
            result = await trio.run_process(
                daemon_argv(second, handle.address),
                capture_stderr=True,
                check=False,
            )
        assert result.returncode == 1
        assert b"already listening on " + handle.address.encode() in result.stderr
        assert b"Traceback" not in result.stderr
    finally:
        await stop_daemon(handle)
    assert handle.process.returncode == 0


async def test_a_second_daemon_on_the_same_state_dir_is_refused(state_dir) -> None:
    """Different sockets, one state directory: the second would adopt the first one's containers."""
    handle = await start_daemon(state_dir)
    try:
        other_sockets = Path(tempfile.mkdtemp(prefix="ca-other-", dir="/tmp"))
        try:
            with trio.fail_after(30):
                result = await trio.run_process(
                    daemon_argv(state_dir, f"ipc://{other_sockets}/containerd.sock"),
                    capture_stderr=True,
                    check=False,
                )
        finally:
            shutil.rmtree(other_sockets)
        assert result.returncode == 1
        expected = f"state dir {state_dir} is in use by another containerd-actors (pid {handle.process.pid})"
        assert expected.encode() in result.stderr
        assert b"Traceback" not in result.stderr
        async with Client.connect(handle.address, timeout=30) as client:
            assert (await client.ping()).events_address == handle.events_address  # still serving
    finally:
        await stop_daemon(handle)
    assert handle.process.returncode == 0
    restarted = await start_daemon(state_dir)  # the lock goes with the process that held it
    assert await stop_daemon(restarted) == 0


async def test_starts_work_while_systemd_keeps_its_notify_socket(sleep_bundle) -> None:
    """Under systemd the notify socket stays bound; runc must never see it, or every start hangs."""
    top = Path(tempfile.mkdtemp(prefix="ca-", dir="/tmp"))
    state = top / "state"
    notify_path = top / "notify"
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify.bind(str(notify_path))
    address = f"ipc://{state}/containerd.sock"
    process = await trio.lowlevel.open_process(
        [
            *(sys.executable, "-m", "containerd_actors.daemon.main"),
            *("--state-dir", str(state), "-l", address, "--start-timeout", "5s"),
        ],
        env=dict(os.environ, NOTIFY_SOCKET=str(notify_path)),
    )
    try:
        with trio.fail_after(30):
            while b"READY=1" not in await notify.recv(4096):
                pass
        async with Client.connect(address) as client:
            cid = unique_id("notify")
            with trio.fail_after(4):  # well under --start-timeout
                await client.create_container(cid, str(sleep_bundle))
            await client.signal(cid, 9)
    finally:
        process.terminate()
        await process.wait()
        notify.close()
        subprocess.run(["runc", "--root", str(state / "runc"), "delete", "--force", cid], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)
