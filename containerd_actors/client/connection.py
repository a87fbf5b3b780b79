"""``Client``: one connection to a daemon, and a method per request of the wire protocol.

Requests go over a raw nng Req0 (``transport.request.RawRequestSocket``): many calls can be in
flight on one socket, replies are matched by request id, and no thread hand-off is paid per call.
Raw mode never resends, as the client wants: nng's cooked Req0 would silently resend a
non-idempotent request (a container start) after 60 s or on reconnect; a lost connection fails the
calls in flight instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import pynng
import trio

import containerd_actors.protocol as wire
from containerd_actors.client import calls, subscription
from containerd_actors.client.calls import (
    DEFAULT_TIMEOUT_S,
    FOLLOW_BACKOFF_S,
    FOLLOW_WAIT_S,
    INPUT_CHUNK_BYTES,
    MAX_REPLY_BYTES,
    OutputRead,
)
from containerd_actors.client.errors import ClientError, DaemonUnreachable, RequestFailed, unreachable_reason
from containerd_actors.protocol.addresses import DEFAULT_ADDRESS
from containerd_actors.transport.request import ConnectionLost, RawRequestSocket
from containerd_actors.transport.tls import TlsFiles, TlsFilesError, host_of, is_plain_tcp, is_tls

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: Hosts a daemon may announce its streams on that mean "every interface", not a place to dial.
_ANY_HOST = {"0.0.0.0", "::", ""}


def as_seen_from(announced: str, dialed: str) -> str:
    """An announced stream address, with the host this client dialed where the daemon listens on
    every interface (it cannot know the name a client reaches it by)."""
    scheme, _, rest = announced.partition("://")
    host, _, port = rest.rpartition(":")
    if host.strip("[]") in _ANY_HOST:
        dialed_host = host_of(dialed)
        host = f"[{dialed_host}]" if ":" in dialed_host else dialed_host
    return f"{scheme}://{host}:{port}"


def _explained(exc: pynng.NNGException) -> str:
    return unreachable_reason(str(exc), crypto=isinstance(exc, pynng.CryptoError))


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "FOLLOW_BACKOFF_S",
    "FOLLOW_WAIT_S",
    "INPUT_CHUNK_BYTES",
    "Client",
    "OutputRead",
]

_Reply = TypeVar("_Reply")


class Client:
    """A connection to one daemon. Create it with ``Client.connect``."""

    def __init__(
        self, address: str, socket: RawRequestSocket, timeout: float, tls: TlsFiles | None = None
    ) -> None:
        self.address = address
        self.tls = tls
        self._socket = socket
        self._timeout = timeout
        self._ids = calls.RequestIds(self)
        self._streams: tuple[str, str | None] | None = None
        self._frames: bool | None = None

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        address: str = DEFAULT_ADDRESS,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        tls: TlsFiles | None = None,
    ) -> AsyncIterator[Client]:
        """Connect to a daemon; a ``tls+tcp://`` address needs ``tls`` (mutual TLS: this client's
        certificate and key, and the CA that signed the daemon's certificate)."""
        address = calls.dialable(address, tls)
        try:
            socket = RawRequestSocket(address, recv_max_size=MAX_REPLY_BYTES, tls=tls)
        except TlsFilesError as exc:
            raise ClientError(str(exc)) from None
        except pynng.NNGException as exc:
            raise DaemonUnreachable(address, _explained(exc)) from None
        with socket:
            yield cls(address, socket, timeout, tls)

    async def call(
        self,
        request_type: type,
        reply_type: type[_Reply],
        *,
        timeout: float | None = None,
        retry_lost: bool = False,
        framed: bool = False,
        **fields: Any,
    ) -> _Reply:
        """Send one request and return its typed reply; an ErrorReply raises ``RequestFailed``.

        With ``retry_lost``, a request whose connection closed before the reply is sent again,
        the same request with the same request id, once the daemon is back (within ``timeout``):
        the daemon answers a repeat with what the first one did, if it got that far. ``framed``
        sends the request's bytes fields as a binary frame (see ``speaks_frames``).
        """
        payload = calls.encode(request_type, self._ids.next(), fields, framed=framed)
        timeout = self._timeout if timeout is None else timeout
        try:
            with trio.fail_after(timeout):
                while True:
                    try:
                        raw = await self._socket.request(payload)
                        break
                    except ConnectionLost:
                        if not retry_lost:
                            raise
        except trio.TooSlowError:
            raise DaemonUnreachable(self.address, f"no reply within {timeout:g} s") from None
        except (pynng.NNGException, ConnectionLost) as exc:
            raise DaemonUnreachable(self.address, str(exc)) from None
        return calls.decode(raw, reply_type)

    async def ping(self) -> wire.PingReply:
        reply = await self.call(wire.Ping, wire.PingReply)
        self._frames = calls.speaks_frames(reply)
        return reply

    async def speaks_frames(self) -> bool:
        """Whether the daemon takes and gives binary frames (protocol revision 3): output and
        input then cross as they are, without base64. Asked once (a Ping), then remembered."""
        if self._frames is None:
            await self.ping()
        return bool(self._frames)

    # ----------------------------------------------------------------------- containers

    async def create_container(
        self, id: str, bundle: str, checkpoint: str | None = None, *, terminal: bool | None = None
    ) -> int:
        """Start a container (restored from ``checkpoint`` if given); returns its init pid.

        ``terminal`` gives the init a pty (True) or pipes (False) whatever the bundle says; None
        follows the bundle (protocol revision 2).

        A start whose connection is lost (the daemon restarted) is repeated with the same request
        id until the timeout: the daemon answers with the pid of the container the first one made,
        so a start is never made twice and never lost to the client.
        """
        fields = {"id": id, "bundle": bundle, "checkpoint": checkpoint, "terminal": terminal}
        reply = await self.call(wire.CreateContainer, wire.CreateContainerReply, retry_lost=True, **fields)
        return reply.pid

    async def signal(self, id: str, signal: int = 15, pid: int = 0) -> None:
        await self.call(wire.Signal, wire.SignalReply, id=id, signal=signal, pid=pid)

    async def state(self, id: str = "") -> wire.StateReply:
        """Every container, or only the one ``id`` names (a daemon of protocol revision 3 or later)."""
        return await self.call(wire.State, wire.StateReply, id=id)

    async def containers(self) -> list[wire.ContainerInfo]:
        return (await self.state()).containers

    async def pause(self, id: str) -> None:
        await self.call(wire.UpdateContainer, wire.UpdateContainerReply, id=id, status="paused")

    async def resume(self, id: str) -> None:
        await self.call(wire.UpdateContainer, wire.UpdateContainerReply, id=id, status="running")

    async def stats(self, id: str) -> wire.ContainerStats:
        """One cgroup sample; call it about once a second to stream."""
        return (await self.call(wire.Stats, wire.StatsReply, id=id)).stats

    async def metrics(self) -> wire.MetricsSnapshot:
        return (await self.call(wire.Metrics, wire.MetricsReply)).metrics

    # ----------------------------------------------------------------------- checkpoints

    async def create_checkpoint(
        self, id: str, name: str, **flags: Unpack[calls.CheckpointFlags]
    ) -> wire.Checkpoint:
        """CRIU-dump the container as checkpoint ``name``; with ``exit`` it stops afterwards."""
        reply = await self.call(wire.CreateCheckpoint, wire.CreateCheckpointReply, id=id, name=name, **flags)
        return reply.checkpoint

    async def migrate_container(
        self, id: str, to: str, **flags: Unpack[calls.MigrateFlags]
    ) -> wire.MigrateContainerReply:
        """Move a running container to the daemon at ``to`` (``tls+tcp://``), driven by this daemon
        with its own certificate; the reply says where it runs and how long it was frozen
        (protocol revision 4). On failure it still runs here."""
        return await self.call(
            wire.MigrateContainer,
            wire.MigrateContainerReply,
            timeout=calls.MIGRATE_TIMEOUT_S,
            id=id,
            to=to,
            **flags,
        )

    async def list_checkpoints(self, id: str = "", *, bundle: str = "") -> list[wire.Checkpoint]:
        """The checkpoints of container ``id`` (also after it exited), or of the bundle directory
        ``bundle`` (absolute, on the daemon's host) with no container (protocol revision 2)."""
        reply = await self.call(wire.ListCheckpoints, wire.ListCheckpointsReply, id=id, bundle=bundle)
        return reply.checkpoints

    async def delete_checkpoint(self, id: str, name: str) -> None:
        await self.call(wire.DeleteCheckpoint, wire.DeleteCheckpointReply, id=id, name=name)

    # ----------------------------------------------------------------------- processes and their stdio

    async def add_process(self, id: str, args: list[str], **options: Unpack[calls.ProcessOptions]) -> int:
        """Exec ``args`` in a running container (runc exec); returns the new process's pid."""
        fields = calls.process_fields(id, args, **options)
        return (await self.call(wire.AddProcess, wire.AddProcessReply, **fields)).pid

    async def read_output(
        self, id: str, pid: int = 0, **options: Unpack[calls.ReadOptions]
    ) -> wire.ReadOutputReply:
        """One read of a process's output (``binary``: as a frame); see ``follow_output`` for a stream."""
        return await self.call(wire.ReadOutput, wire.ReadOutputReply, id=id, pid=pid, **options)

    async def follow_output(
        self,
        id: str,
        pid: int = 0,
        **options: Unpack[calls.FollowOptions],
    ) -> AsyncIterator[OutputRead]:
        """Yield a process's output from ``offsets`` (stdout, stderr; by default its start), or from
        its last ``tail`` lines, until it exits.

        Without ``follow`` it stops at the current end of the logs instead. Each read is a
        long-poll reply; the last one (``exited``) carries the exit status.
        """
        state = calls.OutputFollow(framed=self._frames is not False, **options)
        while not state.done:
            yield state.take(await self._read_next(id, pid, state))
            if state.backoff:
                await trio.sleep(state.backoff)  # the daemon's long polls were all taken

    async def _read_next(self, id: str, pid: int, state: calls.OutputFollow) -> wire.ReadOutputReply:
        """As ``BlockingClient.read_next``: framed at once, as JSON again if the daemon refuses."""
        fields = state.fields()
        try:
            reply = await self.read_output(id, pid, **fields)
        except RequestFailed as failure:
            if not (state.framed and calls.refuses_frames(failure)):
                raise
            self._frames = False
            return await self.read_output(id, pid, **state.refused_frames(fields))
        if state.framed:
            self._frames = True
        return reply

    async def write_input(self, id: str, data: bytes, pid: int = 0, *, close: bool = False) -> None:
        """Write all of ``data`` to a process's stdin, in chunks that fit a request; then maybe EOF."""
        framed = bool(self._frames) or (calls.frames_worth_asking(len(data)) and await self.speaks_frames())
        chunks = calls.InputChunks(data, close, framed=framed)
        while (fields := chunks.next_fields()) is not None:
            reply = await self.call(
                wire.WriteInput, wire.WriteInputReply, id=id, pid=pid, framed=framed, **fields
            )
            chunks.written(reply.written)

    async def open_stdin(self, id: str, pid: int = 0) -> wire.OpenStdinReply:
        """As ``BlockingClient.open_stdin``."""
        return await self.call(wire.OpenStdin, wire.OpenStdinReply, id=id, pid=pid)

    async def resize_terminal(self, id: str, rows: int, cols: int, pid: int = 0) -> None:
        await self.call(wire.ResizeTerminal, wire.ResizeTerminalReply, id=id, pid=pid, rows=rows, cols=cols)

    # ----------------------------------------------------------------------- events

    async def events_address(self) -> str:
        return (await self.event_streams())[0]

    async def event_streams(self) -> tuple[str, str | None]:
        """The addresses of the per-event stream and of the batch stream (None: not published)."""
        if self._streams is None:
            ping = await self.ping()
            if is_tls(self.address) or is_plain_tcp(self.address):
                if ping.remote_events_address is None:
                    raise ClientError(f"the daemon at {self.address} publishes no events to other hosts")
                self._streams = (
                    as_seen_from(ping.remote_events_address, self.address),
                    as_seen_from(ping.remote_events_batch_address, self.address)
                    if ping.remote_events_batch_address
                    else None,
                )
            else:
                self._streams = (ping.events_address, ping.events_batch_address)
        return self._streams

    async def events_page(
        self,
        from_seq: int = 0,
        since: float | None = None,
        limit: int = wire.MAX_EVENTS_PER_PAGE,
        *,
        timeout: float | None = None,
    ) -> wire.EventsReply:
        """One page of the daemon's event journal (see ``Events`` in proto_schemas/README.md)."""
        return await self.call(
            wire.Events, wire.EventsReply, timeout=timeout, from_seq=from_seq, since=since, limit=limit
        )

    #: ``async with client.subscribe(topic_prefix, ...) as events``: see ``subscription.subscribe``.
    subscribe = subscription.subscribe
