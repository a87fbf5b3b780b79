"""The batch being gathered for the batch stream: columns of consecutive events, and when to send it.

With one nng message per event, every subscriber process pays a receive, a wake-up and a decode
per event; 100 subscribers on two cores then got ~280 events/s each. One message for many events
moves that cost from per event to per batch, so the events actor gathers published events here
and sends them as one ``EventBatch`` at the end of a burst, or when the batch is full.

A full batch stays far below the subscribers' 1 MiB ``recv_max_size``, and small enough that a
subscriber's first event of a long burst is never more than a few milliseconds old.
"""

from __future__ import annotations

from containerd_actors.protocol import Event, EventBatch, encode_event_batch

#: Events in one batch at most: ~60 bytes each on the wire, so ~60 KiB. The receive, the wake-up
#: and a cold cache are paid per batch: one Python subscriber spent 4.5 µs an event with batches
#: of 250 and ~3 with 1000. With 100 subscriber processes on two cores, 2000 did no better than
#: 1000 (each process's working set grows with the batch), and a full batch waits longer.
MAX_BATCH_EVENTS = 1000
#: Bytes of (journal-encoded) events in one batch at most; long ids or reasons fill it first. A
#: batch is smaller than its events' journal lines (no keys), so it stays far below 1 MiB.
MAX_BATCH_BYTES = 256 << 10


class PendingBatch:
    """Columns of the events appended since the last ``take``; owned by the events actor."""

    def __init__(self, max_events: int = MAX_BATCH_EVENTS, max_bytes: int = MAX_BATCH_BYTES) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._first_seq = 0
        self._bytes = 0
        self._clear()

    def _clear(self) -> None:
        self._timestamps: list[float] = []
        self._types: list[str] = []
        self._ids: list[str] = []
        self._pids: list[int] = []
        self._statuses: list[int | None] = []
        self._reasons: list[str | None] = []
        self._bys: list[str | None] = []
        #: Whether any event of the batch has a ``by``: else the column is left out.
        self._any_by = False
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._timestamps)

    @property
    def full(self) -> bool:
        return len(self._timestamps) >= self.max_events or self._bytes >= self.max_bytes

    def append(self, event: Event, size: int) -> None:
        """Add the next event (``size``: its encoded length, a bound on its share of the batch)."""
        if not self._timestamps:
            self._first_seq = event.seq
        elif event.seq != self._first_seq + len(self._timestamps):
            raise ValueError(f"event seq {event.seq} does not follow the batch's last")
        self._timestamps.append(event.timestamp)
        self._types.append(event.type)
        self._ids.append(event.id)
        self._pids.append(event.pid)
        self._statuses.append(event.status)
        self._reasons.append(event.reason)
        self._bys.append(event.by)
        if event.by is not None:
            self._any_by = True
        self._bytes += size

    def take(self) -> tuple[int, bytes]:
        """The batch as one message (and how many events it holds); starts a new, empty one."""
        batch = EventBatch(
            self._first_seq,
            self._timestamps,
            self._types,
            self._ids,
            self._pids,
            self._statuses,
            self._reasons,
            self._bys if self._any_by else None,
        )
        self._clear()
        return batch.count, encode_event_batch(batch)
