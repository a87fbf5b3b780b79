"""The events actor: numbers every event and fans it out over nng Pub0.

A single actor assigns ``seq``, so the numbering is gap-free and in the order events were told
to it. Pub/sub itself is lossy (nng drops when a subscriber's queue fills); ``seq`` lets a
subscriber see a gap, and the recent-events ring is the seed of replay.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import attrs
import pynng
import trio

from ..metrics import EVENTS, EVENTS_SUBSCRIBERS
from ..protocol import MAX_MESSAGE_BYTES, Event, encode_event
from .mailbox import ReplyTo, answer
from .telemetry import AddToCounter, tell

log = logging.getLogger(__name__)

#: Events kept in memory for inspection and, later, replay.
RECENT_EVENTS = 10_000


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
class CountSubscribers:
    reply_to: ReplyTo


class EventsActor:
    def __init__(self, address: str, metrics: trio.MemorySendChannel[Any]) -> None:
        self.address = address
        self._metrics = metrics
        self._mailbox_send, self._mailbox = trio.open_memory_channel[Any](100_000)
        self._seq = 0
        self._subscribers = 0
        self.recent: collections.deque[Event] = collections.deque(maxlen=RECENT_EVENTS)
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

        with pynng.Pub0(recv_max_size=MAX_MESSAGE_BYTES) as socket:
            socket.add_post_pipe_connect_cb(on_pipe(+1))
            socket.add_post_pipe_remove_cb(on_pipe(-1))
            socket.listen(self.address)
            log.info("events published on %s", self.address)
            task_status.started()
            async for message in self._mailbox:
                if isinstance(message, EventDraft):
                    self._publish(socket, message)
                elif isinstance(message, SubscribersChanged):
                    self._subscribers += message.delta
                    tell(self._metrics, AddToCounter(EVENTS_SUBSCRIBERS, message.delta))
                elif isinstance(message, CountSubscribers):
                    answer(message.reply_to, self._subscribers)

    def _publish(self, socket: pynng.Pub0, draft: EventDraft) -> None:
        self._seq += 1
        event = Event(self._seq, time.time(), draft.type, draft.id, draft.pid, draft.status, draft.reason)
        self.recent.append(event)
        # Pub0 never blocks: a full subscriber queue drops, which seq makes visible.
        socket.send(encode_event(event))
        self.published += 1
        tell(self._metrics, AddToCounter(EVENTS))
