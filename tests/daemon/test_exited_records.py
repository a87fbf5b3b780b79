"""Exited containers outlive the server that saw them exit: a new supervisor on the same state
directory (what a restarted server runs) serves their logs, statuses and checkpoints, and goes on
pruning the oldest, so their log directories stay bounded across restarts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.actors import Harness, running, write_bundle

from containerd_actors import protocol as wire
from containerd_actors.daemon.mailbox import CommandError
from containerd_actors.daemon.supervisor import actor as supervisor_actor
from containerd_actors.protocol import ErrorCode, EventType


def create(id: str, bundle: Path) -> wire.CreateContainer:
    return wire.CreateContainer(request_id=f"r-{id}", id=id, bundle=str(bundle))


async def run_to_exit(harness: Harness, id: str, bundle: Path) -> int:
    pid = await harness.ask(create(id, bundle))
    while (event := await harness.next_event()).type != EventType.EXIT:
        pass
    assert event.id == id
    return pid


async def output(harness: Harness, id: str, pid: int = 0) -> tuple[int, bytes, bytes, bool, int | None]:
    view = await harness.ask(wire.ReadOutput(request_id="r", id=id, pid=pid))
    chunk = await view.read(0, 0, wait=0, max_bytes=1 << 20)
    return view.pid, chunk.stdout, chunk.stderr, chunk.exited, chunk.status


async def test_a_new_server_serves_an_exited_containers_logs_status_and_checkpoints(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    bundle = write_bundle(tmp_path / "b", "sh", "-c", "echo out; echo err >&2; exit 3")
    checkpoint = bundle / "checkpoints" / "kept"
    checkpoint.mkdir(parents=True)
    metadata = {"tcp": True, "unix_sockets": False, "shell": False, "exit": True, "created": 1.0}
    (checkpoint / "checkpoint.json").write_text(json.dumps(metadata))
    async with running(Harness(state_dir)) as first:
        pid = await run_to_exit(first, "gone", bundle)
        before = await output(first, "gone")
        listed = await first.ask(wire.ListCheckpoints(request_id="r", id="gone"))
    assert before == (pid, b"out\n", b"err\n", True, 3)

    async with running(Harness(state_dir)) as second:
        assert await output(second, "gone") == before
        assert await second.ask(wire.ListCheckpoints(request_id="r", id="gone")) == listed
        assert [c.name for c in listed] == ["kept"]
        # The id is free: a new start replaces the exited container, and its record with it.
        await run_to_exit(second, "gone", write_bundle(tmp_path / "b2", "sh", "-c", "echo new"))
        assert (await output(second, "gone"))[1] == b"new\n"

    async with running(Harness(state_dir)) as third:
        assert (await output(third, "gone"))[1:] == (b"new\n", b"", True, 0)


async def test_the_oldest_exited_containers_are_pruned_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_actor, "KEPT_EXITED_CONTAINERS", 3)
    state_dir = tmp_path / "state"
    bundle = write_bundle(tmp_path / "b", "sh", "-c", "echo hi")
    async with running(Harness(state_dir)) as first:
        for n in range(3):
            await run_to_exit(first, f"c{n}", bundle)
    async with running(Harness(state_dir)) as second:
        for n in range(3, 5):
            await run_to_exit(second, f"c{n}", bundle)
        assert sorted(p.name for p in (state_dir / "logs").iterdir()) == ["c2", "c3", "c4"]
        with pytest.raises(CommandError) as failure:
            await output(second, "c1")
        assert failure.value.code == ErrorCode.NOT_FOUND
    async with running(Harness(state_dir)) as third:
        for n in (2, 3, 4):
            assert (await output(third, f"c{n}"))[1:] == (b"hi\n", b"", True, 0)
        await run_to_exit(third, "c5", bundle)
        assert sorted(p.name for p in (state_dir / "logs").iterdir()) == ["c3", "c4", "c5"]


async def test_log_directories_no_record_names_are_pruned_in_their_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older daemon's exited containers left log directories and no records: nothing serves
    them, but they count towards the kept exited containers, oldest first, so the disk is bounded."""
    monkeypatch.setattr(supervisor_actor, "KEPT_EXITED_CONTAINERS", 2)
    state_dir = tmp_path / "state"
    for n, mtime in ((0, 100.0), (1, 200.0)):
        old_logs = state_dir / "logs" / f"old{n}"
        old_logs.mkdir(parents=True)
        (old_logs / "stdout.log").write_bytes(b"from an older daemon\n")
        os.utime(old_logs, (mtime, mtime))
    bundle = write_bundle(tmp_path / "b", "sh", "-c", "echo hi")
    async with running(Harness(state_dir)) as harness:
        with pytest.raises(CommandError) as failure:
            await output(harness, "old1")
        assert failure.value.code == ErrorCode.NOT_FOUND and "no such container" in failure.value.message
        await run_to_exit(harness, "new0", bundle)
        assert sorted(p.name for p in (state_dir / "logs").iterdir()) == ["new0", "old1"]
        await run_to_exit(harness, "new1", bundle)
        assert sorted(p.name for p in (state_dir / "logs").iterdir()) == ["new0", "new1"]
