"""Checkpoint and restore through the daemon, runc and the CRIU that scripts/install-criu builds.

The tests skip only when `criu check` fails on this host, and then they say CRIU's own reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest
import trio
from support.bundles import make_terminal_bundle
from support.criu import criu_path, last_error_line
from support.daemon import DaemonHandle, unique_id
from support.event_waits import exit_status

from containerd_actors.client import Client, RequestFailed
from containerd_actors.protocol import ErrorCode, EventType

REPO = Path(__file__).resolve().parents[2]
COUNTER = ["sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done"]


@pytest.fixture(scope="module", autouse=True)
def working_criu() -> None:
    result = subprocess.run([criu_path(), "check"], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.skip(f"criu check failed: {last_error_line(result.stdout + result.stderr)}")


def stdout_numbers(daemon: DaemonHandle, cid: str) -> list[int]:
    path = daemon.state_dir / "logs" / cid / "stdout.log"
    try:
        return [int(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []  # the drain has not opened its log yet


def open_log(daemon: DaemonHandle, cid: str) -> TextIO:
    return open(daemon.state_dir / "logs" / cid / "stdout.log")


async def wait_for_output(daemon: DaemonHandle, cid: str, count: int) -> list[int]:
    """The container's own output is the state under test; nothing else announces it."""
    with trio.fail_after(20):
        while len(numbers := stdout_numbers(daemon, cid)) < count:
            await trio.sleep(0.02)
    return numbers


async def counting_container(
    client: Client, daemon: DaemonHandle, bundle_factory, prefix: str
) -> tuple[Path, str]:
    """A container counting on stdout from a bundle of its own, seen counting before it is dumped."""
    bundle = bundle_factory(*COUNTER)
    cid = unique_id(prefix)
    await client.create_container(cid, str(bundle))
    await wait_for_output(daemon, cid, 5)
    return bundle, cid


async def test_checkpoint_exit_then_restore_continues_counting(
    client: Client, daemon: DaemonHandle, bundle_factory
) -> None:
    bundle, cid = await counting_container(client, daemon, bundle_factory, "count")
    async with client.subscribe() as events:
        with open_log(daemon, cid) as log:  # still readable after the daemon removes the exited container
            checkpoint = await client.create_checkpoint(cid, "stop-here", exit=True)
            last_before = int(log.read().split()[-1])
        assert await exit_status(events, cid) is not None
    assert checkpoint.exit is True and checkpoint.tcp is False
    assert (bundle / "checkpoints" / "stop-here" / "checkpoint.json").is_file()
    assert await client.containers() == []

    pid = await client.create_container(cid, str(bundle), checkpoint="stop-here")
    numbers = await wait_for_output(daemon, cid, 3)
    assert numbers[0] == last_before + 1, (last_before, numbers[:5])
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    [info] = await client.containers()
    assert (info.id, info.pid, info.status) == (cid, pid, "running")

    # The restored container is a normal one: a second checkpoint works, and so do signals and exits.
    second = await client.create_checkpoint(cid, "again")
    assert second.name == "again"
    async with client.subscribe() as events:
        await client.signal(cid, signal.SIGKILL)
        assert await exit_status(events, cid) == 137


async def test_leave_running_checkpoint_and_clones(
    client: Client, daemon: DaemonHandle, bundle_factory
) -> None:
    bundle, original = await counting_container(client, daemon, bundle_factory, "orig")
    async with client.subscribe() as events:
        await client.create_checkpoint(original, "snap")
        with trio.fail_after(10):
            async for event in events:
                if event.type == EventType.CHECKPOINT:
                    assert event.id == original
                    break
    at_checkpoint = len(stdout_numbers(daemon, original))
    clones = [unique_id("clone1"), unique_id("clone2")]
    for clone in clones:
        await client.create_container(clone, str(bundle), checkpoint="snap")
    # The original kept running; each clone counts on from the checkpoint, independently.
    await wait_for_output(daemon, original, at_checkpoint + 5)
    for clone in clones:
        numbers = await wait_for_output(daemon, clone, 3)
        assert 1 <= numbers[0] <= at_checkpoint + 2
    assert {c.id for c in await client.containers()} == {original, *clones}
    for cid in [original, *clones]:
        await client.signal(cid, signal.SIGKILL)


