"""`containerd-actors upgrade`: the reaper re-executes itself and no output byte, pipe or process is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio
from support.bundles import make_bundle
from support.daemon import start_daemon, stop_daemon, unique_id
from support.restarts import server_pid

from containerd_actors.client import Client

#: Prints 0, 1, 2, ... one line every 10 ms, so any gap in its log is a lost line.
COUNTER = ["sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 0.01; done"]
#: An exec'd process that is not pid 1, so a lost reader would kill it with SIGPIPE.
EXEC_COUNTER = ["sh", "-c", "i=0; while :; do echo x$i; i=$((i+1)); sleep 0.01; done"]


async def output_of(client: Client, cid: str, pid: int = 0) -> str:
    """Everything the process has written so far (stdout), read from the daemon's logs."""
    chunks = []
    async for read in client.follow_output(cid, pid, follow=False):
        chunks.append(read.stdout)
    return b"".join(chunks).decode()


async def wait_for_lines(client: Client, cid: str, count: int, pid: int = 0) -> str:
    with trio.fail_after(30):
        while len((text := await output_of(client, cid, pid)).splitlines()) < count:
            await trio.sleep(0.05)  # the counter writes a line every 10 ms
    return text


def upgrade(state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "containerd_actors.daemon.main", "upgrade", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=90,
    )


async def test_an_upgrade_keeps_every_line_and_every_process(state_dir: Path, bundles_dir: Path) -> None:
    counter = make_bundle(bundles_dir / "upgrade-counter", COUNTER)
    handle = await start_daemon(state_dir)
    cid = unique_id("upgrade")
    try:
        async with Client.connect(handle.address) as client:
            init = await client.create_container(cid, str(counter))
            execd = await client.add_process(cid, EXEC_COUNTER)
            await wait_for_lines(client, cid, 20)
        old_server = server_pid(handle)

        done = await trio.to_thread.run_sync(upgrade, state_dir)
        assert done.returncode == 0, done.stderr
        assert f"upgraded: reaper pid {handle.pid} " in done.stdout
        status = json.loads((state_dir / "reaper.json").read_text())
        assert status["pid"] == handle.pid and status["serving"]
        assert server_pid(handle) == status["server_pid"] != old_server
        assert handle.process.returncode is None, "the reaper must keep its pid across the upgrade"

        async with Client.connect(handle.address) as client:
            [info] = await client.containers()
            assert sorted(p.pid for p in info.processes) == sorted([init, execd])
            at_upgrade = len((await output_of(client, cid)).splitlines())
            await wait_for_lines(client, cid, at_upgrade + 50)  # output flows on into the log
            await wait_for_lines(client, cid, 20, pid=execd)
            os.kill(execd, 0)  # no SIGPIPE: the exec'd process outlived the old reaper's image

            await client.signal(cid, signal.SIGKILL)
            with trio.fail_after(30):
                while await client.containers():
                    await trio.sleep(0.05)  # the exit is reaped by the new image and published
            numbers = [int(line) for line in (await output_of(client, cid)).splitlines()]
            assert numbers == list(range(len(numbers))), "a line went missing across the upgrade"
            # What wait_for_lines saw, at least: the kill may come before the counter's next line.
            assert len(numbers) >= at_upgrade + 50
            exec_lines = (await output_of(client, cid, execd)).splitlines()
            assert exec_lines == [f"x{n}" for n in range(len(exec_lines))]
        assert "upgraded from" in handle.log_text()
    finally:
        await stop_daemon(handle)


def test_upgrade_without_a_running_daemon_says_so(tmp_path: Path) -> None:
    done = upgrade(tmp_path)
    assert done.returncode == 1
    assert "no running reaper found" in done.stderr
