"""The source's side of a live migration, run for the container's actor (which owns the container).

Order, and what a failure at each step leaves (the container always runs here until the
destination has confirmed that it runs there):

1. dial the destination and ``MigrationBegin``: it checks the id and the rootfs path. A failure
   here (a bad certificate, a missing path) happens before anything is frozen.
2. ``runc pause``, then ``runc checkpoint --leave-running``: CRIU freezes the freezer cgroup that
   is already frozen and leaves it so (it restores the freezer state it found), so the container
   stays frozen, not stopped, after the dump. A failed dump: thaw.
   Where the destination offers its page relay (``pagerelay.py``) and the source reached it
   before the freeze, the dump sends the memory pages there while it runs (``--page-server``):
   they never touch this disk, and their transfer overlaps the dump. Otherwise (no relay
   offered, or it could not be set up: said in the log), with ``keep_source`` (the kept
   checkpoint must hold the pages), and for a container under ``STREAM_MIN_BYTES`` of memory
   (for which streaming costs more than it saves), the dump goes to disk as a whole.
   Either way the container stays here, frozen, until the destination confirms: a dump whose
   page stream broke fails like any other, with the container still frozen, and is thawed.
3. send the images (with the page relay, only the small non-page ones), ``config.json`` (and
   the rootfs tar) in checksummed chunks, a few in flight.
4. ``MigrationCommit``: the destination restores and answers once the container runs.
5. the caller deletes the frozen copy (or, with ``keep_source``, keeps the dump as a checkpoint).

After the freeze, any failure first tells the destination ``MigrationAbort`` (on a new connection
if the old one is gone: a commit whose reply was lost may have restored the container there, and
the abort removes it), then thaws the container here.

Why freeze-and-keep rather than dump with ``--exit`` (issue 17, point 4): a frozen source is thawed
in one ``runc resume`` on failure, with its stdio, pids and logs untouched, whereas restoring a
dumped-and-exited container at the source is a second restore that can fail in its own ways. The
price is two copies at once on one host for a moment, so the destination restores under its own
cgroup parent (``--cgroup-parent``, by default from its ``--id``) and the two never claim one path.

One module (over 500 lines) on purpose: the steps above, in their order and with what each
failure leaves, are the contract; the transports they use (bulk channel, page relay, chunks,
peer) already live in modules of their own, and what is left here is that order.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import ssl
import tarfile
import time
import uuid
from pathlib import Path

import attrs
import trio

from containerd_actors import protocol as wire
from containerd_actors.daemon.container.checkpoint import (
    fresh_criu_work_dir,
    new_checkpoint_dir,
    publish_checkpoint,
)
from containerd_actors.daemon.container.deps import ContainerRuntime
from containerd_actors.daemon.mailbox import CommandError
from containerd_actors.daemon.migration import bulk
from containerd_actors.daemon.migration.chunks import (
    ChunkPlan,
    SourceFile,
    digest_of_digests,
    image_files,
    plan_chunks,
)
from containerd_actors.daemon.migration.pagerelay import RelayError, SourceRelay
from containerd_actors.daemon.migration.peer import Peer, PeerError
from containerd_actors.daemon.state.layout import MIGRATED, ContainerPaths
from containerd_actors.protocol import Checkpoint, ErrorCode
from containerd_actors.protocol.migration import MigrationChunk
from containerd_actors.runc import spawn
from containerd_actors.runc.bundle import read_bundle_config
from containerd_actors.runc.driver import CriuOptions, RuncError
from containerd_actors.transport.tls import TlsFiles, host_of

log = logging.getLogger(__name__)

#: Chunks in flight at once: enough to keep the link busy while the destination writes one.
CHUNKS_IN_FLIGHT = 4
#: The restore at the destination may take as long as a dump.
COMMIT_TIMEOUT_S = 300.0
#: How long the source tries to tell the destination it gave up.
ABORT_TIMEOUT_S = 10.0
#: A container with less memory than this is dumped to disk and sent after, not streamed: CRIU
#: 4.2's page-server client corks its socket and waits for the page server's last answer without
#: uncorking, so every streamed dump ends with the kernel's cork timeout (~0.2 s, in ``dump.log``
#: between "Disconnect from the page server" and the next line; the same with CRIU's own TCP page
#: server and no relay). That costs more than sending a small dump after it: measured here (a
#: loaded 2-core host, both daemons on it), 16 MiB froze ~0.3 s longer streamed, 64 MiB ~0.1 s
#: longer, 256 MiB ~0.35 s shorter. ``--migration-stream-min`` sets it (between two real hosts
#: the two ends' work no longer shares two cores, and streaming may pay from less).
STREAM_MIN_BYTES = 128 << 20
#: Why ``--pre-dump`` is refused where the kernel does not track dirty memory.
PRE_DUMP_NO_DIRTY_TRACKING = (
    "pre-dump rounds need the kernel to track dirty memory, and this one does not "
    '(criu check --feature mem_dirty_track: "Dirty tracking is OFF"); migrate without --pre-dump'
)
#: ... and where it does: the rounds are not built (they could not be tried on the machine this
#: was written on).
PRE_DUMP_NOT_BUILT = "pre-dump rounds are not implemented yet; migrate without --pre-dump"


async def pre_dump_refusal() -> str:
    """Why a ``--pre-dump`` is refused: CRIU's own check of the kernel says which reason applies."""
    try:
        checked = await spawn.run(["criu", "check", "--feature", "mem_dirty_track"], capture=True, timeout=30)
    except (OSError, spawn.SpawnTimeout):
        return PRE_DUMP_NO_DIRTY_TRACKING
    said = (checked.stdout + checked.stderr).decode(errors="replace")
    if checked.returncode != 0 or "OFF" in said:
        return PRE_DUMP_NO_DIRTY_TRACKING
    return PRE_DUMP_NOT_BUILT


