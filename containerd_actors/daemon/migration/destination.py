"""The destination's side of a live migration: receive the parts, check them, restore, or drop.

``IncomingMigrations`` is owned by the API server's tasks (like the Ping and ReadOutput paths, it
serves requests without a container actor: there is no container yet). Everything runs in the one
trio thread, so its table needs no lock; a chunk is one ``pwrite`` into a file of its own
migration's directory. The restore itself is an ordinary ``CreateContainer`` from a checkpoint,
sent to the supervisor, so the container that arrives is started, supervised, logged and recovered
like any other.

Where things go: the parts arrive in ``<state>/incoming/<token>/`` (emptied at start-up: a daemon
killed while receiving leaves nothing behind); at the commit they become the bundle
``<state>/migrated/<id>.<token>/``: the source's ``config.json`` with the rootfs at its absolute
path (or the copied one) and ``linux.cgroupsPath`` under this daemon's cgroup parent, and the
images as its checkpoint ``migrated``, removed once the container runs.

Why one module of ~500 lines: the table of migrations in progress and every step that changes
it (begin, chunk, commit, abort, the idle timeout, the start-up sweep) are one state machine;
what does not touch the table (the page relay, the chunks' files, the peer link) lives beside it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from containerd_actors import protocol as wire
from containerd_actors.daemon.container.checkpoint import checkpoints_dir, publish_checkpoint
from containerd_actors.daemon.events.messages import EventDraft, EventsMailbox
from containerd_actors.daemon.mailbox import CommandError, forward
from containerd_actors.daemon.state.layout import incoming_dir, migrated_bundle
from containerd_actors.daemon.supervisor.messages import SupervisorMailbox
from containerd_actors.protocol import Checkpoint, ErrorCode, EventType
from containerd_actors.protocol.migration import MigrationChunk
from containerd_actors.transport.nng import pipe_local_address
from containerd_actors.transport.tls import TlsFiles, host_of

# The bulk channel, the page relay, the chunks' digests and tarfile are imported where a migration
# arriving uses them: a server that no migration reaches never does (they bring hashlib's OpenSSL,
# ssl, secrets: ~2 MiB of every idle server).
if TYPE_CHECKING:
    from containerd_actors.daemon.migration.bulk import BulkReceiver
    from containerd_actors.daemon.migration.pagerelay import PageServerOutcome, PageServerRelay

log = logging.getLogger(__name__)

#: The checkpoint name the images are restored from, inside the migrated bundle.
CHECKPOINT_NAME = "migrated"
#: A migration whose source went quiet this long is dropped (its source died, or lost us without
#: the connection closing here: a host that vanishes sends no reset). The dump happens between the
#: Begin and the first chunk, so this must exceed the longest dump (``--migration-idle-timeout``),
#: or, when the pages stream through the page relay, the longest pause in their stream.
IDLE_TIMEOUT_S = 120.0
#: How often idle migrations are looked for.
SWEEP_INTERVAL_S = 1.0
#: How long an abort waits for a container it killed to be gone before removing its bundle.
KILLED_GONE_TIMEOUT_S = 10.0
#: How long a commit waits for the bulk channel's worker to hand over what it received (the
#: source commits only once the worker has said that every chunk is in: this is a moment).
BULK_HANDOVER_TIMEOUT_S = 30.0


@attrs.define
class Incoming:
    begin: wire.MigrationBegin
    source: str | None
    directory: Path
    #: The connection the source began on (0: unknown): when it closes, the source is gone.
    pipe: int = 0
    digests: dict[int, str] = attrs.Factory(dict)
    files: dict[Path, int] = attrs.Factory(dict)
    last_heard: float = attrs.Factory(time.monotonic)
    #: Set once the commit has restored the container.
    pid: int | None = None
    bundle: Path | None = None
    committing: bool = False
    #: The bulk channel's listener and stream, while it runs; ``bulk_done`` is set when it ends,
    #: ``bulk_error`` says why it failed.
    bulk: BulkReceiver | None = None
    bulk_done: trio.Event = attrs.Factory(trio.Event)
    bulk_error: str | None = None
    #: The page relay (``pagerelay.py``) and its page server, while they run; ``pages_done`` is set
    #: when they end, ``pages_error`` says why they failed (the source used them, and they failed).
    pages: PageServerRelay | None = None
    pages_done: trio.Event = attrs.Factory(trio.Event)
    pages_error: str | None = None
    #: Set when the source streamed its pages through the page relay.
    pages_streamed: bool = False

    def close_files(self) -> None:
        for fd in self.files.values():
            os.close(fd)
        self.files.clear()

    def heard(self) -> None:
        """The source is alive (called from the bulk channel's worker thread too: one store)."""
        self.last_heard = time.monotonic()


class IncomingMigrations:
    def __init__(
        self,
        state_dir: Path,
        cgroup_parent: str,
        supervisor: SupervisorMailbox,
        events: EventsMailbox,
        idle_timeout: float = IDLE_TIMEOUT_S,
        tls: TlsFiles | None = None,
        local_address: Callable[[int], str | None] = pipe_local_address,
    ) -> None:
        """With ``tls`` (the daemon's ``--tls-*`` files), a source that began over TLS is offered
        the bulk channel (``bulk.py``) on the host of ``local_address(pipe)``, the address it reached."""
        self._state_dir = state_dir
        self._tls = tls
        self._local_address = local_address
        self._nursery: trio.Nursery | None = None
        self._idle_timeout = idle_timeout
        self._cgroup_parent = cgroup_parent
        self._supervisor = supervisor
        self._events = events
        self._table: dict[str, Incoming] = {}

    # ------------------------------------------------------------------ requests

    async def begin(
        self, request: wire.MigrationBegin, by: str | None, pipe: int = 0
    ) -> wire.MigrationBeginReply:
        self.drop_idle()
        if request.token in self._table:
            raise CommandError(ErrorCode.ALREADY_EXISTS, f"migration {request.token} has begun already")
        containers = await forward(self._supervisor, wire.State(request.request_id))
        if any(info.id == request.id for info in containers):
            raise CommandError(ErrorCode.ALREADY_EXISTS, f"a container {request.id!r} already runs here")
        if self._incoming_for(request.id) is not None:
            raise CommandError(ErrorCode.ALREADY_EXISTS, f"container {request.id!r} is already arriving here")
        if not request.rootfs_copy and not Path(request.rootfs).is_dir():
            raise CommandError(
                ErrorCode.INVALID_BUNDLE,
                f"the rootfs {request.rootfs} does not exist on this host (copy it, or use --rootfs-copy)",
            )
        directory = incoming_dir(self._state_dir, request.token)
        directory.mkdir(mode=0o700, parents=True)
        (directory / "images").mkdir(mode=0o700)
        incoming = self._table[request.token] = Incoming(request, by, directory, pipe)
        log.info(
            "migration %s: container %s arriving from %s", request.token, request.id, by or "a local client"
        )
        bulk = self._open_bulk(incoming)
        if bulk is None:
            incoming.bulk_done.set()
        pages = self._open_page_relay(incoming, bulk.secret) if bulk is not None else None
        if pages is None:
            incoming.pages_done.set()
        return wire.MigrationBeginReply(
            request.request_id,
            str(migrated_bundle(self._state_dir, request.id, request.token)),
            bulk.port if bulk else 0,
            bulk.secret if bulk else "",
            pages.port if pages else 0,
        )

    def _open_bulk(self, incoming: Incoming) -> BulkReceiver | None:
        """The bulk channel for a source that came over TLS, on the address it reached."""
        if self._tls is None or self._nursery is None or not incoming.source or not incoming.pipe:
            return None
        local = self._local_address(incoming.pipe)
        if local is None:
            return None
        from containerd_actors.daemon.migration.bulk import BulkReceiver

        token = incoming.begin.token
        try:
            bulk = BulkReceiver(
                self._tls,
                host_of(f"tls+tcp://{local}"),
                token,
                incoming.source,
                lambda kind, name: self._file_path(incoming, kind, name),
                incoming.heard,
            )
        except (OSError, ValueError) as exc:
            log.warning("migration %s: no bulk channel (%s); the images come over the API", token, exc)
            return None
        incoming.bulk = bulk
        self._nursery.start_soon(self._run_bulk, incoming, bulk)
        return bulk

    def _open_page_relay(self, incoming: Incoming, secret: str) -> PageServerRelay | None:
        """The page relay beside the bulk channel (same host, same secret): the source may stream
        its dump's pages into a ``criu page-server`` here, which starts once the source connects."""
        assert self._tls is not None and self._nursery is not None and incoming.source
        local = self._local_address(incoming.pipe)
        if local is None:
            return None
        from containerd_actors.daemon.migration.pagerelay import PageServerRelay

        token = incoming.begin.token
        try:
            pages = PageServerRelay(
                self._tls,
                host_of(f"tls+tcp://{local}"),
                token,
                incoming.source,
                secret,
                incoming.directory / "images",
                incoming.directory,
                incoming.heard,
            )
        except (OSError, ValueError) as exc:
            log.warning("migration %s: no page relay (%s); the pages come after the dump", token, exc)
            return None
        incoming.pages = pages
        self._nursery.start_soon(self._run_page_relay, incoming, pages)
        return pages

    async def _run_page_relay(self, incoming: Incoming, pages: PageServerRelay) -> None:
        from containerd_actors.daemon.migration.pagerelay import RelayError

        token = incoming.begin.token
        try:
            outcome: PageServerOutcome | None = await trio.to_thread.run_sync(
                pages.run, abandon_on_cancel=True
            )
        except (RelayError, OSError, ValueError) as exc:
            log.warning("migration %s: the page relay failed: %s", token, exc)
            if pages.connected.is_set():
                incoming.pages_error = f"the page relay failed: {exc}"
        else:
            if outcome is not None and outcome.returncode != 0:
                incoming.pages_error = (
                    f"the page server failed (exit {outcome.returncode}): {outcome.said or 'no reason given'}"
                )
                log.warning("migration %s: %s", token, incoming.pages_error)
            elif outcome is not None:
                incoming.pages_streamed = True
                log.info(
                    "migration %s: %d bytes of pages arrived through the page server while the source dumped",
                    token,
                    outcome.received,
                )
        finally:
            pages.stop()
            incoming.pages = None
            incoming.pages_done.set()

    async def _run_bulk(self, incoming: Incoming, bulk: BulkReceiver) -> None:
        from containerd_actors.daemon.migration.bulk import BulkError

        token = incoming.begin.token
        try:
            digests = await trio.to_thread.run_sync(bulk.run, abandon_on_cancel=True)
        except (BulkError, OSError, ValueError) as exc:
            log.warning("migration %s: the bulk channel failed: %s", token, exc)
            if bulk.connected.is_set():  # else the source sends its chunks over the API
                incoming.bulk_error = f"the bulk channel failed: {exc}"
        else:
            incoming.digests.update(digests)
            if digests:
                log.info("migration %s: %d chunks arrived on the bulk channel", token, len(digests))
        finally:
            bulk.stop()
            incoming.bulk = None
            incoming.bulk_done.set()

    async def run(self) -> None:
        """Drop idle migrations, and run the bulk channels' workers, for as long as the API server
        runs; the channels still open when it stops are closed."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self.sweep()
        finally:
            self._nursery = None
            for incoming in self._table.values():
                if incoming.bulk is not None:
                    incoming.bulk.stop()
                if incoming.pages is not None:
                    incoming.pages.stop()

    def chunk(self, request: MigrationChunk, data: memoryview) -> wire.MigrationChunkReply:
        """Write one checked chunk (the codec checked its sha256) where its file goes."""
        incoming = self._get(request.token)
        if incoming.committing or incoming.pid is not None:
            raise CommandError(ErrorCode.INVALID_STATE, f"migration {request.token} is committed already")
        incoming.last_heard = time.monotonic()
        path = self._file_path(incoming, request.kind, request.name)
        fd = incoming.files.get(path)
        if fd is None:
            fd = incoming.files[path] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        written = os.pwrite(fd, data, request.offset)
        if written != len(data):
            raise CommandError(ErrorCode.RUNTIME_FAILED, f"short write to {path}: {written} of {len(data)}")
        incoming.digests[request.seq] = request.sha256
        return wire.MigrationChunkReply(request.request_id)

    async def commit(self, request: wire.MigrationCommit, by: str | None) -> wire.MigrationCommitReply:
        incoming = self._get(request.token)
        if incoming.committing:
            raise CommandError(ErrorCode.INVALID_STATE, f"migration {request.token} is being committed")
        incoming.committing = True
        incoming.close_files()
        begin = incoming.begin
        try:
            await self._bulk_handed_over(incoming)
            await self._pages_written(incoming)
            self._check_whole(incoming, request)
            bundle = await self._make_bundle(incoming)
        except BaseException:
            self._forget(request.token)
            raise
        incoming.bundle = bundle
        started = time.monotonic()
        try:
            pid = await forward(
                self._supervisor,
                wire.CreateContainer(request.request_id, begin.id, str(bundle), CHECKPOINT_NAME),
                by,
            )
        except CommandError as error:
            self._forget(request.token)
            raise CommandError(error.code, f"restore at the destination failed: {error.message}") from None
        restore_s = time.monotonic() - started
        incoming.pid = pid
        incoming.last_heard = time.monotonic()
        # The images and the received parts served their purpose.
        shutil.rmtree(checkpoints_dir(bundle), ignore_errors=True)
        shutil.rmtree(incoming.directory, ignore_errors=True)
        frozen = f" frozen={time.time() - request.frozen_at:.3f}s" if request.frozen_at else ""
        await self._events.send(
            EventDraft(EventType.MIGRATE_IN, begin.id, pid, reason=f"from={by or 'local'}{frozen}", by=by)
        )
        log.info("migration %s: container %s runs here as pid %d", request.token, begin.id, pid)
        return wire.MigrationCommitReply(request.request_id, pid, restore_s)

    async def abort(self, request: wire.MigrationAbort) -> wire.MigrationAbortReply:
        incoming = self._table.get(request.token)
        if incoming is None:
            return wire.MigrationAbortReply(request.request_id, False)
        log.warning(
            "migration %s aborted by its source: %s", request.token, request.reason or "no reason given"
        )
        removed = False
        if incoming.pid is not None:
            removed = await self._remove_restored(incoming, request.request_id)
            if removed and incoming.bundle is not None:
                shutil.rmtree(incoming.bundle, ignore_errors=True)
        self._forget(request.token)
        return wire.MigrationAbortReply(request.request_id, removed)

    async def sweep(self) -> None:
        """Drop idle migrations every ``SWEEP_INTERVAL_S``, for as long as the API server runs."""
        while True:
            await trio.sleep(SWEEP_INTERVAL_S)
            self.drop_idle()

    def connection_closed(self, pipe: int) -> None:
        """A source's connection closed: what it was sending will never be finished (a source
        that gives up on its own says so with ``MigrationAbort``, but one that died cannot)."""
        for token, incoming in list(self._table.items()):
            if incoming.pipe == pipe and incoming.pid is None and not incoming.committing:
                log.warning("migration %s: the source's connection closed; what it sent is removed", token)
                self._forget(token)

    # ------------------------------------------------------------------ helpers

    async def _bulk_handed_over(self, incoming: Incoming) -> None:
        """Wait for what the bulk channel received if the source used it; close it if not."""
        bulk = incoming.bulk
        if bulk is not None and not bulk.connected.is_set():
            bulk.stop()  # the source sent its chunks over the API
        with trio.move_on_after(BULK_HANDOVER_TIMEOUT_S):
            await incoming.bulk_done.wait()
        if not incoming.bulk_done.is_set():
            incoming.bulk_error = "the bulk channel did not finish"
        if incoming.bulk_error is not None:
            raise CommandError(
                ErrorCode.INVALID_REQUEST, f"migration {incoming.begin.token}: {incoming.bulk_error}"
            )

    async def _pages_written(self, incoming: Incoming) -> None:
        """Wait for the page server to exit if the source streamed its pages; stop the relay if not.

        The source commits only after its dump succeeded, and a dump through a page server ends
        by waiting for the page server's word that all is flushed: this is a moment."""
        pages = incoming.pages
        if pages is not None and not pages.connected.is_set():
            pages.stop()  # the source dumped to disk; the pages come in the chunks
        with trio.move_on_after(BULK_HANDOVER_TIMEOUT_S):
            await incoming.pages_done.wait()
        if not incoming.pages_done.is_set():
            incoming.pages_error = "the page server did not finish"
        if incoming.pages_error is not None:
            raise CommandError(
                ErrorCode.RUNTIME_FAILED, f"migration {incoming.begin.token}: {incoming.pages_error}"
            )

    def _get(self, token: str) -> Incoming:
        incoming = self._table.get(token)
        if incoming is None:
            raise CommandError(ErrorCode.NOT_FOUND, f"no migration {token} here (never begun, or dropped)")
        return incoming

    def _incoming_for(self, id: str) -> Incoming | None:
        return next((i for i in self._table.values() if i.begin.id == id and i.pid is None), None)

    def _file_path(self, incoming: Incoming, kind: str, name: str) -> Path:
        if kind == "image":
            return incoming.directory / "images" / name
        if kind == "config":
            return incoming.directory / "config.json"
        return incoming.directory / "rootfs.tar"

    def _check_whole(self, incoming: Incoming, request: wire.MigrationCommit) -> None:
        from containerd_actors.daemon.migration.chunks import digest_of_digests

        missing = [seq for seq in range(request.chunks) if seq not in incoming.digests]
        if missing or len(incoming.digests) != request.chunks:
            raise CommandError(
                ErrorCode.INVALID_REQUEST,
                f"migration {request.token}: {len(missing)} of {request.chunks} chunks missing"
                f" (first {missing[:5]})",
            )
        whole = digest_of_digests([incoming.digests[seq] for seq in range(request.chunks)])
        if whole != request.sha256:
            raise CommandError(
                ErrorCode.INVALID_REQUEST, f"migration {request.token}: the whole's sha256 does not match"
            )

    async def _make_bundle(self, incoming: Incoming) -> Path:
        """The received parts as a bundle of this daemon, with the images as its checkpoint."""
        begin = incoming.begin
        bundle = migrated_bundle(self._state_dir, begin.id, begin.token)
        bundle.mkdir(mode=0o700, parents=True)
        try:
            config = json.loads((incoming.directory / "config.json").read_text())
            if begin.rootfs_copy:
                rootfs = bundle / "rootfs"
                rootfs.mkdir(mode=0o755)
                await trio.to_thread.run_sync(_extract, incoming.directory / "rootfs.tar", rootfs)
                config.setdefault("root", {})["path"] = str(rootfs)
            else:
                config.setdefault("root", {})["path"] = begin.rootfs
            linux = config.setdefault("linux", {})
            linux["cgroupsPath"] = f"/{self._cgroup_parent}/{begin.id}"
            (bundle / "config.json").write_text(json.dumps(config))
            checkpoints_dir(bundle).mkdir(mode=0o700)
            images = checkpoints_dir(bundle) / f".{CHECKPOINT_NAME}.incoming"
            os.rename(incoming.directory / "images", images)
            publish_checkpoint(
                bundle,
                images,
                Checkpoint(CHECKPOINT_NAME, begin.tcp, False, False, True, time.time()),
                begin.terminal,
            )
        except BaseException:
            shutil.rmtree(bundle, ignore_errors=True)
            raise
        return bundle

    async def _remove_restored(self, incoming: Incoming, request_id: str) -> bool:
        """Kill a container this migration restored (the source never heard that it runs)."""
        id = incoming.begin.id
        try:
            await forward(self._supervisor, wire.Signal(request_id, id, 0, signal.SIGKILL))
        except CommandError as exc:
            log.warning("migration %s: could not kill %s: %s", incoming.begin.token, id, exc.message)
            return False
        with trio.move_on_after(KILLED_GONE_TIMEOUT_S):
            while any(info.id == id for info in await forward(self._supervisor, wire.State(request_id))):
                await trio.sleep(0.05)
        return True

    def _forget(self, token: str) -> None:
        incoming = self._table.pop(token, None)
        if incoming is None:
            return
        incoming.close_files()
        if incoming.bulk is not None:
            incoming.bulk.stop()
        if incoming.pages is not None:
            incoming.pages.stop()
        shutil.rmtree(incoming.directory, ignore_errors=True)
        if incoming.bundle is not None and incoming.pid is None:
            shutil.rmtree(incoming.bundle, ignore_errors=True)  # made, but nothing runs from it

    def drop_idle(self) -> None:
        now = time.monotonic()
        for token, incoming in list(self._table.items()):
            # A restored one is kept a while only so that a late abort can still remove it.
            if (
                incoming.pid is not None or not incoming.committing
            ) and now - incoming.last_heard > self._idle_timeout:
                log.warning("migration %s: its source went quiet; dropped", token)
                self._forget(token)


def _extract(tar_path: Path, target: Path) -> None:
    import tarfile

    with tarfile.open(tar_path) as tar:
        tar.extractall(target, numeric_owner=True, filter="tar")
