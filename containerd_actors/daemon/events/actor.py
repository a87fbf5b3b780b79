"""The events actor: numbers every event, journals it, then fans it out over nng Pub0.

A single actor assigns ``seq``, so the numbering is gap-free and in the order events were told
to it; it continues from the journal's last ``seq`` after a restart. Every event is written to
the journal before it is published, so anything a subscriber could have seen can be read back.
(While the state directory is full, the journal holds the line in memory instead and the event
is published all the same; see ``journal``.)

Pub/sub itself is lossy (nng drops when a subscriber's queue fills); ``seq`` lets a subscriber
see a gap and fill it with an ``Events`` request, which this actor serves from the journal in
pages of at most ``MAX_EVENTS_PER_PAGE``. Serving a page here, between publishes, keeps the
journal single-owner; a page costs at most ~15 ms (decoding 1000 events from a segment file) and
usually far less (recent events come from memory), so publishing never waits long.

There are two streams of the same events, on two Pub0 sockets: one nng message per event
(``/containers/<kind> {json}``, filterable by topic in nng), and, when a batch address is given,
``EventBatch`` messages of many events (see ``batch``). They must be separate sockets: nng
filters on the subscriber's side, so a batch subscriber on the per-event socket would still be
sent, and woken for, every per-event frame. A batch is sent when the mailbox holds nothing more
after one pass of the scheduler (the end of a burst: an idle daemon delivers each event at once)
or when it is full; the journal write of each of its events came first.

The API server answers a Ping from ``status``, a snapshot this actor replaces after every event
and subscriber change: a Ping never queues behind a burst in this mailbox, and the ``last_seq``
it reports is always journalled, because the snapshot is replaced only after the append (while
the state directory is full, "journalled" means held in memory and readable; the lines are
written when ``state.space`` tells of room, through ``FlushJournal``).

**Restarts.** The events actor is supervised (``daemon.supervision``): when its loop raises,
``run`` is called again on the same object. What others hold or built up by messages outlives
the crash: the mailbox (every queued event is still there), the journal (``seq`` continues from
its ``last_seq``, nothing is renumbered or rewritten), the subscriber count (the old sockets'
closing posts one -1 per pipe, and each reconnecting subscriber a +1) and the published status.
The sockets are opened anew; subscribers' dialers reconnect by themselves, and a batch that was
gathered but not sent is dropped (its events are journalled: batch subscribers see the gap and
read them back). An event the crash interrupted before its append is handled again first, once:
if it crashes the actor a second time it is dropped with an error log, so one poisonous event
cannot keep the actor down. An ask in flight is answered with an internal error.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import pynng
import trio

from containerd_actors.daemon.events.batch import MAX_BATCH_EVENTS, PendingBatch
from containerd_actors.daemon.events.journal import EventJournal
from containerd_actors.daemon.events.messages import (
    EventDraft,
    EventsMailbox,
    EventsMessage,
    EventsStatus,
    FlushJournal,
    GetStatus,
    ReloadTls,
    SubscribersChanged,
)
from containerd_actors.daemon.faults import NO_FAULTS, FaultHook
from containerd_actors.daemon.mailbox import Ask, CommandError, Published, answer, fail
from containerd_actors.daemon.metrics.messages import AddToCounter, MetricsMailbox, tell
from containerd_actors.daemon.metrics.registry import EVENTS, EVENTS_SUBSCRIBERS
from containerd_actors.protocol import (
    MAX_MESSAGE_BYTES,
    ErrorCode,
    Event,
    Events,
    encode_event_payload,
    frame_event,
)
from containerd_actors.transport.tls import TlsFiles, TlsListeners, is_tls

log = logging.getLogger(__name__)


class EventsActor:
    def __init__(
        self,
        address: str,
        journal: EventJournal,
        metrics: MetricsMailbox,
        batch_address: str | None = None,
        batch_events: int = MAX_BATCH_EVENTS,
        faults: FaultHook = NO_FAULTS,
        *,
        tls: TlsFiles | None = None,
        remote_addresses: tuple[str, ...] = (),
        remote_batch_addresses: tuple[str, ...] = (),
    ) -> None:
        """With remote addresses (tls+tcp:// with ``tls``, or tcp://), a stream also listens there,
        on the same socket (one address beside each of the API's remote listeners)."""
        self.address = address
        self.batch_address = batch_address
        self._tls = tls
        self._remote_addresses = {address: remote_addresses, batch_address: remote_batch_addresses}
        self._tls_listeners: list[TlsListeners] = []
        self.journal = journal
        self._metrics = metrics
        self._mailbox_send, self._mailbox = trio.open_memory_channel[EventsMessage](100_000)
        self._subscribers = 0
        self._batch_events = batch_events
        self._batch = PendingBatch(max_events=batch_events)
        self._faults = faults
        #: The draft being handled, until its append; with the ``last_seq`` before it.
        self._unjournaled: tuple[EventDraft, int] | None = None
        #: A draft handled again after a crash: if it crashes the actor again, it is dropped.
        self._retried: EventDraft | None = None
        #: Events published since the metrics actor was last told: told once per burst, not per event.
        self._untold = 0
        self.published = 0
        self.batches_sent = 0
        self.status = Published(EventsStatus(0, journal.last_seq, journal.journal_id))
        #: The full episode of the state directory (``StateDirSpace.episodes``) whose end this
        #: actor waits for, to write the events that wait in memory.
        self._room_episode = 0

    @property
    def mailbox(self) -> EventsMailbox:
        return self._mailbox_send

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """One incarnation: open the sockets, serve the mailbox; called again after a crash."""
        self._batch = PendingBatch(max_events=self._batch_events)
        self._tls_listeners = []  # a restart opens the sockets, and their TLS listeners, anew
        token = trio.lowlevel.current_trio_token()

        def on_pipe(delta: int) -> Callable[[pynng.Pipe], None]:
            # Runs on an nng thread with a lock held: only post to trio, never touch the socket.
            return lambda _pipe: token.run_sync_soon(
                self._mailbox_send.send_nowait, SubscribersChanged(delta)
            )

        def listen(stack: contextlib.ExitStack, address: str) -> pynng.Pub0:
            socket = stack.enter_context(pynng.Pub0(recv_max_size=MAX_MESSAGE_BYTES))
            socket.add_post_pipe_connect_cb(on_pipe(+1))
            socket.add_post_pipe_remove_cb(on_pipe(-1))
            socket.listen(address)
            remote = self._remote_addresses.get(address, ())
            tls_addresses = [a for a in remote if is_tls(a)]
            if tls_addresses:
                if self._tls is None:
                    raise ValueError(f"{tls_addresses[0]} needs a certificate, a key and a CA")
                self._tls_listeners.append(TlsListeners(socket, tls_addresses, self._tls))
            for remote_address in remote:
                if not is_tls(remote_address):
                    socket.listen(remote_address)  # plain tcp, allowed only with --insecure-tcp
                log.info("events also published on %s", remote_address)
            return socket

        try:
            with contextlib.ExitStack() as stack:
                socket = listen(stack, self.address)
                log.info("events published on %s", self.address)
                batch_socket = None
                if self.batch_address is not None:
                    batch_socket = listen(stack, self.batch_address)
                    log.info("event batches published on %s", self.batch_address)
                task_status.started()
                await self._serve(socket, batch_socket)
        finally:
            self.journal.close()

    async def _serve(self, socket: pynng.Pub0, batch_socket: pynng.Pub0 | None) -> None:
        retry = self._draft_to_retry()
        while True:
            if retry is not None:
                message, retry = retry, None
            else:
                # One scheduling pass per message, as ``receive`` would give: the rest of the
                # daemon runs between messages, and a producer that tells events one by one adds
                # its next.
                await trio.lowlevel.checkpoint()
                try:
                    message = self._mailbox.receive_nowait()
                except trio.WouldBlock:
                    # Every other task had its turn and none told us more: the burst is over.
                    self._end_of_burst(batch_socket)
                    message = await self._mailbox.receive()
            try:
                self._handle(message, socket, batch_socket)
            except BaseException:
                match message:
                    case Ask(_, reply_to) | GetStatus(reply_to):
                        failed = CommandError(ErrorCode.INTERNAL, "the events actor failed; see daemon log")
                        fail(reply_to, failed)
                raise
            self._unjournaled = None

    def _draft_to_retry(self) -> EventDraft | None:
        """The event a crash interrupted before its append, unless it crashed the actor before."""
        if self._unjournaled is None:
            return None
        (draft, seq_before), self._unjournaled = self._unjournaled, None
        if self.journal.last_seq != seq_before:
            return None  # it was appended (its seq is taken): subscribers read it back from the journal
        if draft is self._retried:
            log.error("events: dropping %r: it crashed the events actor twice", draft)
            return None
        self._retried = draft
        return draft

    def _handle(self, message: EventsMessage, socket: pynng.Pub0, batch_socket: pynng.Pub0 | None) -> None:
        """The one dispatch of everything this actor is told or asked."""
        if isinstance(message, EventDraft):
            self._unjournaled = (message, self.journal.last_seq)
        self._faults.check("events", message)
        match message:
            case EventDraft():
                self._publish(socket, message)
                if self._batch.full:
                    self._end_of_burst(batch_socket)
            case Ask(Events() as request, reply_to):
                answer(reply_to, self.journal.read(request.from_seq, request.limit, since=request.since))
            case SubscribersChanged(delta):
                self._subscribers += delta
                self.status.publish(self._status())
                tell(self._metrics, AddToCounter(EVENTS_SUBSCRIBERS, delta))
            case FlushJournal():
                self.journal.flush()
                self._wait_for_room()
            case GetStatus(reply_to):
                self._end_of_burst(batch_socket)
                answer(reply_to, self.status.current)
            case ReloadTls(reply_to):
                answer(reply_to, self._reload_tls())

    def _status(self) -> EventsStatus:
        return EventsStatus(self._subscribers, self.journal.last_seq, self.journal.journal_id)

    def _reload_tls(self) -> str | None:
        """Renewed certificates for the TLS listeners: None once done, else why not (old ones serve on)."""
        try:
            for listeners in self._tls_listeners:
                listeners.reload()
        except Exception as exc:
            return str(exc)
        return None

    def _publish(self, socket: pynng.Pub0, draft: EventDraft) -> None:
        event = Event(
            self.journal.last_seq + 1,
            time.time(),
            draft.type,
            draft.id,
            draft.pid,
            draft.status,
            draft.reason,
            draft.by,
        )
        payload = encode_event_payload(event)
        self.journal.append(event, payload)
        if draft.note is not None and not self.journal.waiting:
            # Written to the journal: the note that stood in for it is done with. (A line held
            # in memory for a full state dir keeps its note, for a server killed before room.)
            with contextlib.suppress(OSError):
                draft.note.unlink(missing_ok=True)
        self._wait_for_room()
        self.status.publish(self._status())
        # Pub0 never blocks: a full subscriber queue drops, which seq makes visible.
        socket.send(frame_event(event.type, payload))
        if self.batch_address is not None:
            self._batch.append(event, len(payload))
        self.published += 1
        self._untold += 1

    def _wait_for_room(self) -> None:
        """Events wait in memory for a full state directory: be told when it has room."""
        space = self.journal.space
        if self.journal.waiting and space.full and self._room_episode != space.episodes:
            self._room_episode = space.episodes
            space.when_room(self._room_again)

    def _room_again(self) -> None:
        # Called by whoever noticed the room (another task): only post, never touch the journal.
        try:
            self._mailbox_send.send_nowait(FlushJournal())
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # a full mailbox: its next event flushes the journal first

    def _end_of_burst(self, batch_socket: pynng.Pub0 | None) -> None:
        """Send the gathered batch (its events are journalled already) and tell the event count."""
        if batch_socket is not None and len(self._batch):
            _count, message = self._batch.take()
            batch_socket.send(message)
            self.batches_sent += 1
        if self._untold:
            tell(self._metrics, AddToCounter(EVENTS, self._untold))
            self._untold = 0