class _PeerLost(CommandError):
    """The connection to the destination failed: an abort must go over a new one."""


def _failed(exc: PeerError, what: str) -> CommandError:
    kind = _PeerLost if exc.lost else CommandError
    return kind(_code(exc), f"{what}: {exc.message}")


@attrs.frozen
class SourceContainer:
    id: str
    bundle: Path
    paths: ContainerPaths
    terminal: bool
    #: Its cgroup's memory less page cache before the freeze (None: unknown), which decides
    #: whether its pages stream (from ``stream_min_mib``, or ``STREAM_MIN_BYTES``, up).
    memory_bytes: int | None = None
    stream_min_mib: int | None = None

    @property
    def stream_min_bytes(self) -> int:
        return STREAM_MIN_BYTES if self.stream_min_mib is None else self.stream_min_mib << 20


def forget_migrated_bundle(state_dir: Path, bundle: Path) -> None:
    """A container that arrived here by migration and left again leaves its bundle behind, made by
    this daemon (with a copied rootfs, perhaps): removed. A user's bundle is never touched."""
    if bundle.parent == state_dir / MIGRATED:
        shutil.rmtree(bundle, ignore_errors=True)


def rootfs_of(bundle: Path) -> Path:
    """The bundle's rootfs as an absolute, resolved path."""
    config = read_bundle_config(bundle)
    root = (config.get("root") or {}).get("path") or "rootfs"
    return (bundle / root).resolve()


async def migrate_out(
    runtime: ContainerRuntime,
    container: SourceContainer,
    request: wire.MigrateContainer,
    tls: TlsFiles | None,
) -> wire.MigrateContainerReply:
    """Move the container; on success it is still frozen here, for the caller to delete.

    Raises ``CommandError`` with the container running (thawed) here. It touches no state of the
    container's actor (it runs in a task of its own): the actor learns the outcome from it.
    """
    if request.pre_dump:
        raise CommandError(ErrorCode.INVALID_REQUEST, await pre_dump_refusal())
    started = time.monotonic()
    try:
        rootfs = rootfs_of(container.bundle)
    except (OSError, ValueError) as exc:
        raise CommandError(ErrorCode.INVALID_BUNDLE, f"cannot read the bundle's rootfs: {exc}") from None
    token = f"m{uuid.uuid4().hex[:16]}"
    peer = await _connect(request.to, tls)
    try:
        return await _with_peer(runtime, container, request, peer, token, rootfs, started)
    finally:
        peer.close()


async def _connect(address: str, tls: TlsFiles | None) -> Peer:
    try:
        return await Peer.connect(address, tls)
    except PeerError as exc:
        raise CommandError(ErrorCode.RUNTIME_FAILED, f"migration not started: {exc.message}") from None


