"""Under systemd, a kill -9 of the whole tree (reaper and API server) keeps the containers' pipes.

The test plays systemd (``support.fake_systemd``): the daemon stores its pipe ends in the fake
manager's fd store and gets them back as ``$LISTEN_FDS`` when the test starts it again. The
container prints a numbered line every 10 ms; the pipe, held by the store while no daemon runs,
buffers what it writes meanwhile (64 KiB: minutes of this), so no number goes missing. Without
the store (``FileDescriptorStoreMax=0``, told as ``$FDSTORE=0``), the same kill loses everything
from the kill on. Each run prints what it measured (``pytest -s``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support.daemon import DaemonHandle, short_temp_dir, start_daemon, stop_daemon, unique_id
from support.fake_systemd import FakeSystemd
from support.restarts import server_pid, wait_for_exit

from containerd_actors.client import Client
from containerd_actors.daemon.container.adopt import OUTPUT_LOST_MARKER

COUNTER = ["sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 0.01; done"]
#: How long no daemon runs: about 100 lines, 400 bytes, far below a pipe's 64 KiB (a longer
#: outage can be measured with CONTAINERD_ACTORS_TEST_OUTAGE_S).
OUTAGE_S = float(os.environ.get("CONTAINERD_ACTORS_TEST_OUTAGE_S", "1.0"))
ROLES = ("stdin", "stdout", "stderr")


@pytest.fixture(params=[16, 0], ids=["fd-store", "no-fd-store"])
def systemd(request: pytest.FixtureRequest) -> Iterator[FakeSystemd]:
    directory = short_temp_dir("ca-systemd-")
    manager = FakeSystemd(directory / "notify", store_max=request.param)
    yield manager
    manager.close()
    directory.rmdir()


def counted(text: bytes) -> list[int]:
    return [int(line) for line in text.decode().splitlines() if line.isdigit()]


async def stdout_of(client: Client, cid: str, pid: int = 0) -> bytes:
    return b"".join([read.stdout async for read in client.follow_output(cid, pid, follow=False)])


async def wait_for_line(client: Client, cid: str, number: int) -> int:
    """Until the log has line ``number``; returns the last line it has."""
    with trio.fail_after(30):
        while not (numbers := counted(await stdout_of(client, cid))) or numbers[-1] < number:
            await trio.sleep(0.05)  # the counter's pace
    return numbers[-1]


async def unbroken(client: Client, cid: str, until: int) -> list[int]:
    """Once the log has line ``until``: every number up to it, none missing, no 'lost' marker."""
    await wait_for_line(client, cid, until)
    text = await stdout_of(client, cid)
    numbers = counted(text)
    assert OUTPUT_LOST_MARKER not in text
    assert numbers == list(range(len(numbers))), "a line went missing"
    return numbers


async def kill_and_forget(client: Client, cid: str) -> None:
    """Kill the container and wait until its exit is reaped, drained and published."""
    await client.signal(cid, signal.SIGKILL)
    with trio.fail_after(30):
        while await client.containers():
            await trio.sleep(0.05)  # the daemon lists it until then


async def unbroken_then_gone(handle: DaemonHandle, systemd: FakeSystemd, cid: str, until: int) -> None:
    """The log is unbroken up to line ``until``; then the container ends and its fds leave the store."""
    async with Client.connect(handle.address, timeout=60) as client:
        await unbroken(client, cid, until)
        await kill_and_forget(client, cid)
    await systemd.wait_for(lambda: not systemd.names())


async def kill_tree(handle: DaemonHandle) -> None:
    server = server_pid(handle)
    os.kill(server, signal.SIGKILL)
    os.kill(handle.pid, signal.SIGKILL)
    await handle.process.wait()
    await wait_for_exit(server)


async def test_a_whole_tree_kill_under_systemd(state_dir: Path, systemd: FakeSystemd, bundle_factory) -> None:
    store = systemd.store_max != 0
    cid = unique_id("fdstore")
    handle = await start_daemon(state_dir, systemd=systemd)
    try:
        async with Client.connect(handle.address) as client:
            await client.create_container(cid, str(bundle_factory(*COUNTER)))
            execd = await client.add_process(cid, ["sleep", "1000000"])
            # The counter's pace on this machine, for what the outage costs without the store.
            first = (await wait_for_line(client, cid, 20), time.monotonic())
            last = (await wait_for_line(client, cid, first[0] + 100), time.monotonic())
            rate = (last[0] - first[0]) / (last[1] - first[1])
        # Named by container id, pid (of an exec'd process; the init's is its container's) and role.
        expected = {f"ca/{cid}/{role}" for role in ROLES} | {f"ca/{cid}/{execd}/{role}" for role in ROLES}
        if store:
            await systemd.wait_for(lambda: expected <= set(systemd.names()))
            assert set(systemd.names()) == expected
        else:
            systemd.receive()
            assert not systemd.names() and not any("FDSTORE" in m for m in systemd.messages)

        log = state_dir / "logs" / cid / "stdout.log"
        before = counted(log.read_bytes())
        killed_at = time.monotonic()
        await kill_tree(handle)
        await trio.sleep(OUTAGE_S)  # the outage under test: the counter writes on into its pipe
        handle = await start_daemon(state_dir, systemd=systemd)
        outage = time.monotonic() - killed_at

        async with Client.connect(handle.address, timeout=60) as client:
            listed = {info.id: info for info in await client.containers()}
            assert execd in [process.pid for process in listed[cid].processes]
            text = await stdout_of(client, cid)
            if store:
                numbers = await unbroken(client, cid, before[-1] + 200)
                print(f"\nfd store: outage {outage:.2f} s; last line logged at the kill {before[-1]}; "
                      f"lines lost 0 of {numbers[-1] + 1}")  # fmt: skip
            else:
                kept, marker, after = text.partition(OUTPUT_LOST_MARKER)
                assert marker and not after, "nothing is read after the kill"
                assert counted(kept) == list(range(len(counted(kept))))
                print(f"\nno fd store: outage {outage:.2f} s; the log ends at line {counted(kept)[-1]} "
                      f"(logged at the kill: {before[-1]}); everything after it is lost: "
                      f"~{rate * outage:.0f} lines in the outage alone, at ~{rate:.0f} lines/s")  # fmt: skip

            # The store follows the processes: one that exited and was drained leaves it.
            await kill_and_forget(client, cid)
        await systemd.wait_for(lambda: not systemd.names())
        removed = {m["FDNAME"] for m in systemd.messages if m.get("FDSTOREREMOVE") == "1"}
        assert removed >= expected if store else not removed
    finally:
        await stop_daemon(handle)


def upgrade(state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "containerd_actors.daemon.main", "upgrade", "--state-dir", str(state_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("systemd", [16], indirect=True, ids=["fd-store"])
async def test_an_upgrade_stores_nothing_twice_and_a_later_kill_keeps_the_pipes(
    state_dir: Path, systemd: FakeSystemd, bundle_factory
) -> None:
    """The re-executed reaper knows from its handover what is stored: it sends nothing again,
    and what the store holds is still what a kill of the whole tree needs."""
    cid = unique_id("fdstore-up")
    handle = await start_daemon(state_dir, systemd=systemd)
    try:
        async with Client.connect(handle.address) as client:
            await client.create_container(cid, str(bundle_factory(*COUNTER)))
            await wait_for_line(client, cid, 20)
        expected = {f"ca/{cid}/{role}" for role in ROLES}
        await systemd.wait_for(lambda: expected <= set(systemd.names()))
        readies, stores = systemd.ready_count(), len(systemd.messages)

        done = await trio.to_thread.run_sync(upgrade, state_dir)
        assert done.returncode == 0, done.stdout + done.stderr
        await systemd.wait_for(lambda: systemd.ready_count() > readies)  # the new image serves
        again = [m for m in systemd.messages[stores:] if "FDSTORE" in m or "FDSTOREREMOVE" in m]
        assert again == [], "the upgrade must not touch the store"

        async with Client.connect(handle.address) as client:
            before = await wait_for_line(client, cid, 40)
        await kill_tree(handle)
        handle = await start_daemon(state_dir, systemd=systemd)
        await unbroken_then_gone(handle, systemd, cid, before + 100)
    finally:
        await stop_daemon(handle)


@pytest.mark.parametrize("systemd", [16], indirect=True, ids=["fd-store"])
async def test_systemctl_restart_keeps_the_pipes_too(
    state_dir: Path, systemd: FakeSystemd, bundle_factory
) -> None:
    """``systemctl restart`` is SIGTERM to the main process (``KillMode=process``), then a start; a
    restart job keeps the fd store, so the stop costs no output either (a stop alone would not)."""
    cid = unique_id("fdstore-term")
    handle = await start_daemon(state_dir, systemd=systemd)
    try:
        async with Client.connect(handle.address) as client:
            await client.create_container(cid, str(bundle_factory(*COUNTER)))
            before = await wait_for_line(client, cid, 20)
        await systemd.wait_for(lambda: {f"ca/{cid}/{role}" for role in ROLES} <= set(systemd.names()))
        assert await stop_daemon(handle) == 0
        handle = await start_daemon(state_dir, systemd=systemd)
        await unbroken_then_gone(handle, systemd, cid, before + 100)
    finally:
        await stop_daemon(handle)
