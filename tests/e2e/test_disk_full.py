"""A state directory that fills up, with the real daemon and real runc on a 2 MiB tmpfs.

A container writes 3 MB of output into a state directory that cannot hold it. It must stay
listed and killable, and its exit must be reported; a start while the directory is full must
fail at once with an error that names it; and once space is freed, the events journal must hold
every event in order with no gap in seq, and the container's log must say how many bytes it lost.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support.daemon import (
    DaemonHandle,
    remove_containers,
    short_temp_dir,
    start_daemon,
    stop_daemon,
    unique_id,
)

from containerd_actors.client import Client, RequestFailed
from containerd_actors.protocol import ErrorCode, EventType

REPO = Path(__file__).resolve().parents[2]
TMPFS_SIZE = 2 << 20
#: More than the tmpfs holds, whatever the daemon's own files take.
OUTPUT_BYTES = 3_000_000
#: Taken before the container starts and freed at the end: what "space is freed" means here.
FILLER_BYTES = 512 << 10
DEADLINE_S = 60.0
MARKER = re.compile(rb"\[(\d+) bytes lost: state dir full\]\n")
LINE = b"0123456789abcdef\n"


@pytest.fixture
def tmpfs_state_dir() -> Iterator[Path]:
    """A state directory on its own small tmpfs; skipped only where mounting one is refused."""
    top = short_temp_dir("ca-full-")
    state_dir = top / "state"
    state_dir.mkdir(mode=0o700)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(state_dir)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        shutil.rmtree(top, ignore_errors=True)
        pytest.skip(f"mounting a tmpfs is refused here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield state_dir
    finally:
        remove_containers(state_dir / "runc")
        subprocess.run(["umount", str(state_dir)], check=True)
        shutil.rmtree(top, ignore_errors=True)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def journal_on_disk(state_dir: Path) -> list[dict]:
    """Every event line in the journal's segment files, in file order."""
    events = []
    for segment in sorted((state_dir / "events").glob("*.jsonl")):
        events += [json.loads(line) for line in segment.read_bytes().splitlines()]
    return events


async def wait_for(condition, what: str, deadline: float = DEADLINE_S) -> None:
    """Poll a condition of the daemon's state with a deadline (never a fixed sleep)."""
    with trio.move_on_after(deadline):
        while not condition():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def read_stdout(client: Client, id: str) -> bytes:
    """All of a process's stdout log as it is now."""
    output = b""
    offset = 0
    while True:
        reply = await client.read_output(id, stdout_offset=offset)
        chunk = reply.stdout
        if not chunk:
            return output
        output += chunk
        offset = reply.next_stdout_offset


async def test_a_full_state_dir_keeps_containers_managed_and_nothing_is_lost_silently(
    tmpfs_state_dir: Path, bundle_factory
) -> None:
    state_dir = tmpfs_state_dir
    daemon: DaemonHandle = await start_daemon(state_dir)
    try:
        filler = state_dir / "filler"
        filler.write_bytes(b"f" * FILLER_BYTES)
        fill_bundle = bundle_factory(
            "sh", "-c", f"yes {LINE.decode().strip()} | head -c {OUTPUT_BYTES}; exec sleep 1000000"
        )
        other_bundle = bundle_factory("true")
        fill = unique_id("fill")
        async with Client.connect(daemon.address, timeout=60) as client:
            async with client.subscribe() as events:
                pid = await client.create_container(fill, str(fill_bundle))

                # The writer is done once the init has exec'd sleep: every byte went into the pipe.
                def wrote_everything() -> bool:
                    try:
                        return Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
                    except OSError:
                        return False

                await wait_for(wrote_everything, "the container to write its 3 MB")
                await wait_for(lambda: " is full " in daemon.log_text(), "the daemon to log a full state dir")
                assert free_bytes(state_dir) < FILLER_BYTES

                # Still managed: listed, running, in runc under the daemon's root.
                listed = {c.id: c for c in await client.containers()}
                assert fill in listed and listed[fill].status == "running" and listed[fill].pid == pid
                assert daemon.runc_ids() == [fill]

                # A start while full fails at once, naming the state dir and the reason.
                other = unique_id("refused")
                with trio.fail_after(5), pytest.raises(RequestFailed) as refused:
                    await client.create_container(other, str(other_bundle))
                assert refused.value.code == ErrorCode.RUNTIME_FAILED
                assert str(state_dir) in refused.value.message
                assert "no space left on device" in refused.value.message
                assert daemon.runc_ids() == [fill]
                assert not (state_dir / "containers" / other).exists()

                # Killable, and its exit is reported with its status.
                await client.signal(fill, signal.SIGKILL)
                with trio.fail_after(DEADLINE_S):
                    async for event in events:
                        if event.type == EventType.EXIT and event.id == fill:
                            break
                assert (event.pid, event.status) == (pid, 128 + signal.SIGKILL)
                assert await client.containers() == []
                assert daemon.runc_ids() == []

                # Space is freed: the waiting events are journalled, the log gets its marker.
                last_seq = (await client.ping()).last_event_seq
                assert last_seq == event.seq
                filler.unlink()
                await wait_for(
                    lambda: any(e["seq"] == last_seq for e in journal_on_disk(state_dir)),
                    "the waiting events to reach the journal",
                )
                on_disk = journal_on_disk(state_dir)
                assert [e["seq"] for e in on_disk] == list(range(1, last_seq + 1))
                mine = [(e["type"], e["pid"]) for e in on_disk if e["id"] == fill]
                assert mine == [(EventType.START_CONTAINER, pid), (EventType.EXIT, pid)]

                with trio.fail_after(DEADLINE_S):
                    output = await read_stdout(client, fill)
                    while MARKER.search(output) is None:  # it follows the room the daemon saw
                        await trio.sleep(0.05)
                        output = await read_stdout(client, fill)
            found = MARKER.search(output)
            assert found is not None
            lost = int(found.group(1))
            assert lost > 0
            assert output.endswith(found.group(0))  # the marker is where the bytes went missing
            before = output[: found.start()]
            stream = (LINE * (OUTPUT_BYTES // len(LINE) + 1))[:OUTPUT_BYTES]
            # The marker starts a line of its own: a newline may have been added before it, which
            # only the count can tell apart from the stream's own newline at the same place.
            kept = before if len(before) + lost == OUTPUT_BYTES else before[:-1]
            assert before == kept or before.endswith(b"\n")
            assert stream.startswith(kept)
            assert len(kept) + lost == OUTPUT_BYTES  # every byte is either in the log or counted
            shown = await trio.run_process(
                [
                    sys.executable,
                    "-m",
                    "ctl",
                    "--address",
                    daemon.address,
                    "containers",
                    "logs",
                    "--tail",
                    "1",
                    fill,
                ],
                capture_stdout=True,
                cwd=REPO,
            )
            assert shown.stdout == found.group(0)  # what `actr containers logs` shows last
            log_text = daemon.log_text()
            assert log_text.count(" is full ") == 1
            assert log_text.count("has room again:") == 1
            assert "crashed" not in log_text
    finally:
        await stop_daemon(daemon)
        print(f"---- daemon log ({daemon.log_path}) ----\n{daemon.log_text()}")
