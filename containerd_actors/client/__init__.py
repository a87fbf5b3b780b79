"""Async (trio) client library for the daemon: the same code path `actr` and other services use.

Requests go over a raw nng Req0 (``nng_raw.RawRequestSocket``): many calls can be in flight on one
socket, replies are matched by request id, and no thread hand-off is paid per call. Raw mode never
resends, as the client wants: nng's cooked Req0 would silently resend a non-idempotent request (a
container start) after 60 s or on reconnect; a lost connection fails the calls in flight instead.

Event subscriptions are lossless by default: nng pub/sub drops events when a subscriber falls
behind, so ``EventSubscription`` watches ``seq`` and reads whatever it missed back from the
daemon's event journal (``Events`` requests) before going on; see ``Client.subscribe``. They read
the daemon's batch stream (many events per nng message) when it publishes one: a receive and a
wake-up per message is what a subscriber process pays most for, so a busy daemon's subscribers
keep up only when they pay it once per batch.
"""

from __future__ import annotations

import base64
import collections
import itertools
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import pynng
import trio

from containerd_actors.protocol import (
    MAX_EVENTS_PER_PAGE,
    MAX_MESSAGE_BYTES,
    TOPIC_SEPARATOR,
    AddProcess,
    AddProcessReply,
    Checkpoint,
    ContainerInfo,
    ContainerStats,
    CreateCheckpoint,
    CreateCheckpointReply,
    CreateContainer,
    CreateContainerReply,
    DeleteCheckpoint,
    DeleteCheckpointReply,
    ErrorReply,
    Event,
    EventBatch,
    Events,
    EventsReply,
    ListCheckpoints,
    ListCheckpointsReply,
    Metrics,
    MetricsReply,
    MetricsSnapshot,
    Ping,
    PingReply,
    ProtocolError,
    ReadOutput,
    ReadOutputReply,
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
    User,
    WriteInput,
    WriteInputReply,
    decode_event,
    decode_event_batch,
    decode_reply,
    encode_event,
    encode_request,
    event_topic,
)
from containerd_actors.transport.request import ConnectionLost, RawRequestSocket

DEFAULT_ADDRESS = "ipc:///run/containerd-actors/containerd.sock"
#: How long a call waits for its reply before giving up; a start can queue behind --concurrency.
DEFAULT_TIMEOUT_S = 120.0

ReplyT = TypeVar("ReplyT")
#: How long one ReadOutput of a follow waits for output before asking again.
FOLLOW_WAIT_S = 10.0
#: A follow whose long poll came back empty without waiting (the daemon had too many) waits this long.
FOLLOW_BACKOFF_S = 0.1
#: stdin bytes per WriteInput: base64 makes them 4/3 bigger, well under the daemon's 1 MiB limit.
INPUT_CHUNK_BYTES = 256 << 10


@attrs.frozen
class OutputChunk:
    """Decoded output of one ReadOutput; ``exited`` marks the last, with the exit ``status``."""

    stdout: bytes
    stderr: bytes
    skipped: int = 0
    exited: bool = False
    status: int | None = None
    terminal: bool = False


class ClientError(Exception):
    """Base of everything this library raises on purpose."""


class DaemonUnreachable(ClientError):
    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot reach containerd-actors at {address}: {reason}")
        self.address = address
        self.reason = reason


class RequestFailed(ClientError):
    """The daemon answered with an ErrorReply."""

    def __init__(self, error: ErrorReply) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.code = error.code
        self.message = error.message
        self.details = error.details


def normalize_address(address: str) -> str:
    """Accept a bare socket path (as the original's --address did) as well as an nng URL."""
    if "://" in address:
        return address
    return "ipc://" + os.path.abspath(address)