async def _with_peer(
    runtime: ContainerRuntime,
    container: SourceContainer,
    request: wire.MigrateContainer,
    peer: Peer,
    token: str,
    rootfs: Path,
    started: float,
) -> wire.MigrateContainerReply:
    begin = wire.MigrationBegin(
        peer.next_request_id(),
        token,
        container.id,
        str(container.bundle),
        str(rootfs),
        rootfs_copy=request.rootfs_copy,
        tcp=request.tcp,
        terminal=container.terminal,
    )
    try:
        began = await peer.ask(begin)
    except PeerError as exc:
        if exc.lost:
            await _abort(peer, token, "the source lost the destination before the freeze", lost=True)
        raise CommandError(_code(exc), f"migration not started: {exc.message}") from None
    channel = await _open_bulk(peer, token, began)
    relay = None
    if request.keep_source:
        log.info("migration %s: the dump is kept here (--keep-source), so it goes to disk whole", token)
    elif container.memory_bytes is not None and container.memory_bytes < container.stream_min_bytes:
        log.info(
            "migration %s: %.1f MiB of memory, under %d MiB: the dump goes to disk, sent after it",
            token,
            container.memory_bytes / 2**20,
            container.stream_min_bytes >> 20,
        )
    elif channel is not None:
        relay = await _open_page_relay(peer, token, began)
    try:
        return await _frozen_part(runtime, container, request, peer, token, channel, relay, started)
    finally:
        if channel is not None:
            channel.close()
        if relay is not None:
            relay.close()


async def _open_bulk(peer: Peer, token: str, began: wire.MigrationBeginReply) -> ssl.SSLSocket | None:
    """The bulk channel the destination offered, connected before the freeze; None (the images go
    over the API) if it offered none or it cannot be reached (a firewall that lets only the API's
    port through, say)."""
    port = getattr(began, "bulk_port", 0)
    if not port:
        return None
    host = host_of(peer.address)
    try:
        # The worker bounds each of its steps (connect, handshake, the answer to the secret) by
        # CONNECT_TIMEOUT_S itself; this outer bound is only a backstop, so that a worker given
        # up on (its connection never closed, the destination waiting on it) stays a rarity.
        with trio.fail_after(4 * bulk.CONNECT_TIMEOUT_S):
            return await trio.to_thread.run_sync(
                bulk.connect, peer.tls, host, port, began.bulk_secret, abandon_on_cancel=True
            )
    except (OSError, bulk.BulkError, trio.TooSlowError) as exc:
        log.warning(
            "migration %s: the bulk channel to %s port %d failed (%s); the images go over the API instead",
            token,
            host,
            port,
            exc or type(exc).__name__,
        )
        return None


async def _open_page_relay(peer: Peer, token: str, began: wire.MigrationBeginReply) -> SourceRelay | None:
    """The page relay the destination offered, whole (its page server runs) before the freeze;
    None (the dump goes to disk, and is sent after it) if it offered none or it failed."""
    port = getattr(began, "page_server_port", 0)
    if not port:
        log.info("migration %s: the destination offers no page relay; the dump goes to disk first", token)
        return None
    host = host_of(peer.address)
    try:
        with trio.fail_after(4 * bulk.CONNECT_TIMEOUT_S):  # a backstop, as for the bulk channel
            relay = await trio.to_thread.run_sync(
                SourceRelay.open, peer.tls, host, port, began.bulk_secret, abandon_on_cancel=True
            )
    except (OSError, RelayError, bulk.BulkError, trio.TooSlowError) as exc:
        log.warning(
            "migration %s: the page relay to %s port %d failed (%s); the dump goes to disk, sent after it",
            token,
            host,
            port,
            exc or type(exc).__name__,
        )
        return None
    log.info(
        "migration %s: the pages stream to the destination's page server (relay %s)", token, relay.address
    )
    return relay


