"""The events actor: numbers every event, journals it, then fans it out over nng Pub0.

A single actor assigns ``seq``, so the numbering is gap-free and in the order events were told
to it; it continues from the journal's last ``seq`` after a restart. Every event is written to
the journal before it is published, so anything a subscriber could have seen can be read back.

Pub/sub itself is lossy (nng drops when a subscriber's queue fills); ``seq`` lets a subscriber
see a gap and fill it with an ``Events`` request, which this actor serves from the journal in
pages of at most ``MAX_EVENTS_PER_PAGE``. Serving a page here, between publishes, keeps the
journal single-owner; a page costs at most ~15 ms (decoding 1000 events from a segment file) and
usually far less (recent events come from memory), so publishing never waits long.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import attrs
import pynng
import trio

from ..metrics import EVENTS, EVENTS_SUBSCRIBERS
from ..protocol import MAX_MESSAGE_BYTES, Event, encode_event_payload, frame_event
from .journal import EventJournal, JournalPage
from .mailbox import ReplyTo, answer
from .telemetry import AddToCounter, tell

log = logging.getLogger(__name__)


@attrs.frozen
class EventDraft:
    """What an actor tells the events actor; it adds ``seq`` and ``timestamp``."""

    type: str
    id: str
    pid: int
    status: int | None = None
    reason: str | None = None


@attrs.frozen
class SubscribersChanged:
    """Posted from nng's pipe callbacks (on nng threads) into the mailbox; +1 or -1."""

    delta: int


@attrs.frozen
class EventsStatus:
    """The answer to ``GetStatus``: connected subscribers and the newest ``seq`` so far."""

    subscribers: int
    last_seq: int


@attrs.frozen
class GetStatus:
    reply_to: ReplyTo


@attrs.frozen
class ReadEvents:
    """Ask for one page of the journal; answered with a ``JournalPage``."""

    from_seq: int
    limit: int
    since: float | None
    reply_to: ReplyTo


class EventsActor:
    def __init__(self, address: str, journal: EventJournal, metrics: trio.MemorySendChannel[Any]) -> None:
        self.address = address
        self.journal = journal
        self._metrics = metrics
        self._mailbox_send, self._mailbox = trio.open_memory_channel[Any](100_000)
        self._subscribers = 0
        self.published = 0

    @property
    def mailbox(self) -> trio.MemorySendChannel[Any]:
        return self._mailbox_send

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        token = trio.lowlevel.current_trio_token()

        def on_pipe(delta: int) -> Any:
            # Runs on an nng thread with a lock held: only post to trio, never touch the socket.
            return lambda _pipe: token.run_sync_soon(
                self._mailbox_send.send_nowait, SubscribersChanged(delta)
            )

        try:
            with pynng.Pub0(recv_max_size=MAX_MESSAGE_BYTES) as socket:
                socket.add_post_pipe_connect_cb(on_pipe(+1))
                socket.add_post_pipe_remove_cb(on_pipe(-1))
                socket.listen(self.address)
                log.info("events published on %s", self.address)
                task_status.started()
                async for message in self._mailbox:
                    if isinstance(message, EventDraft):
                        self._publish(socket, message)
                    elif isinstance(message, ReadEvents):
                        answer(message.reply_to, self._read(message))
                    elif isinstance(message, SubscribersChanged):
                        self._subscribers += message.delta
                        tell(self._metrics, AddToCounter(EVENTS_SUBSCRIBERS, message.delta))
                    elif isinstance(message, GetStatus):
                        answer(message.reply_to, self.status())
        finally:
            self.journal.close()

    def status(self) -> EventsStatus:
        """Also called directly by the API server's tasks (same thread, two integers): a Ping must
        not queue behind a burst of events or a journal page in this mailbox."""
        return EventsStatus(self._subscribers, self.journal.last_seq)

    def _publish(self, socket: pynng.Pub0, draft: EventDraft) -> None:
        event = Event(
            self.journal.last_seq + 1,
            time.time(),
            draft.type,
            draft.id,
            draft.pid,
            draft.status,
            draft.reason,
        )
        payload = encode_event_payload(event)
        self.journal.append(event, payload)
        # Pub0 never blocks: a full subscriber queue drops, which seq makes visible.
        socket.send(frame_event(event.type, payload))
        self.published += 1
        tell(self._metrics, AddToCounter(EVENTS))

    def _read(self, message: ReadEvents) -> JournalPage:
        return self.journal.read(message.from_seq, message.limit, since=message.since)
