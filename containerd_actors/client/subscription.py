"""The lossless event subscription: nng's lossy pub/sub, with gaps filled from the daemon's journal.

nng pub/sub drops events when a subscriber falls behind, so ``EventSubscription`` watches ``seq``
and reads whatever it missed back from the daemon's event journal (``Events`` requests) before
going on. It reads the daemon's batch stream (many events per nng message) when the daemon
publishes one: a receive and a wake-up per message is what a subscriber process pays most for,
so a busy daemon's subscribers keep up only when they pay it once per batch.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
import attrs
import pynng
import trio

import containerd_actors.protocol as wire
from containerd_actors.client.errors import ClientError, DaemonUnreachable
from containerd_actors.transport.tls import TlsFiles, host_of, is_tls


class DaemonConnection(Protocol):
    """What a subscription needs of a connection to the daemon (``Client`` is one): where the
    streams are published, a Ping to learn the newest ``seq``, and pages of the journal."""

    address: str
    tls: TlsFiles | None

    async def event_streams(self) -> tuple[str, str | None]: ...

    async def ping(self) -> wire.PingReply: ...

    async def events_page(
        self, from_seq: int, since: float | None, *, timeout: float | None = None
    ) -> wire.EventsReply: ...


@asynccontextmanager
async def subscribe(
    client: DaemonConnection,
    topic_prefix: str = "",
    *,
    from_seq: int | None = None,
    since: float | None = None,
    fill_gaps: bool = True,
    on_loss: Callable[[EventsLost], None] | None = None,
    batched: bool | None = None,
    on_reset: Callable[[JournalReset], None] | None = None,
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

    If the daemon's journal is wiped (its ``journal_id`` changes, or seqs go backwards with newer
    timestamps), seq starts again: the subscription records a ``JournalReset`` in
    ``subscription.resets``, passes it to ``on_reset``, and goes on from the new journal's first
    event, so the new events are delivered rather than taken for duplicates.

    ``batched`` picks the live stream: the batch stream (``EventBatch`` messages of many
    events), which the daemon advertises in ``PingReply.events_batch_address``, or one nng
    message per event. None (the default) takes the batch stream when the daemon publishes
    one; True insists on it. Events are yielded one by one, the same either way.
    """
    lossless = fill_gaps or from_seq is not None or since is not None
    events_address, batch_address = await client.event_streams()
    if batched is None:
        batched = batch_address is not None
    elif batched and batch_address is None:
        raise ClientError(f"the daemon at {client.address} publishes no batch stream")
    address = batch_address if batched and batch_address is not None else events_address
    socket = pynng.Sub0(recv_max_size=wire.MAX_MESSAGE_BYTES)
    try:
        if is_tls(address) and client.tls is not None:
            socket.tls_config = client.tls.client_config(host_of(address))
        # nng filters by topic prefix; batches have no topic, so their events are filtered here.
        socket.subscribe(b"" if lossless or batched else topic_prefix.encode())
        try:
            socket.dial(address, block=True)
        except pynng.NNGException as exc:
            raise DaemonUnreachable(address, str(exc)) from None
        ping = await _wait_until_subscribed(client)
        if not lossless:
            yield EventSubscription(socket, topic_prefix=topic_prefix.encode(), batched=batched)
            return
        yield EventSubscription(
            socket,
            client=client,
            topic_prefix=topic_prefix.encode(),
            next_seq=_start_seq(from_seq, since, ping.last_event_seq),
            known_last_seq=ping.last_event_seq,
            since=since,
            on_loss=on_loss,
            batched=batched,
            journal_id=ping.journal_id,
            on_reset=on_reset,
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


async def _wait_until_subscribed(client: DaemonConnection) -> wire.PingReply:
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


@attrs.frozen
class JournalReset:
    """The daemon's journal was wiped: seq started again, and events before ``new_first_seq`` of
    the new journal follow those before ``old_next_seq`` of the old one.

    ``old_journal_id``/``new_journal_id`` are empty where the daemon is too old to say (then the
    reset was seen from seqs that went backwards while time went forwards).
    """

    old_journal_id: str
    new_journal_id: str
    old_next_seq: int


@attrs.define
class SubscriptionStats:
    """What a lossless subscription did, for callers who want to know (and for the tests)."""

    live: int = 0  #: events taken from the live stream
    replayed: int = 0  #: events read from the journal (replay and gap filling)
    duplicates: int = 0  #: live events already delivered from the journal, skipped
    gaps: int = 0  #: times a jump in live seq sent the subscription to the journal
    pages: int = 0  #: Events requests made
    lost: int = 0  #: events that could not be delivered (see ``EventSubscription.lost``)
    resets: int = 0  #: times the daemon's journal was found wiped (see ``EventSubscription.resets``)
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
        client: DaemonConnection | None = None,
        topic_prefix: bytes = b"",
        next_seq: int = 1,
        known_last_seq: int = 0,
        since: float | None = None,
        on_loss: Callable[[EventsLost], None] | None = None,
        batched: bool = False,
        journal_id: str = "",
        on_reset: Callable[[JournalReset], None] | None = None,
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
        self._pending: collections.deque[wire.Event] = collections.deque()
        #: The live batch whose events from ``_batch_next`` on are still to be queued.
        self._batch: wire.EventBatch | None = None
        self._batch_next = 0
        #: Whether an event kind's topic matches the prefix (``_matches``), worked out once per kind.
        self._kind_matches: dict[str, bool] = {}
        self._idle_check = IDLE_CHECK_MIN_S
        self.stats = SubscriptionStats()
        self.lost: list[EventsLost] = []
        self._journal_id = journal_id
        self._on_reset = on_reset
        #: The newest timestamp among the events taken in order: a live event with a lower seq
        #: but a newer time is not a duplicate but a sign of a wiped journal.
        self._newest_time = 0.0
        self.resets: list[JournalReset] = []

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> wire.Event:
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
            event = wire.decode_event(message)
            if event.seq < self.next_seq:
                if event.timestamp > self._newest_time and await self._journal_was_wiped():
                    continue  # read again from the new journal's start, this event included
                self.stats.duplicates += 1
                continue
            if event.seq > self.next_seq:
                # Dropped by nng: read from the journal up to here (and beyond, if more came).
                self.stats.gaps += 1
                self._known_last_seq = max(self._known_last_seq, event.seq)
                continue
            self.next_seq += 1
            self._newest_time = max(self._newest_time, event.timestamp)
            self.stats.live += 1
            if message.startswith(self._prefix):
                return event

    def _next_queued(self) -> wire.Event | None:
        """The next wanted event already received or read back, if any, refilling from a live batch."""
        if self._pending:
            event = self._pending.popleft()
            if not self._prefix or self._matches(event):
                return event
            return None
        if self._batch is not None:
            self._queue_from_batch()
        return None

    async def _next_raw(self) -> wire.Event:
        """The raw stream: what nng delivers, nothing read from the journal."""
        if not self._batched:
            return wire.decode_event(await self._receive())
        while True:
            if (event := self._next_queued()) is not None:
                return event
            if self._pending or self._batch is not None:
                continue
            batch = wire.decode_event_batch(await self._receive())
            self.stats.batches += 1
            self.stats.live += batch.count
            self._batch, self._batch_next = batch, 0

    def _take_batch(self, message: bytes) -> None:
        """Accept the events of a live batch that come next; note a gap before it."""
        batch = wire.decode_event_batch(message)
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

    def _matches(self, event: wire.Event) -> bool:
        """The nng prefix match, applied to an event read from the journal or from a batch."""
        matches = self._kind_matches.get(event.type)
        if matches is not None:
            return matches
        head = wire.event_topic(event.type).encode() + wire.TOPIC_SEPARATOR
        if len(self._prefix) > len(head):
            return wire.encode_event(event).startswith(self._prefix)  # reaches into the JSON itself
        matches = self._kind_matches[event.type] = head.startswith(self._prefix)
        return matches

    async def _read_journal(self, timeout: float | None = None) -> None:
        """Read one page from ``next_seq`` into the pending queue, noting what is lost."""
        assert self._client is not None
        reply = await self._client.events_page(self.next_seq, self._since, timeout=timeout)
        self.stats.pages += 1
        if self._is_new_journal(reply.journal_id):
            self._reset(reply.journal_id)
            return  # the caller reads again, from the new journal's start
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
            self._newest_time = max(self._newest_time, event.timestamp)
            expected = event.seq + 1
        if reply.next_seq > expected:
            self._lose(expected, reply.next_seq - 1, reply.first_available_seq)
            expected = reply.next_seq
        self.stats.replayed += len(reply.events)
        self.next_seq = expected
        self._known_last_seq = max(self._known_last_seq, reply.last_seq)

    def _is_new_journal(self, journal_id: str) -> bool:
        if not journal_id:
            return False  # a daemon too old to say
        if not self._journal_id:
            self._journal_id = journal_id
            return False
        return journal_id != self._journal_id

    async def _journal_was_wiped(self) -> bool:
        """A live seq went backwards while time went forwards: ask the daemon which journal it has.

        A daemon too old to name its journal is believed on the evidence alone.
        """
        assert self._client is not None
        try:
            ping = await self._client.ping()
        except DaemonUnreachable:
            return False
        if ping.journal_id and not self._is_new_journal(ping.journal_id):
            return False
        self._reset(ping.journal_id)
        return True

    def _reset(self, new_journal_id: str) -> None:
        reset = JournalReset(self._journal_id, new_journal_id, self.next_seq)
        self.resets.append(reset)
        self.stats.resets += 1
        self._journal_id = new_journal_id
        self.next_seq = 0  # wherever the new journal starts
        self._open_start = True
        self._known_last_seq = 0
        self._newest_time = 0.0
        self._pending.clear()
        self._batch = None
        if self._on_reset is not None:
            self._on_reset(reset)

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