async def test_listing_shows_the_options_as_given(client: Client, bundle_factory) -> None:
    bundle = bundle_factory(*COUNTER)
    cid = unique_id("flags")
    await client.create_container(cid, str(bundle))
    await client.create_checkpoint(cid, "plain")
    await client.create_checkpoint(cid, "sockets-and-shell", unix_sockets=True, shell=True)
    listed = {c.name: c for c in await client.list_checkpoints(cid)}
    assert set(listed) == {"plain", "sockets-and-shell"}
    assert (listed["plain"].unix_sockets, listed["plain"].shell) == (False, False)
    assert (listed["sockets-and-shell"].unix_sockets, listed["sockets-and-shell"].shell) == (True, True)
    assert listed["plain"].created <= listed["sockets-and-shell"].created

    await client.delete_checkpoint(cid, "plain")
    assert [c.name for c in await client.list_checkpoints(cid)] == ["sockets-and-shell"]
    assert not (bundle / "checkpoints" / "plain").exists()
    await client.signal(cid, signal.SIGKILL)


async def test_checkpoint_errors(client: Client, daemon: DaemonHandle, bundle_factory) -> None:
    bundle = bundle_factory(*COUNTER)
    cid = unique_id("errs")
    await client.create_container(cid, str(bundle))
    await client.create_checkpoint(cid, "taken")

    cases = [
        (client.create_checkpoint("no-such-container", "x"), ErrorCode.NOT_FOUND, "no-such-container"),
        (client.create_checkpoint(cid, "taken"), ErrorCode.ALREADY_EXISTS, "taken"),
        (client.delete_checkpoint(cid, "never-made"), ErrorCode.NOT_FOUND, "never-made"),
        (
            client.create_container(unique_id("r"), str(bundle), checkpoint="missing"),
            ErrorCode.NOT_FOUND,
            "missing",
        ),
    ]
    for call, code, words in cases:
        with pytest.raises(RequestFailed) as failure:
            await call
        assert failure.value.code == code
        assert words in failure.value.message
    with pytest.raises(ValueError, match="must match"):
        await client.create_checkpoint(cid, "../escape")
    assert daemon.runc_ids() == [cid]
    await client.signal(cid, signal.SIGKILL)


def actr(daemon: DaemonHandle, *args: str) -> subprocess.CompletedProcess[str]:
    """``actr`` as a user runs it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "ctl.main", "--address", daemon.address, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def listed_names(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [line.split()[0] for line in result.stdout.splitlines()[1:]]


async def test_checkpoints_outlive_their_container(
    client: Client, daemon: DaemonHandle, bundle_factory
) -> None:
    """checkpoint --exit, then list, then restore under the same id and under a new one (a clone),
    all with actr as a user types it."""
    bundle, cid = await counting_container(client, daemon, bundle_factory, "after")
    async with client.subscribe() as events:
        created = actr(daemon, "checkpoints", "create", "--exit", cid, "gone")
        assert created.returncode == 0, created.stderr
        await exit_status(events, cid)
    last_before = stdout_numbers(daemon, cid)[-1]
    assert await client.containers() == []

    # The container has exited; its checkpoints are still listed through the bundle it ran from.
    assert listed_names(actr(daemon, "checkpoints", cid)) == ["gone"]
    assert listed_names(actr(daemon, "checkpoints", "list", cid)) == ["gone"]
    assert listed_names(actr(daemon, "checkpoints", "--bundle", str(bundle))) == ["gone"]
    as_json = actr(daemon, "--json", "checkpoints", cid)
    [record] = json.loads(as_json.stdout)
    assert (record["name"], record["exit"]) == ("gone", True)

    clone = unique_id("clone")
    for restored in (cid, clone):
        started = actr(daemon, "containers", "start", "--checkpoint", "gone", restored, str(bundle))
        assert started.returncode == 0, started.stderr
        numbers = await wait_for_output(daemon, restored, 3)
        assert numbers[0] == last_before + 1, (restored, last_before, numbers[:5])
    assert {c.id for c in await client.containers()} == {cid, clone}

    # A checkpoint of the clone lands in the same bundle; deleting one after its container
    # exited works too.
    assert actr(daemon, "checkpoints", "create", clone, "of-clone").returncode == 0
    async with client.subscribe() as events:
        for restored in (cid, clone):
            await client.signal(restored, signal.SIGKILL)
            assert await exit_status(events, restored) == 137
    assert listed_names(actr(daemon, "checkpoints", clone)) == ["gone", "of-clone"]
    deleted = actr(daemon, "checkpoints", "delete", clone, "of-clone")
    assert deleted.returncode == 0, deleted.stderr
    assert listed_names(actr(daemon, "checkpoints", "--bundle", str(bundle))) == ["gone"]
    missing = actr(daemon, "checkpoints", "--bundle", str(bundle / "nowhere"))
    assert missing.returncode == 1 and "not_found" in missing.stderr
    never = actr(daemon, "checkpoints", unique_id("never"))
    assert never.returncode == 1 and "no such container" in never.stderr


async def test_a_terminal_container_is_checkpointed_and_restored(
    client: Client, daemon: DaemonHandle, bundles_dir: Path
) -> None:
    """The restored shell is the same one (its variable survives) on a new pty that runc hands
    over through the console socket, under its own id and as a clone."""
    bundle = make_terminal_bundle(bundles_dir / f"spec-{uuid.uuid4().hex[:10]}")
    cid = unique_id("tty")
    await client.create_container(cid, str(bundle))
    await client.write_input(cid, b"x=41\r")
    await output_until(client, cid, b"/ # ", after=b"x=41")
    async with client.subscribe() as events:
        try:
            await client.create_checkpoint(cid, "shell", exit=True)
        except RequestFailed as failure:
            assert failure.value.code == ErrorCode.RUNTIME_FAILED
            assert "criu" in failure.value.message
            pytest.skip(f"CRIU cannot dump a container with a terminal here: {failure.value.message}")
        await exit_status(events, cid)
    assert [c.name for c in await client.list_checkpoints(cid)] == ["shell"]

    clone = unique_id("tty-clone")
    for restored in (cid, clone):
        await client.create_container(restored, str(bundle), checkpoint="shell")
        [info] = [c for c in await client.containers() if c.id == restored]
        assert info.processes[0].terminal
        await client.resize_terminal(restored, 25, 90)
        await client.write_input(restored, b"echo restored-$((x+1)); stty size\r")
        out = await output_until(client, restored, b"25 90\r\n", after=b"stty size")
        assert b"restored-42\r\n" in out
    for restored in (cid, clone):
        await client.signal(restored, signal.SIGKILL)


async def output_until(client: Client, cid: str, marker: bytes, *, after: bytes) -> bytes:
    """The init's output until ``marker`` appears after ``after`` (the echo of a typed command)."""
    out = b""
    with trio.fail_after(20):
        async for chunk in client.follow_output(cid):
            out += chunk.stdout
            if marker in out.split(after, 1)[-1]:
                return out
    raise AssertionError(f"{marker!r} never came: {out!r}")


