"""The API server: workers with a Rep0 context each take turns to receive, then decode, ask and reply.

Concurrency comes from the number of workers: a start can sit on the ``--concurrency`` limiter for
a while, and with enough workers a State or Ping request is never stuck behind queued starts. When
every worker is busy nobody receives, so nng stops reading and requesters queue in their pipes,
not in the daemon's memory. Every failure becomes an ErrorReply: a request can never take the
daemon down. See ``transport.reply`` for how the contexts are driven without nng's threads.

Which actor serves which request is one table (``ApiServer.handlers``): the wire request itself
travels to that actor in an ``Ask``, and the handler turns the answer into the reply. Three requests
are served here: a Ping from the events actor's published status (it must not queue behind an
event burst), a ReadOutput long poll from the output view the supervisor finds (it must not
occupy a container actor while it waits), and an OpenStdin from the open stdin port the routes
hold (it only names an fd; refused here to callers on another host).

The whole path of a request through the server sits here, receive, decode, authorize, route,
encode, with the shortcuts on that path (the Ping, the routed stdin, the kept State encoding)
beside the table they bypass. How a ReadOutput is read and shaped once routed to its output
view is ``output_reads``' job; the replies already encoded are ``ready_replies``'.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import pynng
import trio

from containerd_actors import __version__
from containerd_actors import protocol as wire
from containerd_actors.daemon.config import DaemonConfig, RemoteStreams
from containerd_actors.daemon.container.routes import ProcessRoutes
from containerd_actors.daemon.events.messages import EventsMailbox, EventsStatus, GetStatus
from containerd_actors.daemon.mailbox import CommandError, Published, ask, forward
from containerd_actors.daemon.metrics.messages import MetricsMailbox
from containerd_actors.daemon.migration.destination import IncomingMigrations
from containerd_actors.daemon.output_reads import OutputReads
from containerd_actors.daemon.ready_replies import Encoded, Framed
from containerd_actors.daemon.shortcuts import LOCAL_CALLER, Caller, Handler, open_stdin, to_actor, to_stdin
from containerd_actors.daemon.supervisor.messages import SupervisorMailbox
from containerd_actors.host.procfs import memory_total_bytes
from containerd_actors.protocol import frames
from containerd_actors.transport import nng
from containerd_actors.transport.nng import UNKNOWN_PEER, pipe_local_address
from containerd_actors.transport.reply import ReplySocket
from containerd_actors.transport.tls import is_plain_tcp

log = logging.getLogger(__name__)

#: Requests served at once. Starts beyond --concurrency wait inside the daemon, holding a worker.
WORKER_CONTEXTS = 256
#: A reply the client no longer waits for must not hold a worker forever.
SEND_TIMEOUT_S = 10.0
#: Long polls (ReadOutput with ``wait``) served at once; each holds a worker while it
#: waits, so without a cap 256 attached clients would starve every other request. Beyond the cap
#: a ReadOutput answers at once and the client library backs off before asking again.
MAX_WAITING_READS = WORKER_CONTEXTS // 2


#: What a ``--read-only-client`` may ask: everything that only reads (list, state, stats, logs,
#: metrics, events, checkpoints listed). Anything else, today's requests and tomorrow's, is refused.
READ_ONLY_REQUESTS: frozenset[type] = frozenset(
    {
        wire.Ping,
        wire.State,
        wire.Stats,
        wire.ReadOutput,
        wire.Metrics,
        wire.Events,
        wire.ListCheckpoints,
    }
)


def streams_beside(streams: tuple[RemoteStreams, ...], local: str) -> RemoteStreams | None:
    """The streams of the listener on ``local`` (``HOST:PORT``): the one on that very address, else
    the one on that port (a listener on every interface, or one given by host name)."""
    host, _, port = local.rpartition(":")
    host = host.strip("[]")
    on_port = None
    for candidate in streams:
        listen_host, _, listen_port = candidate.api.split("://", 1)[1].rpartition(":")
        if listen_port != port:
            continue
        if listen_host.strip("[]") == host:
            return candidate
        on_port = on_port or candidate
    return on_port


def named(containers: list[wire.ContainerInfo], id: str) -> list[wire.ContainerInfo]:
    """What a State asks for: the container ``id`` names (if any), or every container for "".

    Filtered here, before encoding: ``actr containers state ID`` beside 1000 other containers would
    otherwise cost the daemon and the client ~10 ms each to write and read all of them.
    """
    return [c for c in containers if c.id == id] if id else containers


class StateCache:
    """The encoding of the State of every container, kept while the supervisor answers with the
    very same list.

    The supervisor makes a new list whenever a report changes what State shows, and hands out the
    same object until then (``Supervisor._list``): so ``is`` tells that nothing changed. Only what
    every request shares is kept; each reply gets its own ``request_id``. At 1,000 containers the
    encoding took the daemon 4-5 ms of CPU for each ``actr containers``.
    """

    def __init__(self, machine: wire.MachineInfo) -> None:
        self._machine = machine
        self._containers: list[wire.ContainerInfo] | None = None
        self._template: wire.ReplyTemplate | None = None

    def reply(self, request_id: str, containers: list[wire.ContainerInfo]) -> Encoded:
        if self._template is None or containers is not self._containers:
            self._template = wire.reply_template(wire.StateReply("", containers, self._machine))
            self._containers = containers
        return Encoded(self._template.encode(request_id))


def machine_info(daemon_id: str) -> wire.MachineInfo:
    return wire.MachineInfo(daemon_id, os.cpu_count() or 1, memory_total_bytes())


class ApiServer:
    def __init__(
        self,
        config: DaemonConfig,
        supervisor: SupervisorMailbox,
        events: EventsMailbox,
        metrics: MetricsMailbox,
        events_status: Published[EventsStatus] | None = None,
        process_routes: ProcessRoutes | None = None,
    ) -> None:
        """Without ``events_status`` (an events actor beside a bare API server, in tests and
        benchmarks), a Ping asks the events actor through its mailbox instead. With
        ``process_routes`` (the supervisor's), a WriteInput or ResizeTerminal for an open stdin
        goes straight to its port and a ReadOutput of a living actor's process finds its view
        there; without, every one goes through the supervisor."""
        self._config = config
        self._process_routes = process_routes
        self._events = events
        self._events_status = events_status
        self._machine = machine_info(config.id)
        self._every_state = StateCache(self._machine)
        self._output_reads = OutputReads(MAX_WAITING_READS)
        self.served = 0
        self._socket: ReplySocket | None = None
        #: Migrations arriving here (served without an actor: there is no container yet).
        self.incoming = IncomingMigrations(
            config.state_dir,
            config.migrated_cgroup_parent,
            supervisor,
            events,
            config.migration_idle_timeout,
            config.tls,
        )
        self.handlers = self._handler_table(supervisor, events, metrics)

    def _handler_table(
        self, supervisor: SupervisorMailbox, events: EventsMailbox, metrics: MetricsMailbox
    ) -> dict[type, Handler]:
        """For each request type: the actor that serves it, and the reply its answer becomes."""
        routes = self._process_routes

        def via(
            mailbox: trio.MemorySendChannel[Any], reply: Callable[[Any, Any], wire.Reply | Encoded]
        ) -> Handler:
            async def handler(request: Any, caller: Caller) -> wire.Reply | Encoded:
                return reply(request, await forward(mailbox, request, caller.by))

            return handler

        return {
            wire.Ping: self._ping,
            wire.Events: via(
                events,
                lambda r, page: wire.EventsReply(
                    r.request_id,
                    page.events,
                    page.next_seq,
                    page.last_seq,
                    page.first_available_seq,
                    page.journal_id,
                ),
            ),
            wire.Metrics: via(metrics, lambda r, snapshot: wire.MetricsReply(r.request_id, snapshot)),
            wire.CreateContainer: via(
                supervisor, lambda r, pid: wire.CreateContainerReply(r.request_id, pid)
            ),
            wire.State: via(supervisor, self._state_reply),
            wire.ReadOutput: lambda request, caller: self._read_output(supervisor, request, caller),
            # Routed by the supervisor to the container's actor:
            wire.Signal: via(supervisor, lambda r, _: wire.SignalReply(r.request_id)),
            wire.AddProcess: to_actor(
                routes, supervisor, lambda r, pid: wire.AddProcessReply(r.request_id, pid)
            ),
            wire.Stats: via(supervisor, lambda r, stats: wire.StatsReply(r.request_id, stats)),
            wire.UpdateContainer: via(supervisor, lambda r, _: wire.UpdateContainerReply(r.request_id)),
            wire.CreateCheckpoint: via(
                supervisor, lambda r, checkpoint: wire.CreateCheckpointReply(r.request_id, checkpoint)
            ),
            wire.ListCheckpoints: via(
                supervisor, lambda r, checkpoints: wire.ListCheckpointsReply(r.request_id, checkpoints)
            ),
            wire.DeleteCheckpoint: via(supervisor, lambda r, _: wire.DeleteCheckpointReply(r.request_id)),
            wire.WriteInput: to_stdin(
                routes, supervisor, lambda r, written: wire.WriteInputReply(r.request_id, written)
            ),
            wire.ResizeTerminal: to_stdin(
                routes, supervisor, lambda r, _: wire.ResizeTerminalReply(r.request_id)
            ),
            wire.OpenStdin: lambda request, caller: open_stdin(routes, supervisor, request, caller),
            # The migration's task builds the reply itself (``migration.source.migrate_out``).
            wire.MigrateContainer: via(supervisor, lambda _r, reply: reply),
            # A migration arriving from another daemon (its source is the caller):
            wire.MigrationBegin: lambda request, caller: self.incoming.begin(request, caller.by, caller.pipe),
            wire.MigrationChunk: self._refuse_unframed_chunk,
            wire.MigrationCommit: lambda request, caller: self.incoming.commit(request, caller.by),
            wire.MigrationAbort: lambda request, _caller: self.incoming.abort(request),
        }

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        addresses = [self._config.listen, *self._config.remote_listen]
        # A frame may be bigger than JSON (a WriteInput of 4 MiB); ``_serve`` holds JSON to its limit.
        with ReplySocket(addresses, wire.MAX_FRAME_BYTES, SEND_TIMEOUT_S, tls=self._config.tls) as sock:
            self._socket = sock
            sock.on_pipe_closed(self.incoming.connection_closed)
            for address in addresses:
                log.info("listening on %s", address)
                if is_plain_tcp(address):
                    log.warning(
                        "%s is plain tcp (--insecure-tcp): no encryption, and anyone who reaches it "
                        "may do anything",
                        address,
                    )
            # Unbuffered: a request is taken from nng only when a worker is free to serve it.
            # One worker at a time reads the socket; see ``_worker``.
            reading = trio.Lock()
            async with trio.open_nursery() as nursery:
                for _ in range(WORKER_CONTEXTS):
                    nursery.start_soon(self._worker, sock, reading)
                nursery.start_soon(self.incoming.run)
                task_status.started()

    async def _worker(self, sock: ReplySocket, reading: trio.Lock) -> None:
        """Leader and followers: the worker holding ``reading`` takes the next request, passes the
        role on, and serves the request itself.

        Releasing the lock only schedules the next worker, so a request that needs no actor (a
        Ping) is decoded, answered and sent in the same step that received it; with a separate
        receiving task the reply waited a scheduling pass for the hand-over. When every worker
        is busy nobody reads, so nng stops reading and requesters queue in their pipes.
        """
        context = sock.context()
        while True:
            async with reading:
                try:
                    message = await context.receive_message()
                except pynng.Closed:
                    return
            reply, framed = await self._serve(message.body, message.peer, message.pipe)
            if isinstance(reply, Framed):
                body: bytes | nng.OutgoingMessage = reply.message
            elif isinstance(reply, Encoded):
                body = reply.data
            else:
                body = wire.encode_reply(reply, framed=framed)
            try:
                if not await context.reply(body):
                    log.debug("reply dropped: the requester stopped reading")
            except pynng.NNGException as exc:
                log.debug("reply not delivered: %s", exc)
            self.served += 1

    def reload_tls(self) -> None:
        """Serve renewed certificate files on the TLS listeners (see ``ReplySocket.reload_tls``)."""
        if self._socket is not None:
            self._socket.reload_tls()

    async def handle(self, data: bytes, peer: str | None = None, pipe: int = 0) -> wire.Reply:
        """Decode one request and answer it; exceptions become ErrorReplies.

        ``peer`` is the sender's TLS certificate CN (None for a local or plain-tcp client), and
        ``pipe`` the id of the pipe it came on (0 when not known).
        """
        reply = (await self._serve(data, peer, pipe))[0]
        if isinstance(reply, Framed):
            with reply.message:
                return wire.decode_reply(bytes(reply.message.body()))
        if isinstance(reply, Encoded):
            return wire.decode_reply(reply.data)
        return reply

    async def _serve(
        self, data: bytes, peer: str | None, pipe: int
    ) -> tuple[wire.Reply | Framed | Encoded, bool]:
        """``handle``, and whether the reply goes as a binary frame (``ReadOutput.binary``; the
        codec frames only replies with bytes fields, so an ErrorReply stays JSON)."""
        request_id: str | None = None
        framed = False
        try:
            if len(data) > wire.MAX_MESSAGE_BYTES and not frames.is_frame(data):
                raise wire.ProtocolError(
                    wire.ErrorCode.MALFORMED,
                    f"a JSON request may be at most {wire.MAX_MESSAGE_BYTES} bytes, this one is {len(data)}"
                    f" (only a binary frame may be bigger, up to {wire.MAX_FRAME_BYTES})",
                )
            if wire.is_migration_chunk(data):  # other frames (WriteInput) are the codec's
                return await self._framed(data, peer), False
            request = wire.decode_request(data)
            request_id = request.request_id
            framed = getattr(request, "binary", False)
            handler = self.handlers.get(type(request))
            if handler is None:
                raise CommandError(
                    wire.ErrorCode.UNKNOWN_TYPE, f"request {type(request).__name__} is not served"
                )
            if peer is not None and type(request) not in READ_ONLY_REQUESTS:
                self._authorize_change(request, peer)
            return await handler(request, Caller(peer, pipe)), framed
        except wire.ProtocolError as exc:
            return exc.to_reply(), False
        except CommandError as exc:
            return wire.ErrorReply(request_id, exc.code, exc.message, exc.details), False
        except Exception as exc:
            log.exception("request failed unexpectedly")
            return wire.ErrorReply(request_id, wire.ErrorCode.INTERNAL, f"internal error: {exc!r}"), False

    def _state_reply(self, request: wire.State, containers: list[wire.ContainerInfo]) -> wire.Reply | Encoded:
        """One container's State is encoded each time (it is small); that of every container is
        kept until the supervisor's list changes (``StateCache``)."""
        if request.id:
            return wire.StateReply(request.request_id, named(containers, request.id), self._machine)
        return self._every_state.reply(request.request_id, containers)

    async def _framed(self, data: bytes, peer: str | None) -> wire.Reply:
        """A binary frame: today only a migration's chunk (``protocol.migration_frames``)."""
        chunk, blob = wire.decode_framed_request(data)
        if peer is not None:
            self._authorize_change(chunk, peer, quiet=True)  # the Begin was logged; hundreds follow
        return self.incoming.chunk(chunk, blob)

    async def _refuse_unframed_chunk(self, request: wire.MigrationChunk, _caller: Caller) -> wire.Reply:
        raise CommandError(
            wire.ErrorCode.INVALID_REQUEST,
            "a MigrationChunk travels as a binary frame (its bytes are its blob)",
        )

    def _authorize_change(self, request: Any, peer: str, quiet: bool = False) -> None:
        """Refuse a change asked by a read-only certificate; log who asked for every other one."""
        kind = type(request).__name__
        target = getattr(request, "id", None)
        if peer == UNKNOWN_PEER:
            raise CommandError(
                wire.ErrorCode.PERMISSION_DENIED,
                f"{kind} refused: the client's connection closed before its certificate could be read",
            )
        if peer in self._config.read_only_clients:
            log.warning("refused %s for %s from read-only client %r", kind, target or "-", peer)
            raise CommandError(
                wire.ErrorCode.PERMISSION_DENIED,
                f"client {peer!r} may only read; {kind} changes state",
            )
        if not quiet:
            log.info("%s for %s by client %r", kind, target or "-", peer)

    async def _ping(self, request: wire.Ping, caller: Caller = LOCAL_CALLER) -> wire.PingReply:
        if self._events_status is not None:
            status = self._events_status.current
        else:
            status = await ask(self._events, GetStatus)
        remote_events, remote_batch = self._remote_streams_for(caller)
        return wire.PingReply(
            request.request_id,
            self._config.id,
            __version__,
            self._config.events_address,
            status.subscribers,
            status.last_seq,
            self._config.events_batch_address,
            wire.PROTOCOL_VERSION,
            remote_events,
            remote_batch,
            status.journal_id,
        )

    def _remote_streams_for(self, caller: Caller) -> tuple[str | None, str | None]:
        """The event streams beside the listener a remote caller dialed: a client reaches the
        daemon by that address only (the first listener's may be on a network it cannot reach).
        Local callers, and anyone whose listener is not found, get the first listener's."""
        config = self._config
        found = None
        if caller.pipe and len(config.remote_streams) > 1:
            local = pipe_local_address(caller.pipe)
            if local is not None:
                found = streams_beside(config.remote_streams, local)
        if found is None:
            return config.remote_events_address, config.remote_events_batch_address
        return found.events, found.batch

    async def _read_output(
        self, supervisor: SupervisorMailbox, request: wire.ReadOutput, caller: Caller = LOCAL_CALLER
    ) -> wire.ReadOutputReply | Framed | Encoded:
        """Serve the attach stream from the logs: see ``ReadOutput`` and ``container.stdio``.

        Why a long poll over req/rep rather than a stream socket per attach: the logs already hold
        every byte, so a reply from an offset is byte-exact, never blocks the container (a slow
        client only reads older offsets), serves any number of clients at once, survives a client
        that is killed and comes back, and needs no second address or socket lifetime to manage.
        JSON and base64 cost about 20 ms per MiB split between daemon and client on this (2-core,
        loaded) machine; a client that asks for ``binary`` gets a binary frame instead, whose
        bytes are copied but never encoded (``scripts/bench_exec.py`` compares both with runc).
        A local client that asks for ``spans`` is told where the bytes are in the log files, and
        copies them itself (``client.log_files``): no byte crosses nng, none is copied here.
        """
        view = None if self._process_routes is None else self._process_routes.view(request.id, request.pid)
        if view is None:
            view = await forward(supervisor, request)
        try:
            return await self._output_reads.read(request, view, files=request.spans and caller.on_this_host)
        except OSError as exc:
            # The id was reused (or the logs forgotten) while this client was still reading.
            raise CommandError(
                wire.ErrorCode.NOT_FOUND, f"the logs of process {view.pid} in {request.id!r} are gone: {exc}"
            ) from None