class Client:
    """A connection to one daemon. Create it with ``Client.connect``."""

    def __init__(self, address: str, socket: RawRequestSocket, timeout: float) -> None:
        self.address = address
        self._socket = socket
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid()}-{id(self):x}"
        self._streams: tuple[str, str | None] | None = None

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, address: str = DEFAULT_ADDRESS, timeout: float = DEFAULT_TIMEOUT_S
    ) -> AsyncIterator[Client]:
        address = normalize_address(address)
        try:
            socket = RawRequestSocket(address, recv_max_size=MAX_MESSAGE_BYTES * 64)
        except pynng.NNGException as exc:
            raise DaemonUnreachable(address, str(exc)) from None
        with socket:
            yield cls(address, socket, timeout)

    def _next_request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    async def call(
        self, request_type: type, reply_type: type[ReplyT], *, timeout: float | None = None, **fields: Any
    ) -> ReplyT:
        """Send one request and return its typed reply; an ErrorReply raises ``RequestFailed``."""
        request = request_type(request_id=self._next_request_id(), **fields)
        payload = encode_request(request)
        timeout = self._timeout if timeout is None else timeout
        try:
            with trio.fail_after(timeout):
                raw = await self._socket.request(payload)
        except trio.TooSlowError:
            raise DaemonUnreachable(self.address, f"no reply within {timeout:g} s") from None
        except (pynng.NNGException, ConnectionLost) as exc:
            raise DaemonUnreachable(self.address, str(exc)) from None
        try:
            reply = decode_reply(raw)
        except ProtocolError as exc:
            raise ClientError(f"undecodable reply from daemon: {exc.message}") from None
        if isinstance(reply, ErrorReply):
            raise RequestFailed(reply)
        if not isinstance(reply, reply_type):
            raise ClientError(f"expected {reply_type.__name__}, got {type(reply).__name__}")
        return reply

    async def ping(self) -> PingReply:
        return await self.call(Ping, PingReply)

    async def create_container(self, id: str, bundle: str, checkpoint: str | None = None) -> int:
        """Start a container (restored from ``checkpoint`` if given); returns its init pid."""
        reply = await self.call(
            CreateContainer, CreateContainerReply, id=id, bundle=bundle, checkpoint=checkpoint
        )
        return reply.pid

    async def create_checkpoint(
        self,
        id: str,
        name: str,
        *,
        tcp: bool = False,
        unix_sockets: bool = False,
        shell: bool = False,
        exit: bool = False,
    ) -> Checkpoint:
        reply = await self.call(
            CreateCheckpoint,
            CreateCheckpointReply,
            id=id,
            name=name,
            tcp=tcp,
            unix_sockets=unix_sockets,
            shell=shell,
            exit=exit,
        )
        return reply.checkpoint

    async def list_checkpoints(self, id: str) -> list[Checkpoint]:
        return (await self.call(ListCheckpoints, ListCheckpointsReply, id=id)).checkpoints

    async def delete_checkpoint(self, id: str, name: str) -> None:
        await self.call(DeleteCheckpoint, DeleteCheckpointReply, id=id, name=name)

    async def signal(self, id: str, signal: int = 15, pid: int = 0) -> None:
        await self.call(Signal, SignalReply, id=id, signal=signal, pid=pid)

    async def state(self) -> StateReply:
        return await self.call(State, StateReply)

    async def containers(self) -> list[ContainerInfo]:
        return (await self.state()).containers

    async def pause(self, id: str) -> None:
        await self.call(UpdateContainer, UpdateContainerReply, id=id, status="paused")

    async def resume(self, id: str) -> None:
        await self.call(UpdateContainer, UpdateContainerReply, id=id, status="running")

    async def stats(self, id: str) -> ContainerStats:
        """One cgroup sample; call it about once a second to stream."""
        return (await self.call(Stats, StatsReply, id=id)).stats

    async def metrics(self) -> MetricsSnapshot:
        return (await self.call(Metrics, MetricsReply)).metrics

    async def add_process(
        self,
        id: str,
        args: list[str],
        *,
        env: list[str] | None = None,
        cwd: str = "",
        user: User | None = None,
        terminal: bool = False,
        rows: int = 0,
        cols: int = 0,
    ) -> int:
        """Exec ``args`` in a running container (runc exec); returns the new process's pid."""
        reply = await self.call(
            AddProcess,
            AddProcessReply,
            id=id,
            args=list(args),
            env=list(env or []),
            cwd=cwd,
            user=user,
            terminal=terminal,
            rows=rows,
            cols=cols,
        )
        return reply.pid

    async def read_output(
        self,
        id: str,
        pid: int = 0,
        *,
        stdout_offset: int = 0,
        stderr_offset: int = 0,
        wait: float = 0.0,
        max_bytes: int = 1 << 20,
        tail: int = -1,
    ) -> ReadOutputReply:
        """One read of a process's output (base64 fields); see ``follow_output`` for a stream."""
        return await self.call(
            ReadOutput,
            ReadOutputReply,
            id=id,
            pid=pid,
            stdout_offset=stdout_offset,
            stderr_offset=stderr_offset,
            wait=wait,
            max_bytes=max_bytes,
            tail=tail,
        )

    async def follow_output(
        self,
        id: str,
        pid: int = 0,
        *,
        follow: bool = True,
        tail: int = -1,
        offsets: tuple[int, int] = (0, 0),
    ) -> AsyncIterator[OutputChunk]:
        """Yield a process's output from ``offsets`` (stdout, stderr; by default its start), or from
        its last ``tail`` lines, until it exits.

        Without ``follow`` it stops at the current end of the logs instead. Each chunk is a
        long-poll reply; the last one (``exited``) carries the exit status.
        """
        out_offset, err_offset = offsets
        while True:
            reply = await self.read_output(
                id,
                pid,
                stdout_offset=out_offset,
                stderr_offset=err_offset,
                wait=FOLLOW_WAIT_S if follow else 0.0,
                tail=tail,
            )
            tail = -1
            stdout = base64.b64decode(reply.stdout)
            stderr = base64.b64decode(reply.stderr)
            out_offset, err_offset = reply.next_stdout_offset, reply.next_stderr_offset
            yield OutputChunk(stdout, stderr, reply.skipped, reply.exited, reply.status, reply.terminal)
            if reply.exited:
                return
            if not stdout and not stderr:
                if not follow:
                    return
                await trio.sleep(FOLLOW_BACKOFF_S)  # the daemon's long polls were all taken

    async def write_input(self, id: str, data: bytes, pid: int = 0, *, close: bool = False) -> None:
        """Write all of ``data`` to a process's stdin, in chunks that fit a request; then maybe EOF."""
        view = memoryview(data)
        while True:
            chunk = bytes(view[:INPUT_CHUNK_BYTES])
            final = len(chunk) == len(view)
            reply = await self.call(
                WriteInput,
                WriteInputReply,
                id=id,
                pid=pid,
                data=base64.b64encode(chunk).decode(),
                close=close and final,
            )
            view = view[reply.written :]
            if final and reply.written == len(chunk):
                return

    async def resize_terminal(self, id: str, rows: int, cols: int, pid: int = 0) -> None:
        await self.call(ResizeTerminal, ResizeTerminalReply, id=id, pid=pid, rows=rows, cols=cols)

    async def events_address(self) -> str:
        return (await self.event_streams())[0]

    async def event_streams(self) -> tuple[str, str | None]:
        """The addresses of the per-event stream and of the batch stream (None: not published)."""
        if self._streams is None:
            ping = await self.ping()
            self._streams = (ping.events_address, ping.events_batch_address)
        return self._streams

    async def events_page(
        self, from_seq: int = 0, since: float | None = None, limit: int = 1000
    ) -> EventsReply:
        """One page of the daemon's event journal (see ``Events`` in proto_schemas/README.md)."""
        return await self.call(Events, EventsReply, from_seq=from_seq, since=since, limit=limit)

    @asynccontextmanager
    async def subscribe(
        self,
        topic_prefix: str = "",
        *,
        from_seq: int | None = None,
        since: float | None = None,
        fill_gaps: bool = True,
        on_loss: Callable[[EventsLost], None] | None = None,
        batched: bool | None = None,
    ) -> AsyncIterator[EventSubscription]:
        """Subscribe to events whose topic starts with ``topic_prefix`` (all by default).

        The subscription is ready when this context is entered. By default it is lossless:
        every event published after that moment is delivered exactly once, in ``seq`` order,
        however slowly the caller reads, as long as the daemon's journal still holds it.

        ``from_seq`` (or ``since``, a Unix time) first replays older events from the journal,
        then continues live with no gap and no duplicate at the seam; ``from_seq=0`` starts at
        the oldest event the journal still has. Events asked for that the journal no longer has
        (beyond ``--events-retention``) cannot be delivered: each such range is recorded in
        ``subscription.lost`` and passed to ``on_loss``, never skipped silently.

        A gap is only visible in the full ``seq`` stream, so a lossless subscription receives
        every event and filters by ``topic_prefix`` here, as nng would. ``fill_gaps=False``
        (without ``from_seq``/``since``) gives the raw nng stream instead: lossy under overload
        (``seq`` then reveals what was dropped), and on the per-event stream filtered by nng.

        ``batched`` picks the live stream: the batch stream (``EventBatch`` messages of many
        events), which the daemon advertises in ``PingReply.events_batch_address``, or one nng
        message per event. None (the default) takes the batch stream when the daemon publishes
        one; True insists on it. Events are yielded one by one, the same either way.
        """
        lossless = fill_gaps or from_seq is not None or since is not None
        events_address, batch_address = await self.event_streams()
        if batched is None:
            batched = batch_address is not None
        elif batched and batch_address is None:
            raise ClientError(f"the daemon at {self.address} publishes no batch stream")
        address = batch_address if batched and batch_address is not None else events_address
        socket = pynng.Sub0(recv_max_size=MAX_MESSAGE_BYTES)
        try:
            # nng filters by topic prefix; batches have no topic, so their events are filtered here.
            socket.subscribe(b"" if lossless or batched else topic_prefix.encode())
            try:
                socket.dial(address, block=True)
            except pynng.NNGException as exc:
                raise DaemonUnreachable(address, str(exc)) from None
            ping = await _wait_until_subscribed(self)
            if not lossless:
                yield EventSubscription(socket, topic_prefix=topic_prefix.encode(), batched=batched)
                return
            yield EventSubscription(
                socket,
                client=self,
                topic_prefix=topic_prefix.encode(),
                next_seq=_start_seq(from_seq, since, ping.last_event_seq),
                known_last_seq=ping.last_event_seq,
                since=since,
                on_loss=on_loss,
                batched=batched,
            )
        finally:
            socket.close()