# --------------------------------------------------------------------------- TCP in a pre-created netns


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace made beforehand: CRIU restores TCP only into a namespace it did not create."""
    name = f"ca-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def join_netns(bundle: Path, netns: str) -> None:
    config = json.loads((bundle / "config.json").read_text())
    for namespace in config["linux"]["namespaces"]:
        if namespace["type"] == "network":
            namespace["path"] = f"/var/run/netns/{netns}"
    (bundle / "config.json").write_text(json.dumps(config))


#: A counter sent over a TCP connection inside the container; the server side prints it to stdout.
#: (The server reads a never-ending stdin: busybox nc would stop on EOF from /dev/null.)
TCP_COUNTER = [
    "sh",
    "-c",
    "sleep 1000000 | nc -l -p 7000 & sleep 0.3; "
    "i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done | nc 127.0.0.1 7000",
]


async def test_tcp_connection_survives_checkpoint_with_tcp(
    client: Client, daemon: DaemonHandle, bundle_factory, netns: str
) -> None:
    bundle = bundle_factory(*TCP_COUNTER)
    join_netns(bundle, netns)
    cid = unique_id("tcp")
    await client.create_container(cid, str(bundle))
    await wait_for_output(daemon, cid, 5)

    # Without --tcp, CRIU refuses the established connection: the error carries CRIU's reason, the
    # container keeps running, and no half-written checkpoint stays behind.
    with pytest.raises(RequestFailed) as failure:
        await client.create_checkpoint(cid, "no-tcp")
    assert failure.value.code == ErrorCode.RUNTIME_FAILED
    assert "criu:" in failure.value.message
    assert "tcp" in failure.value.message.lower()
    assert os.listdir(bundle / "checkpoints") == []
    running = len(stdout_numbers(daemon, cid))
    await wait_for_output(daemon, cid, running + 3)

    async with client.subscribe() as events:
        with open_log(daemon, cid) as log:
            checkpoint = await client.create_checkpoint(cid, "with-tcp", tcp=True, exit=True)
            last_before = int(log.read().split()[-1])
        await exit_status(events, cid)
    assert checkpoint.tcp is True
    await client.create_container(cid, str(bundle), checkpoint="with-tcp")
    numbers = await wait_for_output(daemon, cid, 3)
    assert numbers[0] == last_before + 1, (last_before, numbers[:5])  # the same connection carries on
    await client.signal(cid, signal.SIGKILL)
