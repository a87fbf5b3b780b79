"""Events: one state change each, published on pub/sub under a topic, and batches of them.

An event travels as ``topic + b" " + json``; it carries its own ``type`` field (the event kind) and
is not part of a tagged union. The batch stream carries ``EventBatch`` objects (several
consecutive events, column by column), also untagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
from attrs import Attribute, field, fields, frozen

from containerd_actors.protocol.validators import InvalidField, event_kind, event_kinds, non_negative


class EventType:
    """Event kinds; each is published under the topic ``/containers/<kind>``."""

    START_CONTAINER = "start-container"
    START_PROCESS = "start-process"  # an exec'd process; its end is an ``exit`` event with its own pid
    EXIT = "exit"
    CHECKPOINT = "checkpoint"
    OOM = "oom"
    PAUSE = "pause"
    RESUME = "resume"
    #: An actor crashed and was restarted: ``id`` names the container whose actor it was (and
    #: ``pid`` its init) or is empty for the daemon's own events and metrics actors; ``reason``
    #: says which actor and why. The container stays managed: its actor re-adopted it.
    ACTOR_RESTART = "actor-restart"
    #: A container left this daemon for another (``reason``: ``to=<address> frozen=<seconds>s``),
    #: or arrived from one (``reason``: ``from=<client CN> frozen=<seconds>s``, from the source's
    #: clock at the freeze); ``pid`` is its init's pid on the daemon that publishes the event.
    MIGRATE_OUT = "migrate-out"
    MIGRATE_IN = "migrate-in"


@frozen
class Event:
    """A state change, numbered by the events actor.

    ``seq`` increases by exactly one per event, also across daemon restarts, so a subscriber can
    detect a gap (and fill it with an ``Events`` request).
    ``timestamp`` is seconds since the Unix epoch. ``status`` is the exit status for ``exit``
    events (128+N for death by signal N) and null where it does not apply. An ``exit`` whose
    status could not be observed has a null status and says why in ``reason``; a status is never
    made up.
    ``by`` is the common name of the TLS client certificate whose request caused the event (a
    start, an exec, a pause or resume, a checkpoint, the exit after its signal); it is absent for
    local clients and for what nobody asked for, so that the audit trail names remote callers only.
    """

    seq: int
    timestamp: float
    type: str = field(validator=event_kind)
    id: str
    pid: int
    status: int | None = None
    reason: str | None = None
    by: str | None = None


EVENT_TOPIC_PREFIX = "/containers/"


def event_topic(event_type: str) -> str:
    """The pub/sub topic for an event kind; subscribers filter on its byte prefix."""
    return EVENT_TOPIC_PREFIX + event_type


def _columns_of_one_length(instance: EventBatch, attribute: Attribute, value: Any) -> None:
    """Runs after every field is set (attrs validates last), so it can compare all the columns."""
    lengths = {name: len(getattr(instance, name)) for name in EventBatch.COLUMNS}
    if instance.bys is not None:
        lengths["bys"] = len(instance.bys)
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} {length}" for name, length in lengths.items())
        raise InvalidField(f"the columns of an event batch must be equally long, got {listed}")


_new_object = object.__new__


@frozen
class EventBatch:
    """Consecutive events in one message of the batch stream, column by column.

    Event ``i`` of the batch (from 0) has ``seq = first_seq + i`` and takes element ``i`` of
    every list: its ``timestamp`` is ``timestamps[i]``, its ``type`` is ``types[i]``, and so on;
    the lists are equally long. Columns instead of a list of event objects because they halve
    the cost of decoding a batch (measured in Python: 1.5 instead of 2.6 µs an event), which is
    what lets many subscribers keep up with a busy daemon.

    ``bys`` (each event's ``by``) is the one optional column: absent (null) when no event of the
    batch has a ``by``, which is the common case, so a batch of local clients' events is no bigger
    than before the column existed, and a reader that predates it reads every batch.
    """

    #: The per-event lists that every batch has, in the order of ``Event``'s fields after ``seq``.
    COLUMNS = ("timestamps", "types", "ids", "pids", "statuses", "reasons")

    first_seq: int = field(validator=non_negative)
    timestamps: list[float]
    types: list[str] = field(validator=event_kinds)
    ids: list[str]
    pids: list[int]
    statuses: list[int | None]
    reasons: list[str | None] = field(validator=_columns_of_one_length)
    bys: list[str | None] | None = None

    @property
    def count(self) -> int:
        return len(self.timestamps)

    @property
    def last_seq(self) -> int:
        """The seq of the batch's last event (``first_seq - 1`` for an empty batch)."""
        return self.first_seq + len(self.timestamps) - 1

    @classmethod
    def of(cls, events: Sequence[Event]) -> EventBatch:
        """The batch of ``events``, which must be consecutive (seq one more each time)."""
        first_seq = events[0].seq if events else 1
        for offset, event in enumerate(events):
            if event.seq != first_seq + offset:
                raise InvalidField(f"event seq {event.seq} does not follow {first_seq + offset - 1}")
        bys = [e.by for e in events]
        return cls(
            first_seq,
            [e.timestamp for e in events],
            [e.type for e in events],
            [e.id for e in events],
            [e.pid for e in events],
            [e.status for e in events],
            [e.reason for e in events],
            bys if any(by is not None for by in bys) else None,
        )

    def events(self, start: int = 0, stop: int | None = None) -> list[Event]:
        """The batch's events ``[start:stop]`` (a subscriber skips what it already has).

        Built without running ``Event``'s validators once per event: the batch was validated as
        a whole (its kinds and lengths here, its JSON types by the codec when it was decoded),
        and repeating that per event would cost about as much as the rest of decoding. Setting
        the slots through their descriptors also skips the frozen class's ``__setattr__``:
        together ~0.7 instead of ~1.3 µs an event.
        """
        new, cls = _new_object, Event
        set_seq, set_timestamp, set_type, set_id, set_pid, set_status, set_reason, set_by = (
            _EVENT_SLOT_SETTERS
        )
        columns: tuple[list[Any], ...] = (
            self.timestamps,
            self.types,
            self.ids,
            self.pids,
            self.statuses,
            self.reasons,
            self.bys if self.bys is not None else [None] * len(self.timestamps),
        )
        if start or stop is not None:
            columns = tuple(column[start:stop] for column in columns)
        events: list[Event] = []
        append = events.append
        seq = self.first_seq + start
        for timestamp, kind, id, pid, status, reason, by in zip(*columns, strict=True):
            event = new(cls)
            set_seq(event, seq)
            set_timestamp(event, timestamp)
            set_type(event, kind)
            set_id(event, id)
            set_pid(event, pid)
            set_status(event, status)
            set_reason(event, reason)
            set_by(event, by)
            append(event)
            seq += 1
        return events


#: The slot descriptors' setters of ``Event``, in field order, for ``EventBatch.events``.
_EVENT_SLOT_SETTERS = tuple(vars(Event)[f.name].__set__ for f in fields(Event))