def _start_seq(from_seq: int | None, since: float | None, last_event_seq: int) -> int:
    """The first seq a new subscription wants: ``from_seq``, or the next one live.

    0 means "wherever the journal starts": the oldest event kept, or the first at ``since``.
    """
    if from_seq is not None:
        return from_seq
    if since is not None:
        return 0
    return last_event_seq + 1


async def _wait_until_subscribed(client: Client) -> PingReply:
    """nng connects the pipe asynchronously even after a blocking dial returns on the dialer side.

    One request round trip to the same daemon gives the listener time to accept the pipe; it is
    cheap and makes "subscribe, then act" free of a race in practice. Its ``last_event_seq`` is
    where a lossless subscription starts: anything after it that the pipe missed is a gap.
    """
    return await client.ping()


@attrs.frozen
class EventsLost:
    """Events ``first_seq..last_seq`` cannot be delivered: the journal no longer has them.

    ``first_available_seq`` is the oldest seq the journal held when this was found: if
    ``last_seq`` is below it, the events aged out (``--events-retention``); otherwise the
    daemon found them unreadable (its log says why).
    """

    first_seq: int
    last_seq: int
    first_available_seq: int

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1

    @property
    def beyond_retention(self) -> bool:
        return self.last_seq < self.first_available_seq