async def _frozen_part(
    runtime: ContainerRuntime,
    container: SourceContainer,
    request: wire.MigrateContainer,
    peer: Peer,
    token: str,
    channel: ssl.SSLSocket | None,
    relay: SourceRelay | None,
    started: float,
) -> wire.MigrateContainerReply:
    options = CriuOptions(tcp_established=request.tcp)
    name = f"migrated-{token}"
    with new_checkpoint_dir(container.bundle, name) as images:
        try:
            await runtime.pause(container.id)
        except RuncError as exc:
            await _abort(peer, token, "the source could not freeze the container")
            raise CommandError(ErrorCode.RUNTIME_FAILED, f"migration not started: {exc}") from None
        frozen_at_wall, frozen_at = time.time(), time.monotonic()
        try:
            result = await _frozen_steps(
                runtime,
                container,
                request,
                peer,
                token,
                images,
                options,
                frozen_at_wall,
                frozen_at,
                channel,
                relay,
            )
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await _abort(peer, token, f"the source failed: {exc}", lost=isinstance(exc, _PeerLost))
                await _thaw(runtime, container.id)
            raise
        kept = None
        if request.keep_source:
            # The container runs at the destination now: failing to keep the dump is no reason
            # to thaw it here as well.
            try:
                publish_checkpoint(
                    container.bundle,
                    images,
                    Checkpoint(name, request.tcp, False, False, True, frozen_at_wall),
                    container.terminal,
                )
                kept = name
            except (CommandError, OSError) as exc:
                log.warning("container %s: migrated, but its dump could not be kept: %s", container.id, exc)
    return attrs.evolve(result, total_s=time.monotonic() - started, kept_checkpoint=kept)


async def _frozen_steps(
    runtime: ContainerRuntime,
    container: SourceContainer,
    request: wire.MigrateContainer,
    peer: Peer,
    token: str,
    images: Path,
    options: CriuOptions,
    frozen_at_wall: float,
    frozen_at: float,
    channel: ssl.SSLSocket | None,
    relay: SourceRelay | None,
) -> wire.MigrateContainerReply:
    work = fresh_criu_work_dir(container.paths)
    if relay is None:
        streamed = 0
        try:
            await runtime.checkpoint(container.id, images, work, options, leave_running=True)
        except RuncError as exc:
            raise CommandError(
                ErrorCode.RUNTIME_FAILED, f"migration failed at the dump: {exc.message}"
            ) from None
    else:
        streamed = await _dump_streamed(runtime, container.id, images, work, options, relay)
    dumped_at = time.monotonic()
    files = [*image_files(images), SourceFile("config", "config.json", container.bundle / "config.json")]
    tar_path = None
    if request.rootfs_copy:
        tar_path = container.paths.directory / f"rootfs-{token}.tar"
        await trio.to_thread.run_sync(_write_rootfs_tar, rootfs_of(container.bundle), tar_path)
        files.append(SourceFile("rootfs", "rootfs.tar", tar_path))
    try:
        if channel is not None:
            plans = plan_chunks(files, bulk.BULK_CHUNK_BYTES)
            digests, sent = await _send_bulk(channel, plans)
        else:
            plans = plan_chunks(files)
            digests, sent = await _send_chunks(peer, token, plans)
    except PeerError as exc:
        raise _failed(exc, "migration failed while sending") from None
    except bulk.BulkError as exc:
        raise CommandError(ErrorCode.RUNTIME_FAILED, f"migration failed while sending: {exc}") from None
    except OSError as exc:
        raise _PeerLost(ErrorCode.RUNTIME_FAILED, f"migration failed while sending: {exc}") from None
    finally:
        if tar_path is not None:
            tar_path.unlink(missing_ok=True)
    sent_at = time.monotonic()
    commit = wire.MigrationCommit(
        peer.next_request_id(), token, len(plans), digest_of_digests(digests), frozen_at_wall
    )
    try:
        reply = await peer.ask(commit, timeout=COMMIT_TIMEOUT_S)
    except PeerError as exc:
        raise _failed(exc, "migration failed at the restore") from None
    running_at = time.monotonic()
    return wire.MigrateContainerReply(
        request.request_id,
        pid=reply.pid,
        frozen_s=running_at - frozen_at,
        total_s=0.0,
        dump_s=dumped_at - frozen_at,
        transfer_s=sent_at - dumped_at,
        restore_s=running_at - sent_at,
        bytes_sent=sent + streamed,
        pages_streamed=relay is not None,
    )


