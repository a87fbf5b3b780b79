"""``BlockingClient``: one request at a time, without trio, for commands that ask once and print.

``actr containers``, ``kill``, ``checkpoints`` and the like send one or a few requests and exit, so
most of their time would go to importing trio and pynng's asyncio support (~80 ms of a budget of
~60 ms in all). This client sends the same requests, built and judged by the same code as
``Client`` (``calls``), over ``transport.blocking``; the streams (events, attach, ``logs -f``)
stay with ``Client`` under trio. Its methods mirror ``Client``'s, with the same names, arguments
and results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import containerd_actors.protocol as wire
from containerd_actors.client import calls
from containerd_actors.client.calls import (
    DEFAULT_TIMEOUT_S,
    MAX_REPLY_BYTES,
    OutputRead,
)
from containerd_actors.client.errors import ClientError, DaemonUnreachable, RequestFailed, unreachable_reason
from containerd_actors.protocol.addresses import DEFAULT_ADDRESS
from containerd_actors.transport.blocking import BlockingRequestSocket, TransportError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from containerd_actors.transport.tls import TlsFiles

_Reply = TypeVar("_Reply")

#: What ``Client`` says when the connection closes under a request (``transport.request``).
CONNECTION_LOST = "the connection to the daemon closed"


def _is_tls_files_error(exc: ValueError) -> bool:
    from containerd_actors.transport.tls import TlsFilesError

    return isinstance(exc, TlsFilesError)


def transport_failure(address: str, exc: TransportError, limit: float) -> DaemonUnreachable:
    """What a request whose transport failed raises (it waited up to ``limit`` seconds)."""
    if exc.timed_out:
        return DaemonUnreachable(address, f"no reply within {limit:g} s")
    return DaemonUnreachable(address, CONNECTION_LOST if exc.connection_lost else str(exc))


class BlockingClient:
    """A connection to one daemon. Create it with ``BlockingClient.connect``."""

    def __init__(
        self,
        address: str,
        socket: BlockingRequestSocket,
        timeout: float,
        *,
        ids: calls.RequestIds | None = None,
    ) -> None:
        """``ids``: those of a request already sent on ``socket`` (``early``), else its own."""
        self.address = address
        self._socket = socket
        self._timeout = timeout
        self._ids = calls.RequestIds(self) if ids is None else ids
        self._frames: bool | None = None
        #: The TLS files it dialled with: what a second connection to the same daemon needs.
        self.tls: TlsFiles | None = None

    def close(self) -> None:
        """Close the connection now (its ``connect`` block closes it again, harmlessly)."""
        self._socket.close()

    @classmethod
    @contextmanager
    def connect(
        cls,
        address: str = DEFAULT_ADDRESS,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        tls: TlsFiles | None = None,
    ) -> Iterator[BlockingClient]:
        """As ``Client.connect``; a ``tls+tcp://`` address needs ``tls``."""
        address = calls.dialable(address, tls)
        try:
            socket = BlockingRequestSocket(address, recv_max_size=MAX_REPLY_BYTES, tls=tls)
        except TransportError as exc:
            raise DaemonUnreachable(address, unreachable_reason(str(exc), crypto=exc.crypto)) from None
        except ValueError as exc:
            # A TLS file that cannot serve (``TlsFilesError``, only with ``tls``: its module, with
            # TlsFiles' attrs class, is not imported without it).
            if tls is None or not _is_tls_files_error(exc):
                raise
            raise ClientError(str(exc)) from None
        with socket:
            client = cls(address, socket, timeout)
            client.tls = tls
            yield client

    def call(
        self,
        request_type: type | str,
        reply_type: type[_Reply],
        *,
        timeout: float | None = None,
        framed: bool = False,
        views: bool = False,
        meanwhile: Callable[[], object] | None = None,
        **fields: Any,
    ) -> _Reply:
        """Send one request and return its typed reply; an ErrorReply raises ``RequestFailed``.
        ``request_type`` is the request's class or its name: by name it is written from the fields
        (``calls.encode``), and this client's own requests never define the request classes.
        ``framed`` sends the request's bytes fields as a binary frame (see ``speaks_frames``);
        ``views`` keeps a framed reply's bytes fields as views of nng's message (``calls.decode``);
        ``meanwhile`` runs while the daemon works on it (``BlockingRequestSocket.request``)."""
        payload = calls.encode(request_type, self._ids.next(), fields, framed=framed)
        with self._transport_errors(timeout) as limit:
            raw = self._socket.request(payload, limit, meanwhile)
        return calls.decode(raw, reply_type, views=views)

    def send(
        self, request_type: type | str, *, timeout: float | None = None, framed: bool = False, **fields: Any
    ) -> None:
        """The first half of ``call``: the request is on its way; ``receive`` takes its reply. One
        request at a time per client: a writer keeps several in flight with as many clients."""
        payload = calls.encode(request_type, self._ids.next(), fields, framed=framed)
        with self._transport_errors(timeout) as limit:
            self._socket.send(payload, limit)

    def receive(
        self, reply_type: type[_Reply], *, timeout: float | None = None, views: bool = False
    ) -> _Reply:
        """The second half of ``call``: the reply to what ``send`` sent."""
        with self._transport_errors(timeout) as limit:
            raw = self._socket.receive(limit)
        return calls.decode(raw, reply_type, views=views)

    @contextmanager
    def _transport_errors(self, timeout: float | None) -> Iterator[float]:
        """The timeout to use (the client's unless given); a transport's failure as ``DaemonUnreachable``."""
        limit = self._timeout if timeout is None else timeout
        try:
            yield limit
        except TransportError as exc:
            raise transport_failure(self.address, exc, limit) from None

    def ping(self) -> wire.PingReply:
        reply = self.call("Ping", wire.PingReply)
        self._frames = calls.speaks_frames(reply)
        return reply

    def speaks_frames(self) -> bool:
        """Whether the daemon takes and gives binary frames (protocol revision 3): output and
        input then cross as they are, without base64. Asked once (a Ping), then remembered; a
        framed read that came back (``follow_output``) answers it without a Ping."""
        if self._frames is None:
            self.ping()
        return bool(self._frames)

    # ----------------------------------------------------------------------- containers

    def create_container(
        self, id: str, bundle: str, checkpoint: str | None = None, *, terminal: bool | None = None
    ) -> int:
        """Start a container (restored from ``checkpoint`` if given); returns its init pid.

        ``terminal`` as in ``Client.create_container``. Unlike ``Client``, a lost connection is not
        retried here: a one-shot command reports it, and the user may repeat the start.
        """
        fields = {"id": id, "bundle": bundle, "checkpoint": checkpoint, "terminal": terminal}
        reply = self.call("CreateContainer", wire.CreateContainerReply, **fields)
        return reply.pid

    def signal(self, id: str, signal: int = 15, pid: int = 0) -> None:
        self.call("Signal", wire.SignalReply, id=id, signal=signal, pid=pid)

    def state(self, id: str = "") -> wire.StateReply:
        """Every container, or only the one ``id`` names (a daemon of protocol revision 3 or later)."""
        return self.call("State", wire.StateReply, id=id)

    def containers(self) -> list[wire.ContainerInfo]:
        return self.state().containers

    def pause(self, id: str) -> None:
        self.call("UpdateContainer", wire.UpdateContainerReply, id=id, status="paused")

    def resume(self, id: str) -> None:
        self.call("UpdateContainer", wire.UpdateContainerReply, id=id, status="running")

    def stats(self, id: str) -> wire.ContainerStats:
        return self.call("Stats", wire.StatsReply, id=id).stats

    def metrics(self) -> wire.MetricsSnapshot:
        return self.call("Metrics", wire.MetricsReply).metrics

    # ----------------------------------------------------------------------- checkpoints

    def create_checkpoint(
        self, id: str, name: str, **flags: Unpack[calls.CheckpointFlags]
    ) -> wire.Checkpoint:
        """CRIU-dump the container as checkpoint ``name``; with ``exit`` it stops afterwards."""
        reply = self.call("CreateCheckpoint", wire.CreateCheckpointReply, id=id, name=name, **flags)
        return reply.checkpoint

    def migrate_container(
        self, id: str, to: str, **flags: Unpack[calls.MigrateFlags]
    ) -> wire.MigrateContainerReply:
        """Move a running container to the daemon at ``to`` (``tls+tcp://``), driven by this daemon
        with its own certificate; the reply says where it runs and how long it was frozen
        (protocol revision 4). On failure it still runs here."""
        return self.call(
            "MigrateContainer",
            wire.MigrateContainerReply,
            timeout=calls.MIGRATE_TIMEOUT_S,
            id=id,
            to=to,
            **flags,
        )

    def list_checkpoints(self, id: str = "", *, bundle: str = "") -> list[wire.Checkpoint]:
        """As ``Client.list_checkpoints``: by container, or by bundle directory."""
        return self.call("ListCheckpoints", wire.ListCheckpointsReply, id=id, bundle=bundle).checkpoints

    def delete_checkpoint(self, id: str, name: str) -> None:
        self.call("DeleteCheckpoint", wire.DeleteCheckpointReply, id=id, name=name)

    # ----------------------------------------------------------------------- processes and their output

    def add_process(
        self,
        id: str,
        args: list[str],
        meanwhile: Callable[[], object] | None = None,
        **options: Unpack[calls.ProcessOptions],
    ) -> int:
        """Exec ``args`` in a running container (runc exec); returns the new process's pid.
        ``meanwhile`` runs while the daemon execs (see ``call``)."""
        fields = calls.process_fields(id, args, **options)
        return self.call("AddProcess", wire.AddProcessReply, meanwhile=meanwhile, **fields).pid

    def read_output(
        self, id: str, pid: int = 0, **options: Unpack[calls.ReadOptions]
    ) -> wire.ReadOutputReply:
        """One read of a process's output (``binary``: as a frame); see ``output`` for all of it."""
        return self.call("ReadOutput", wire.ReadOutputReply, id=id, pid=pid, **options)

    def follow_output(
        self,
        id: str,
        pid: int = 0,
        **options: Unpack[calls.FollowOptions],
    ) -> Iterator[OutputRead]:
        """``Client.follow_output`` without trio: a process's output from ``offsets`` (or its last
        ``tail`` lines) until it exits; without ``follow``, until the current end of the logs.
        """
        state = calls.OutputFollow(framed=self._frames is not False, **options)
        while not state.done:
            yield state.take(self.read_next(id, pid, state, state.fields()))
            if state.backoff:
                time.sleep(state.backoff)  # the daemon's long polls were all taken

    def read_next(
        self, id: str, pid: int, state: calls.OutputFollow, fields: calls.ReadOptions
    ) -> wire.ReadOutputReply:
        """The read ``fields`` of ``state`` (``state.fields()``): framed unless the daemon is known
        not to speak frames, and asked again as JSON if it refuses them
        (``OutputFollow.refused_frames``); no Ping first."""
        if not state.framed:  # a follow of a daemon that refused frames earlier on
            fields = calls.OutputFollow.plain(fields)
        try:
            # Its output is written out and dropped: views of the reply, no copy (``calls.decode``).
            reply = self.call("ReadOutput", wire.ReadOutputReply, views=True, id=id, pid=pid, **fields)
        except RequestFailed as failure:
            if not (state.framed and calls.refuses_frames(failure)):
                raise
            self._frames = False
            return self.read_output(id, pid, **state.refused_frames(fields))
        if state.framed:
            self._frames = True
        return reply

    def open_stdin(self, id: str, pid: int = 0) -> wire.OpenStdinReply:
        """Where this host may open the process's stdin pipe (protocol revision 7; see
        ``direct_input``, which also checks that what it opened is that pipe)."""
        return self.call("OpenStdin", wire.OpenStdinReply, id=id, pid=pid)

    def write_input(self, id: str, data: bytes, pid: int = 0, *, close: bool = False) -> None:
        """Write all of ``data`` to a process's stdin, in chunks that fit a request; then maybe EOF."""
        framed = bool(self._frames) or (calls.frames_worth_asking(len(data)) and self.speaks_frames())
        chunks = calls.InputChunks(data, close, framed=framed)
        while (fields := chunks.next_fields()) is not None:
            reply = self.call("WriteInput", wire.WriteInputReply, id=id, pid=pid, framed=framed, **fields)
            chunks.written(reply.written)
