"""The API server: workers with a Rep0 context each take turns to receive, then decode, ask and reply.

Concurrency comes from the number of workers: a start can sit on the ``--concurrency`` limiter for
a while, and with enough workers a State or Ping request is never stuck behind queued starts. When
every worker is busy nobody receives, so nng stops reading and requesters queue in their pipes,
not in the daemon's memory. Every failure becomes an ErrorReply: a request can never take the
daemon down. See ``nng_reply`` for how the contexts are driven without nng's threads.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import pynng
import trio

from containerd_actors import __version__
from containerd_actors.daemon.config import DaemonConfig
from containerd_actors.daemon.container.messages import (
    AddProcessCommand,
    ChangeStatus,
    DeleteCheckpointCommand,
    FindProcessIO,
    ListCheckpointsCommand,
    ListContainers,
    SampleStats,
    SignalProcess,
    StartContainer,
    TakeCheckpoint,
    ToContainer,
)
from containerd_actors.daemon.container.stdio import ProcessIO, StdinClosed
from containerd_actors.daemon.events.actor import EventsStatus, GetStatus, ReadEvents
from containerd_actors.daemon.events.journal import JournalPage
from containerd_actors.daemon.mailbox import CommandError, ReplyTo, ask
from containerd_actors.daemon.metrics.actor import TakeSnapshot
from containerd_actors.protocol import (
    MAX_MESSAGE_BYTES,
    AddProcess,
    AddProcessReply,
    CreateCheckpoint,
    CreateCheckpointReply,
    CreateContainer,
    CreateContainerReply,
    DeleteCheckpoint,
    DeleteCheckpointReply,
    ErrorCode,
    ErrorReply,
    Events,
    EventsReply,
    ListCheckpoints,
    ListCheckpointsReply,
    MachineInfo,
    Metrics,
    MetricsReply,
    Ping,
    PingReply,
    ProtocolError,
    ReadOutput,
    ReadOutputReply,
    Reply,
    Request,
    ResizeTerminal,
    ResizeTerminalReply,
    Signal,
    SignalReply,
    State,
    StateReply,
    Stats,
    StatsReply,
    UpdateContainer,
    UpdateContainerReply,
    WriteInput,
    WriteInputReply,
    decode_request,
    encode_reply,
)
from containerd_actors.transport.reply import ReplySocket

log = logging.getLogger(__name__)

#: Requests served at once. Starts beyond --concurrency wait inside the daemon, holding a worker.
WORKER_CONTEXTS = 256
#: A reply the client no longer waits for must not hold a worker forever.
SEND_TIMEOUT_S = 10.0
#: Long polls (ReadOutput with ``wait``) served at once; each holds a worker while it
#: waits, so without a cap 256 attached clients would starve every other request. Beyond the cap
#: a ReadOutput answers at once and the client library backs off before asking again.
MAX_WAITING_READS = WORKER_CONTEXTS // 2
#: A WriteInput to a process that does not read its stdin gives up after this and reports how
#: much it wrote, so a stuck process cannot hold a worker.
WRITE_INPUT_TIMEOUT_S = 5.0


def machine_info(daemon_id: str) -> MachineInfo:
    memory = 0
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return MachineInfo(daemon_id, os.cpu_count() or 1, memory)


class ApiServer:
    def __init__(
        self,
        config: DaemonConfig,
        supervisor: trio.MemorySendChannel[Any],
        events: trio.MemorySendChannel[Any],
        metrics: trio.MemorySendChannel[Any],
        events_status: Callable[[], EventsStatus] | None = None,
    ) -> None:
        self._config = config
        self._supervisor = supervisor
        self._events = events
        #: Read directly when given (same thread): a Ping then never waits behind a journal page.
        self._events_status = events_status
        self._metrics = metrics
        self._machine = machine_info(config.id)
        self._waiting_reads = trio.CapacityLimiter(MAX_WAITING_READS)
        self.served = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with ReplySocket(self._config.listen, MAX_MESSAGE_BYTES, SEND_TIMEOUT_S) as sock:
            log.info("listening on %s", self._config.listen)
            # Unbuffered: a request is taken from nng only when a worker is free to serve it.
            # One worker at a time reads the socket; see ``_worker``.
            reading = trio.Lock()
            async with trio.open_nursery() as nursery:
                for _ in range(WORKER_CONTEXTS):
                    nursery.start_soon(self._worker, sock, reading)
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
                    request = await context.receive()
                except pynng.Closed:
                    return
            reply = await self.handle(request)
            try:
                if not await context.reply(encode_reply(reply)):
                    log.debug("reply dropped: the requester stopped reading")
            except pynng.NNGException as exc:
                log.debug("reply not delivered: %s", exc)
            self.served += 1

    async def handle(self, data: bytes) -> Reply:
        """Decode one request and answer it; exceptions become ErrorReplies."""
        request_id: str | None = None
        try:
            request = decode_request(data)
            request_id = request.request_id
            return await self._dispatch(request)
        except ProtocolError as exc:
            return exc.to_reply()
        except CommandError as exc:
            return ErrorReply(request_id, exc.code, exc.message, exc.details)
        except Exception as exc:
            log.exception("request failed unexpectedly")
            return ErrorReply(request_id, ErrorCode.INTERNAL, f"internal error: {exc!r}")

    async def _dispatch(self, request: Request) -> Reply:
        if isinstance(request, Ping):
            if self._events_status is not None:
                status = self._events_status()
            else:
                status = await ask(self._events, GetStatus)
            return PingReply(
                request.request_id,
                self._config.id,
                __version__,
                self._config.events_address,
                status.subscribers,
                status.last_seq,
                self._config.events_batch_address,
            )
        if isinstance(request, Events):
            page: JournalPage = await ask(
                self._events,
                lambda reply: ReadEvents(request.from_seq, request.limit, request.since, reply),
            )
            return EventsReply(
                request.request_id, page.events, page.next_seq, page.last_seq, page.first_available_seq
            )
        if isinstance(request, CreateContainer):
            pid = await ask(
                self._supervisor,
                lambda reply: StartContainer(request.id, request.bundle, request.checkpoint, reply),
            )
            return CreateContainerReply(request.request_id, pid)
        if isinstance(request, Signal):
            await self._ask_container(
                request.id, lambda reply: SignalProcess(request.pid, request.signal, reply)
            )
            return SignalReply(request.request_id)
        if isinstance(request, State):
            containers = await ask(self._supervisor, ListContainers)
            return StateReply(request.request_id, containers, self._machine)
        if isinstance(request, CreateCheckpoint):
            checkpoint = await self._ask_container(
                request.id,
                lambda reply: TakeCheckpoint(
                    request.name, request.tcp, request.unix_sockets, request.shell, request.exit, reply
                ),
            )
            return CreateCheckpointReply(request.request_id, checkpoint)
        if isinstance(request, ListCheckpoints):
            checkpoints = await self._ask_container(request.id, ListCheckpointsCommand)
            return ListCheckpointsReply(request.request_id, checkpoints)
        if isinstance(request, DeleteCheckpoint):
            await self._ask_container(request.id, lambda reply: DeleteCheckpointCommand(request.name, reply))
            return DeleteCheckpointReply(request.request_id)
        if isinstance(request, UpdateContainer):
            await self._ask_container(request.id, lambda reply: ChangeStatus(request.status, reply))
            return UpdateContainerReply(request.request_id)
        if isinstance(request, Stats):
            return StatsReply(request.request_id, await self._ask_container(request.id, SampleStats))
        if isinstance(request, Metrics):
            return MetricsReply(request.request_id, await ask(self._metrics, TakeSnapshot))
        if isinstance(request, AddProcess):
            pid = await self._ask_container(
                request.id,
                lambda reply: AddProcessCommand(
                    request.args,
                    request.env,
                    request.cwd,
                    request.user,
                    request.terminal,
                    request.rows,
                    request.cols,
                    reply,
                ),
            )
            return AddProcessReply(request.request_id, pid)
        if isinstance(request, ReadOutput):
            return await self._read_output(request)
        if isinstance(request, WriteInput):
            return await self._write_input(request)
        if isinstance(request, ResizeTerminal):
            io = await self._find_process_io(request.id, request.pid)
            try:
                io.resize(request.rows, request.cols)
            except OSError as exc:
                raise CommandError(ErrorCode.INVALID_STATE, f"cannot resize: {exc.strerror or exc}") from None
            return ResizeTerminalReply(request.request_id)
        raise CommandError(ErrorCode.UNKNOWN_TYPE, f"request {type(request).__name__} is not served")

    async def _find_process_io(self, id: str, pid: int) -> ProcessIO:
        return await ask(self._supervisor, lambda reply: FindProcessIO(id, pid, reply))

    async def _read_output(self, request: ReadOutput) -> ReadOutputReply:
        """Serve the attach stream from the logs: see ``ReadOutput`` and ``ProcessIO``.

        Why a long poll over req/rep rather than a stream socket per attach: the logs already hold
        every byte, so a reply from an offset is byte-exact, never blocks the container (a slow
        client only reads older offsets), serves any number of clients at once, survives a client
        that is killed and comes back, and needs no second address or socket lifetime to manage.
        The price is JSON and base64: about 20 ms per MiB split between daemon and client on this
        (2-core, loaded) machine, so 50 MB arrive in 2-2.5 s with 1 MiB per stream per reply
        (``scripts/bench_exec.py``); the drain into the log runs at 400+ MB/s regardless.
        """
        io = await self._find_process_io(request.id, request.pid)
        try:
            return await self._read_logs(request, io)
        except OSError as exc:
            # The id was reused (or the logs forgotten) while this client was still reading.
            raise CommandError(
                ErrorCode.NOT_FOUND, f"the logs of process {io.pid} in {request.id!r} are gone: {exc}"
            ) from None

    async def _read_logs(self, request: ReadOutput, io: ProcessIO) -> ReadOutputReply:
        wait = request.wait
        if wait > 0:
            try:
                self._waiting_reads.acquire_nowait()
            except trio.WouldBlock:
                wait = 0.0
            else:
                try:
                    chunk = await io.read(
                        request.stdout_offset,
                        request.stderr_offset,
                        wait=wait,
                        max_bytes=request.max_bytes,
                        tail=request.tail,
                    )
                finally:
                    self._waiting_reads.release()
        if wait == 0:
            chunk = await io.read(
                request.stdout_offset,
                request.stderr_offset,
                wait=0,
                max_bytes=request.max_bytes,
                tail=request.tail,
            )
        return ReadOutputReply(
            request.request_id,
            stdout=base64.b64encode(chunk.stdout).decode(),
            stderr=base64.b64encode(chunk.stderr).decode(),
            stdout_offset=chunk.stdout_offset,
            stderr_offset=chunk.stderr_offset,
            next_stdout_offset=chunk.stdout_offset + len(chunk.stdout),
            next_stderr_offset=chunk.stderr_offset + len(chunk.stderr),
            skipped=chunk.skipped,
            exited=chunk.exited,
            status=chunk.status,
            terminal=io.terminal,
        )

    async def _write_input(self, request: WriteInput) -> WriteInputReply:
        io = await self._find_process_io(request.id, request.pid)
        data = base64.b64decode(request.data)
        try:
            written = await io.write_input(data, WRITE_INPUT_TIMEOUT_S) if data else 0
            if request.close and written == len(data):
                io.end_input()
        except StdinClosed:
            raise CommandError(
                ErrorCode.INVALID_STATE, f"the stdin of process {io.pid} in {request.id!r} is closed"
            ) from None
        return WriteInputReply(request.request_id, written)

    async def _ask_container(self, id: str, build: Callable[[ReplyTo], Any]) -> Any:
        return await ask(self._supervisor, lambda reply: ToContainer(id, build(reply)))


def default_daemon_id() -> str:
    return socket.gethostname()