async def _dump_streamed(
    runtime: ContainerRuntime, id: str, images: Path, work: Path, options: CriuOptions, relay: SourceRelay
) -> int:
    """The dump with its pages sent through the page relay while CRIU runs; the bytes relayed."""
    relayed: list[int] = []
    relay_error: list[RelayError] = []
    dump_error: list[RuncError] = []

    async def relay_pages() -> None:
        try:
            relayed.append(await trio.to_thread.run_sync(relay.run, abandon_on_cancel=True))
        except RelayError as exc:
            relay_error.append(exc)
        except trio.Cancelled:
            relay.stop()  # the abandoned worker ends at its next read or write
            raise

    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay_pages)
        try:
            await runtime.checkpoint(id, images, work, options, leave_running=True, page_server=relay.address)
        except RuncError as exc:
            dump_error.append(exc)
            relay.stop()
    if dump_error:
        why = f" (the page relay: {relay_error[0]})" if relay_error else ""
        raise CommandError(
            ErrorCode.RUNTIME_FAILED, f"migration failed at the dump: {dump_error[0].message}{why}"
        )
    if relay_error:
        raise _PeerLost(
            ErrorCode.RUNTIME_FAILED, f"migration failed while streaming the pages: {relay_error[0]}"
        )
    return relayed[0]


def _write_rootfs_tar(rootfs: Path, target: Path) -> None:
    """The rootfs as an uncompressed tar (numeric owners, symlinks as links, devices as devices)."""
    with tarfile.open(target, "w") as tar:
        tar.add(str(rootfs), arcname=".")


async def _send_bulk(channel: ssl.SSLSocket, plans: list[ChunkPlan]) -> tuple[list[str], int]:
    """Stream the chunks on the bulk channel in a worker thread (it releases the GIL to encrypt)."""
    try:
        return await trio.to_thread.run_sync(bulk.send_chunks, channel, plans, abandon_on_cancel=True)
    except trio.Cancelled:
        bulk.shut(channel)  # the abandoned worker fails at its next write
        raise


async def _send_chunks(peer: Peer, token: str, plans: list[ChunkPlan]) -> tuple[list[str], int]:
    """Send every chunk, ``CHUNKS_IN_FLIGHT`` at once; the digests in ``seq`` order, and bytes sent."""
    digests = [""] * len(plans)
    sent = 0
    work_send, work_receive = trio.open_memory_channel[ChunkPlan](0)
    opened: dict[Path, int] = {}

    def read(plan: ChunkPlan) -> bytes:
        fd = opened.get(plan.file.path)
        if fd is None:
            fd = opened[plan.file.path] = os.open(plan.file.path, os.O_RDONLY | os.O_CLOEXEC)
        return os.pread(fd, plan.length, plan.offset)

    async def sender() -> None:
        nonlocal sent
        async for plan in work_receive:
            data = read(plan)
            if len(data) != plan.length:
                raise PeerError(f"{plan.file.path} shrank while it was sent")
            digest = hashlib.sha256(data).hexdigest()
            digests[plan.seq] = digest
            chunk = MigrationChunk(
                peer.next_request_id(), token, plan.seq, plan.file.kind, plan.file.name, plan.offset, digest
            )
            await peer.send_chunk(chunk, data)
            sent += len(data)

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(CHUNKS_IN_FLIGHT):
                nursery.start_soon(sender)
            async with work_send:
                for plan in plans:
                    await work_send.send(plan)
    except BaseExceptionGroup as group:
        errors = [e for e in group.exceptions if isinstance(e, PeerError)]
        if errors:
            raise errors[0] from None
        raise
    finally:
        for fd in opened.values():
            os.close(fd)
    return digests, sent


async def _abort(peer: Peer, token: str, reason: str, lost: bool = False) -> None:
    """Tell the destination to drop the migration; on a new connection if the old one failed
    (nng would redial the old one, and a request on it would wait for that)."""
    with trio.move_on_after(ABORT_TIMEOUT_S):
        for attempt in range(1 if lost else 0, 2):
            target = peer
            try:
                if attempt:
                    target = await Peer.connect(peer.address, peer.tls)
                try:
                    abort = wire.MigrationAbort(target.next_request_id(), token, reason[:500])
                    await target.ask(abort, timeout=ABORT_TIMEOUT_S / 2)
                    return
                finally:
                    if attempt:
                        target.close()
            except PeerError as exc:
                log.warning("migration %s: could not tell %s to abort: %s", token, peer.address, exc.message)
                if not exc.lost:
                    return


async def _thaw(runtime: ContainerRuntime, id: str) -> None:
    try:
        await runtime.resume(id)
    except RuncError as exc:
        log.error("container %s: could not thaw it after a failed migration: %s", id, exc.message)


def _code(exc: PeerError) -> str:
    return exc.code if exc.code != ErrorCode.INTERNAL else ErrorCode.RUNTIME_FAILED
