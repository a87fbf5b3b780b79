"""The destination's side of a migration in-process: a fake supervisor stands for the actors.

The e2e tests (tests/e2e/test_migrate.py) cover what real daemons do; these cover the paths that
need a failure at a precise point: a commit whose reply the source never got, chunks missing or
altered, a source whose connection closes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from support.certs import make_test_certs

from containerd_actors import protocol as wire
from containerd_actors.daemon.mailbox import Ask, CommandError, answer, fail
from containerd_actors.daemon.migration import bulk
from containerd_actors.daemon.migration.chunks import SourceFile, digest_of_digests, plan_chunks
from containerd_actors.daemon.migration.destination import IncomingMigrations
from containerd_actors.daemon.state.layout import prepare_state_dir
from containerd_actors.protocol import ErrorCode, EventType, MigrationChunk
from containerd_actors.transport.tls import TlsFiles


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
async def destination(
    tmp_path: Path, tls: TlsFiles | None = None, idle_timeout: float = 120.0
) -> AsyncIterator[Setup]:
    state_dir = tmp_path / "state"
    prepare_state_dir(state_dir)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    supervisor = FakeSupervisor()
    to_supervisor, supervisor_box = trio.open_memory_channel[Any](10)
    to_events, events = trio.open_memory_channel[Any](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.serve, supervisor_box)
        incoming = IncomingMigrations(
            state_dir,
            "parent-b",
            to_supervisor,
            to_events,
            idle_timeout,
            tls=tls,
            local_address=lambda _pipe: "127.0.0.1:1",
        )
        if tls is not None:
            nursery.start_soon(incoming.run)
            await trio.testing.wait_all_tasks_blocked()
        yield Setup(incoming, supervisor, events, state_dir, rootfs)
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


# ---------------------------------------------------------------------- the bulk channel


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    return make_test_certs(tmp_path_factory.mktemp("certs"))


def source_files(directory: Path) -> list[SourceFile]:
    directory.mkdir()
    found = []
    for (kind, name), data in FILES.items():
        (directory / name).write_bytes(data)
        found.append(SourceFile(kind, name, directory / name))
    big = directory / "pages-2.img"
    big.write_bytes(os.urandom(3 * bulk.BULK_CHUNK_BYTES + 5))
    found.append(SourceFile("image", big.name, big))
    return found


def refused(tls: TlsFiles, port: int, secret: str) -> bool:
    """True when the listener turns this connection away (at the handshake, or right after)."""
    try:
        bulk.connect(tls, "localhost", port, secret).close()
    except (OSError, bulk.BulkError):
        return True
    return False


def port_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_the_images_come_on_the_bulk_channel_and_strangers_are_turned_away(
    tmp_path: Path, certs: dict[str, TlsFiles]
) -> None:
    async with destination(tmp_path, certs["server"]) as setup:
        began = await setup.incoming.begin(begin(setup), "admin", pipe=7)
        assert began.bulk_port > 0 and began.bulk_secret
        port = began.bulk_port
        # A CA it does not know, the CA's certificate of another client, a wrong secret: each is
        # closed, and the listener waits for the next.
        assert await trio.to_thread.run_sync(refused, certs["stranger"], port, began.bulk_secret)
        assert await trio.to_thread.run_sync(refused, certs["reader"], port, began.bulk_secret)
        assert await trio.to_thread.run_sync(refused, certs["admin"], port, "0" * 32)
        conn = await trio.to_thread.run_sync(
            bulk.connect, certs["admin"], "localhost", port, began.bulk_secret
        )
        plans = plan_chunks(source_files(tmp_path / "source"), bulk.BULK_CHUNK_BYTES)
        with conn:
            digests, sent = await trio.to_thread.run_sync(bulk.send_chunks, conn, plans)
        assert sent == sum(p.length for p in plans)
        commit = wire.MigrationCommit("r-9", "m01", len(plans), digest_of_digests(digests), 0.0)
        reply = await setup.incoming.commit(commit, "admin")
        assert reply.pid == 4242
        assert await trio.to_thread.run_sync(port_closed, port)


async def test_an_abort_closes_the_bulk_listener(tmp_path: Path, certs: dict[str, TlsFiles]) -> None:
    async with destination(tmp_path, certs["server"]) as setup:
        began = await setup.incoming.begin(begin(setup), "admin", pipe=7)
        await setup.incoming.abort(wire.MigrationAbort("r-2", "m01"))
        with trio.fail_after(5):
            while not await trio.to_thread.run_sync(port_closed, began.bulk_port):
                await trio.sleep(0.05)
        assert list((setup.state_dir / "incoming").iterdir()) == []


async def test_a_quiet_source_is_dropped_and_its_bulk_listener_closed(
    tmp_path: Path, certs: dict[str, TlsFiles]
) -> None:
    async with destination(tmp_path, certs["server"], idle_timeout=0.2) as setup:
        began = await setup.incoming.begin(begin(setup), "admin", pipe=7)
        with trio.fail_after(10):  # the sweep (every second) drops it
            while not await trio.to_thread.run_sync(port_closed, began.bulk_port):
                await trio.sleep(0.05)
            while list((setup.state_dir / "incoming").iterdir()):
                await trio.sleep(0.05)


async def test_a_stream_cut_midway_fails_the_commit(tmp_path: Path, certs: dict[str, TlsFiles]) -> None:
    async with destination(tmp_path, certs["server"]) as setup:
        began = await setup.incoming.begin(begin(setup), "admin", pipe=7)
        conn = await trio.to_thread.run_sync(
            bulk.connect, certs["admin"], "localhost", began.bulk_port, began.bulk_secret
        )
        with conn:
            header = {"seq": 0, "kind": "image", "name": "pages-1.img", "offset": 0, "length": 100}
            header["sha256"] = "0" * 64
            bulk.send_record(conn, header)
            conn.sendall(b"x" * 10)
        commit = wire.MigrationCommit("r-9", "m01", 1, "0" * 64, 0.0)
        with pytest.raises(CommandError, match="bulk channel failed"):
            await setup.incoming.commit(commit, "admin")
        assert setup.supervisor.created == []
        assert list((setup.state_dir / "incoming").iterdir()) == []