@attrs.define
class SubscriptionStats:
    """What a lossless subscription did, for callers who want to know (and for the tests)."""

    live: int = 0  #: events taken from the live stream
    replayed: int = 0  #: events read from the journal (replay and gap filling)
    duplicates: int = 0  #: live events already delivered from the journal, skipped
    gaps: int = 0  #: times a jump in live seq sent the subscription to the journal
    pages: int = 0  #: Events requests made
    lost: int = 0  #: events that could not be delivered (see ``EventSubscription.lost``)
    batches: int = 0  #: messages received from the batch stream


#: Events of a live batch built at a time (see ``EventSubscription._queue_from_batch``).
EVENTS_PER_CHUNK = 64
#: How long a lossless subscription waits on a silent live stream before asking the journal
#: whether it missed the last events of a burst; doubled while nothing happens, up to the max.
IDLE_CHECK_MIN_S = 0.5
IDLE_CHECK_MAX_S = 10.0
#: An idle check that the daemon does not answer this fast is skipped, not fatal.
IDLE_CHECK_TIMEOUT_S = 5.0


class EventSubscription:
    """Async iterator of decoded events from one Sub0 socket, lossless unless made raw.

    Lossless mode keeps one cursor, ``next_seq``: everything before it has been delivered.
    A live event below it is a duplicate and is skipped; one above it means events were
    dropped, so the subscription reads from the journal from ``next_seq`` (in pages, until it
    has caught up with the daemon's newest seq) and only then listens again. Nothing is
    buffered here beyond one page or one batch: the daemon's journal is the buffer, so a slow
    reader costs memory nowhere. A live stream that stays silent is checked against the journal
    now and then, so that the tail of a burst that nng dropped is delivered too.

    On the batch stream (``batched``) each message is an ``EventBatch``: the same rules apply
    to its range of seqs at once, and its events are filtered by topic here.
    """

    def __init__(
        self,
        socket: pynng.Sub0,
        *,
        client: Client | None = None,
        topic_prefix: bytes = b"",
        next_seq: int = 1,
        known_last_seq: int = 0,
        since: float | None = None,
        on_loss: Callable[[EventsLost], None] | None = None,
        batched: bool = False,
    ) -> None:
        self._socket = socket
        self._client = client
        self._prefix = topic_prefix
        self._batched = batched
        self.next_seq = next_seq
        self._known_last_seq = known_last_seq
        self._since = since
        #: The first page decides where the stream starts (oldest kept, or first at ``since``),
        #: so events before it are not "lost": they were not asked for.
        self._open_start = since is not None or next_seq == 0
        self._on_loss = on_loss
        self._pending: collections.deque[Event] = collections.deque()
        #: The live batch whose events from ``_batch_next`` on are still to be queued.
        self._batch: EventBatch | None = None
        self._batch_next = 0
        #: Whether an event kind's topic matches the prefix (``_matches``), worked out once per kind.
        self._kind_matches: dict[str, bool] = {}
        self._idle_check = IDLE_CHECK_MIN_S
        self.stats = SubscriptionStats()
        self.lost: list[EventsLost] = []

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> Event:
        if self._client is None:
            return await self._next_raw()
        while True:
            if (event := self._next_queued()) is not None:
                return event
            if self._pending or self._batch is not None:
                continue
            if self._open_start or self.next_seq <= self._known_last_seq:
                await self._read_journal()
                continue
            with trio.move_on_after(self._idle_check) as idle:
                message = await self._receive()
            if idle.cancelled_caught:
                await self._check_when_idle()
                continue
            self._idle_check = IDLE_CHECK_MIN_S
            if self._batched:
                self._take_batch(message)
                continue
            event = decode_event(message)
            if event.seq < self.next_seq:
                self.stats.duplicates += 1
                continue
            if event.seq > self.next_seq:
                # Dropped by nng: read from the journal up to here (and beyond, if more came).
                self.stats.gaps += 1
                self._known_last_seq = max(self._known_last_seq, event.seq)
                continue
            self.next_seq += 1
            self.stats.live += 1
            if message.startswith(self._prefix):
                return event

    def _next_queued(self) -> Event | None:
        """The next wanted event already received or read back, if any, refilling from a live batch."""
        if self._pending:
            event = self._pending.popleft()
            if not self._prefix or self._matches(event):
                return event
            return None
        if self._batch is not None:
            self._queue_from_batch()
        return None

    async def _next_raw(self) -> Event:
        """The raw stream: what nng delivers, nothing read from the journal."""
        if not self._batched:
            return decode_event(await self._receive())
        while True:
            if (event := self._next_queued()) is not None:
                return event
            if self._pending or self._batch is not None:
                continue
            batch = decode_event_batch(await self._receive())
            self.stats.batches += 1
            self.stats.live += batch.count
            self._batch, self._batch_next = batch, 0

    def _take_batch(self, message: bytes) -> None:
        """Accept the events of a live batch that come next; note a gap before it."""
        batch = decode_event_batch(message)
        self.stats.batches += 1
        if batch.last_seq < self.next_seq:
            self.stats.duplicates += batch.count
            return
        if batch.first_seq > self.next_seq:
            # Batches were dropped by nng: read from the journal up to here, this one included.
            self.stats.gaps += 1
            self._known_last_seq = max(self._known_last_seq, batch.last_seq)
            return
        skip = self.next_seq - batch.first_seq
        self.stats.duplicates += skip
        self.stats.live += batch.count - skip
        self._batch, self._batch_next = batch, skip
        self.next_seq = batch.last_seq + 1

    def _queue_from_batch(self) -> None:
        """Queue the next few events of the live batch, built just before they are handed out.

        A few at a time rather than the whole batch: the memory of the events handed out is
        reused for the next ones while it is still in the CPU's cache, which matters when a
        hundred subscriber processes take turns on two cores.
        """
        batch = self._batch
        assert batch is not None
        start = self._batch_next
        stop = min(start + EVENTS_PER_CHUNK, batch.count)
        self._pending.extend(batch.events(start, stop))
        self._batch_next = stop
        if stop >= batch.count:
            self._batch = None

    async def _receive(self) -> bytes:
        try:
            return await self._socket.arecv()
        except pynng.Closed:
            raise StopAsyncIteration from None

    def _matches(self, event: Event) -> bool:
        """The nng prefix match, applied to an event read from the journal or from a batch."""
        matches = self._kind_matches.get(event.type)
        if matches is not None:
            return matches
        head = event_topic(event.type).encode() + TOPIC_SEPARATOR
        if len(self._prefix) > len(head):
            return encode_event(event).startswith(self._prefix)  # reaches into the JSON itself
        matches = self._kind_matches[event.type] = head.startswith(self._prefix)
        return matches

    async def _read_journal(self, timeout: float | None = None) -> None:
        """Read one page from ``next_seq`` into the pending queue, noting what is lost."""
        assert self._client is not None
        reply = await self._client.call(
            Events,
            EventsReply,
            timeout=timeout,
            from_seq=self.next_seq,
            since=self._since,
            limit=MAX_EVENTS_PER_PAGE,
        )
        self.stats.pages += 1
        expected = self.next_seq
        if self._open_start:
            expected = reply.events[0].seq if reply.events else max(expected, reply.next_seq)
            self._open_start = False
            self._since = None
        for event in reply.events:
            if event.seq < expected:
                continue
            if event.seq > expected:
                self._lose(expected, event.seq - 1, reply.first_available_seq)
            self._pending.append(event)
            expected = event.seq + 1
        if reply.next_seq > expected:
            self._lose(expected, reply.next_seq - 1, reply.first_available_seq)
            expected = reply.next_seq
        self.stats.replayed += len(reply.events)
        self.next_seq = expected
        self._known_last_seq = max(self._known_last_seq, reply.last_seq)

    async def _check_when_idle(self) -> None:
        """Ask the journal for anything newer than ``next_seq``; a daemon that is away is no error."""
        try:
            await self._read_journal(timeout=IDLE_CHECK_TIMEOUT_S)
        except DaemonUnreachable:
            pass  # restarting, perhaps: the live stream reconnects by itself, and gaps get filled
        self._idle_check = min(self._idle_check * 2, IDLE_CHECK_MAX_S)

    def _lose(self, first_seq: int, last_seq: int, first_available_seq: int) -> None:
        lost = EventsLost(first_seq, last_seq, first_available_seq)
        self.lost.append(lost)
        self.stats.lost += lost.count
        if self._on_loss is not None:
            self._on_loss(lost)
