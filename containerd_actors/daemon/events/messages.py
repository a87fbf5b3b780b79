"""What the events actor accepts, and the status snapshot it publishes."""

from __future__ import annotations

from pathlib import Path

import attrs
import trio

from containerd_actors.daemon.mailbox import Ask, ReplyTo
from containerd_actors.protocol import Events


@attrs.frozen
class EventDraft:
    """What an actor tells the events actor; it adds ``seq`` and ``timestamp``.

    ``by``: the TLS client (certificate CN) whose request caused the event, None for a local one.
    ``note`` is the exit note that names this event until it is journalled
    (``state/exit_notes.py``): the events actor removes it once its journal has written the line.
    """

    type: str
    id: str
    pid: int
    status: int | None = None
    reason: str | None = None
    by: str | None = None
    note: Path | None = attrs.field(default=None, eq=False)


@attrs.frozen
class SubscribersChanged:
    """Posted from nng's pipe callbacks (on nng threads) into the mailbox; +1 or -1."""

    delta: int


@attrs.frozen
class GetStatus:
    """Answered with the ``EventsStatus`` once every event told so far is published on both streams.

    The API server reads the published status instead (a Ping must not queue behind a burst);
    this ask is for whoever needs to know that the mailbox has been worked through.
    """

    reply_to: ReplyTo


@attrs.frozen
class FlushJournal:
    """The state directory has room again: write the events that wait in memory (told by
    ``state.space`` through a callback, so that only this actor touches its journal)."""


@attrs.frozen
class ReloadTls:
    """Re-read the TLS files for the streams' tls+tcp listeners; answered with None, or the reason
    they could not be read (the old listeners then keep serving)."""

    reply_to: ReplyTo


@attrs.frozen
class EventsStatus:
    """Connected subscribers and the newest ``seq``, which is always one the journal holds."""

    subscribers: int
    last_seq: int
    journal_id: str = ""


#: ``Ask(Events)`` is answered with a ``JournalPage``.
EventsMessage = EventDraft | SubscribersChanged | GetStatus | FlushJournal | ReloadTls | Ask[Events]
EventsMailbox = trio.MemorySendChannel[EventsMessage]
