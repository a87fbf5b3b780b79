"""The destination's side of a migration in-process: a fake supervisor stands for the actors.

The e2e tests (tests/e2e/test_migrate.py) cover what real daemons do; these cover the paths that
need a failure at a precise point: a commit whose reply the source never got, chunks missing or
altered, a source whose connection closes.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from containerd_actors import protocol as wire
from containerd_actors.daemon.mailbox import Ask, CommandError, answer, fail
from containerd_actors.daemon.migration.chunks import digest_of_digests
from containerd_actors.daemon.migration.destination import IncomingMigrations
from containerd_actors.daemon.state.layout import prepare_state_dir
from containerd_actors.protocol import ErrorCode, EventType, MigrationChunk


@attrs.define
class FakeSupervisor:
    """Answers State from ``running`` and starts (CreateContainer) and kills (Signal) there."""

    running: dict[str, int] = attrs.Factory(dict)
    created: list[wire.CreateContainer] = attrs.Factory(list)
    refuse_start: str | None = None

    async def serve(self, mailbox: trio.MemoryReceiveChannel[Any]) -> None:
        async for ask in mailbox:
            assert isinstance(ask, Ask)
            match ask.request:
                case wire.State():
                    answer(
                        ask.reply_to,
                        [wire.ContainerInfo(id, "", "running", pid, []) for id, pid in self.running.items()],
                    )
                case wire.CreateContainer() as request:
                    self.created.append(request)
                    if self.refuse_start:
                        fail(ask.reply_to, CommandError(ErrorCode.RUNTIME_FAILED, self.refuse_start))
                    else:
                        self.running[request.id] = 4242
                        answer(ask.reply_to, 4242)
                case wire.Signal(id=id, signal=signal.SIGKILL):
                    self.running.pop(id)
                    answer(ask.reply_to, None)


@attrs.frozen
class Setup:
    incoming: IncomingMigrations
    supervisor: FakeSupervisor
    events: trio.MemoryReceiveChannel[Any]
    state_dir: Path
    rootfs: Path


@asynccontextmanager
async def destination(tmp_path: Path) -> AsyncIterator[Setup]:
    state_dir = tmp_path / "state"
    prepare_state_dir(state_dir)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    supervisor = FakeSupervisor()
    to_supervisor, supervisor_box = trio.open_memory_channel[Any](10)
    to_events, events = trio.open_memory_channel[Any](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.serve, supervisor_box)
        yield Setup(
            IncomingMigrations(state_dir, "parent-b", to_supervisor, to_events),
            supervisor,
            events,
            state_dir,
            rootfs,
        )
        nursery.cancel_scope.cancel()


def begin(setup: Setup, token: str = "m01") -> wire.MigrationBegin:
    return wire.MigrationBegin("r-1", token, "web", "/bundles/web", str(setup.rootfs))


def chunks_of(token: str, files: dict[tuple[str, str], bytes]) -> list[tuple[MigrationChunk, bytes]]:
    found = []
    for seq, ((kind, name), data) in enumerate(files.items()):
        found.append(
            (MigrationChunk(f"r-c{seq}", token, seq, kind, name, 0, hashlib.sha256(data).hexdigest()), data)
        )
    return found


FILES = {
    ("image", "inventory.img"): b"inventory",
    ("image", "pages-1.img"): b"\0" * 100,
    ("config", "config.json"): json.dumps({"root": {"path": "rootfs"}, "linux": {}}).encode(),
}


def commit_for(token: str, chunks: list[tuple[MigrationChunk, bytes]]) -> wire.MigrationCommit:
    return wire.MigrationCommit(
        "r-9", token, len(chunks), digest_of_digests([c.sha256 for c, _ in chunks]), 0.0
    )


async def test_a_commit_restores_from_a_bundle_of_its_own_under_the_cgroup_parent(tmp_path: Path) -> None:
    async with destination(tmp_path) as setup:
        await setup.incoming.begin(begin(setup), "daemon-a", pipe=7)
        chunks = chunks_of("m01", FILES)
        for chunk, data in reversed(chunks):  # out of order, as several in flight arrive
            setup.incoming.chunk(chunk, memoryview(data))
        reply = await setup.incoming.commit(commit_for("m01", chunks), "daemon-a")
        assert reply.pid == 4242
        [created] = setup.supervisor.created
        bundle = Path(created.bundle)
        config = json.loads((bundle / "config.json").read_text())
        assert config["root"]["path"] == str(setup.rootfs)
        assert config["linux"]["cgroupsPath"] == "/parent-b/web"
        assert (
            created.checkpoint == "migrated" and not (bundle / "checkpoints").exists()
        )  # images gone once it runs
        event = setup.events.receive_nowait()
        assert (event.type, event.id, event.pid, event.by) == (EventType.MIGRATE_IN, "web", 4242, "daemon-a")
        assert list((setup.state_dir / "incoming").iterdir()) == []


async def test_an_abort_after_a_commit_whose_reply_was_lost_removes_the_container(tmp_path: Path) -> None:
    async with destination(tmp_path) as setup:
        await setup.incoming.begin(begin(setup), "daemon-a")
        chunks = chunks_of("m01", FILES)
        for chunk, data in chunks:
            setup.incoming.chunk(chunk, memoryview(data))
        await setup.incoming.commit(commit_for("m01", chunks), "daemon-a")
        bundle = Path(setup.supervisor.created[0].bundle)
        aborted = await setup.incoming.abort(
            wire.MigrationAbort("r-10", "m01", "the commit's reply never came")
        )
        assert aborted.removed_container and setup.supervisor.running == {}
        assert not bundle.exists()
        # An abort of a migration this daemon does not know (a new server after a crash) is fine.
        assert not (await setup.incoming.abort(wire.MigrationAbort("r-11", "m02"))).removed_container


@pytest.mark.parametrize("damage", ["missing", "altered-whole"])
async def test_a_commit_that_does_not_add_up_is_refused_and_forgotten(tmp_path: Path, damage: str) -> None:
    async with destination(tmp_path) as setup:
        await setup.incoming.begin(begin(setup), "daemon-a")
        chunks = chunks_of("m01", FILES)
        for chunk, data in chunks[: -1 if damage == "missing" else None]:
            setup.incoming.chunk(chunk, memoryview(data))
        commit = commit_for("m01", chunks)
        if damage == "altered-whole":
            commit = attrs.evolve(commit, sha256="0" * 64)
        with pytest.raises(CommandError) as refused:
            await setup.incoming.commit(commit, "daemon-a")
        assert refused.value.code == ErrorCode.INVALID_REQUEST
        assert setup.supervisor.created == []
        assert list((setup.state_dir / "incoming").iterdir()) == []
        assert list((setup.state_dir / "migrated").iterdir()) == []


async def test_a_failed_restore_leaves_nothing(tmp_path: Path) -> None:
    async with destination(tmp_path) as setup:
        setup.supervisor.refuse_start = "criu failed"
        await setup.incoming.begin(begin(setup), "daemon-a")
        chunks = chunks_of("m01", FILES)
        for chunk, data in chunks:
            setup.incoming.chunk(chunk, memoryview(data))
        with pytest.raises(CommandError) as failed:
            await setup.incoming.commit(commit_for("m01", chunks), "daemon-a")
        assert "restore at the destination failed: criu failed" in failed.value.message
        assert list((setup.state_dir / "incoming").iterdir()) == []
        assert list((setup.state_dir / "migrated").iterdir()) == []


async def test_the_source_connection_closing_drops_what_it_sent(tmp_path: Path) -> None:
    async with destination(tmp_path) as setup:
        await setup.incoming.begin(begin(setup), "daemon-a", pipe=7)
        chunk, data = chunks_of("m01", FILES)[0]
        setup.incoming.chunk(chunk, memoryview(data))
        setup.incoming.connection_closed(8)  # another client's connection: nothing happens
        assert len(list((setup.state_dir / "incoming").iterdir())) == 1
        setup.incoming.connection_closed(7)
        assert list((setup.state_dir / "incoming").iterdir()) == []
        with pytest.raises(CommandError) as gone:
            setup.incoming.chunk(chunk, memoryview(data))
        assert gone.value.code == ErrorCode.NOT_FOUND


async def test_begin_refuses_an_id_in_use_and_a_missing_rootfs(tmp_path: Path) -> None:
    async with destination(tmp_path) as setup:
        setup.supervisor.running["web"] = 1
        with pytest.raises(CommandError) as in_use:
            await setup.incoming.begin(begin(setup), "daemon-a")
        assert in_use.value.code == ErrorCode.ALREADY_EXISTS
        setup.supervisor.running.clear()
        with pytest.raises(CommandError) as missing:
            await setup.incoming.begin(attrs.evolve(begin(setup), rootfs="/nonexistent/rootfs"), "daemon-a")
        assert "does not exist on this host" in missing.value.message
        assert list((setup.state_dir / "incoming").iterdir()) == []


async def test_a_migration_whose_source_went_quiet_is_dropped(tmp_path: Path) -> None:
    async with destination(tmp_path) as setup:
        quiet = IncomingMigrations(setup.state_dir, "parent-b", *_mailboxes(setup), idle_timeout=0.0)
        await quiet.begin(begin(setup), "daemon-a")
        assert len(list((setup.state_dir / "incoming").iterdir())) == 1
        await trio.sleep(0.01)
        quiet.drop_idle()
        assert list((setup.state_dir / "incoming").iterdir()) == []


def _mailboxes(setup: Setup) -> tuple[Any, Any]:
    return setup.incoming._supervisor, setup.incoming._events  # the same fake actors
