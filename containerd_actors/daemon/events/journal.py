"""The event journal: every event, in ``seq`` order, on disk before it is published.

Pub/sub is lossy by design, so the journal is what makes the event stream lossless: a
subscriber that sees a gap in ``seq`` (or that was not running at all) reads the missing events
back from here with an ``Events`` request. It also carries ``seq`` across daemon restarts: a new
daemon continues from the journal's last ``seq`` + 1.

Layout: ``<state-dir>/events/<first-seq>.jsonl`` segment files (the first ``seq`` zero-padded,
so names sort), one event JSON object per line, exactly the payload of its pub/sub frame, so
``cat``, ``grep`` and ``jq`` read them. Only the events actor writes them, through an
``O_APPEND`` descriptor with one ``os.write`` per event.

**No fsync.** A daemon that crashes (or is killed) loses nothing that ``os.write`` returned
for: the data is in the kernel's page cache and reaches the file regardless. Only a kernel
crash or power loss could lose the tail, and then every container is gone too, so the events
about them matter little; an fsync per event would cost milliseconds on a disk-backed state
directory, on the path of every container start and exit. (The default state directory, under
``/run``, is a tmpfs, where fsync does nothing anyway.)

**Bounded.** Segments are rotated every ``segment_events`` events, and whole old segments are
deleted so that at most ``retention`` sequence numbers are kept. (Between ``retention`` minus one
segment and ``retention`` events are therefore readable.)

**A full state directory** (a write fails with ENOSPC, EDQUOT or EIO, or is short) never stops
events: each is still numbered and published at once, and stays readable from memory (the tail,
or the waiting events themselves when more wait than the tail holds), but its line waits in
memory, in seq order, and the waiting lines are written as soon as there is room again (the
events actor is called back by ``state.space``), into the same segment, so the files hold every
seq with no gap. At most ``MAX_HELD_EVENTS`` (and at most ``retention``) events wait: beyond
that the oldest waiting one is given up on disk (logged once per full episode, counted in
``given_up``; it stays readable from memory while the tail holds it), and the next line written
starts a new segment, which readers skip over as they skip any missing event. While events wait,
an empty file named after the next seq (see ``_reserve_seqs``) tells a daemon restarted
meanwhile which seqs were used: a seq a subscriber may have seen is never handed out twice.

**Never fatal.** At start-up the newest segment is checked: a torn last line (a daemon that
died mid-write, or a full disk) is cut off and logged; a segment that does not parse is renamed
aside to ``<name>.corrupt`` and logged, and its events are reported lost to readers. Older
segments are checked when they are read, with the same quarantine (``journal_segments.py``).
"""

from __future__ import annotations

import bisect
import collections
import errno
import itertools
import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import attrs

from containerd_actors.daemon.config import DEFAULT_RETENTION
from containerd_actors.daemon.events.journal_segments import (
    QUARANTINE_SUFFIX as QUARANTINE_SUFFIX,  # named by the journal's tests and readers
)
from containerd_actors.daemon.events.journal_segments import (
    CorruptSegment,
    Segment,
    decode_lines,
    find_segments,
    first_timestamp,
    highest_seq_named,
    move_aside,
    segment_name,
    whole_lines,
)
from containerd_actors.daemon.state.layout import write_json_atomically
from containerd_actors.daemon.state.space import StateDirSpace, is_space_error, space_of
from containerd_actors.protocol import Event, ProtocolError, decode_event_payload

log = logging.getLogger(__name__)

#: Beside the segments: the journal's random identity (see ``EventJournal._identity``).
JOURNAL_ID_FILE = "journal.json"

#: ~100 bytes an event, so a full segment is about 1 MiB: cheap to read for one page.
MAX_SEGMENT_EVENTS = 10_000
#: Recent events also kept in memory: a subscriber's gap is nearly always recent, and serving
#: it from here costs neither a file read nor decoding. A gap is what pub/sub dropped (pub0 keeps
#: 16 messages per subscriber, sub0 128) or what came while a client reconnected, so a few
#: thousand cover it; an older one is read from disk. The bound is small on purpose: an event
#: costs about 200 bytes here (the ``Event``, its float, its pid and its id, whose string the
#: tail alone keeps alive once the container is gone), so the soak (``scripts/bench_soak.py``,
#: two events per container) saw 10,000 of them add ~2 MiB of RSS over its first 5,000 cycles.
TAIL_EVENTS = 2_048
#: Events whose lines may wait in memory for room in the state directory: about 100 bytes of
#: line and 300 of ``Event`` each, so a few MiB at most.
MAX_HELD_EVENTS = 10_000

Writer = Callable[[int, bytes], int]


@attrs.frozen
class JournalPage:
    """One page read from the journal; the fields of an ``EventsReply`` (see its documentation)."""

    events: list[Event]
    next_seq: int
    last_seq: int
    first_available_seq: int
    journal_id: str = ""


def default_segment_events(retention: int) -> int:
    """Small enough that deleting one whole segment still keeps most of ``retention``."""
    return max(1, min(MAX_SEGMENT_EVENTS, retention // 4))


class EventJournal:
    """Append and read events; owned by the events actor (not thread-safe, never shared)."""

    def __init__(
        self,
        directory: Path,
        retention: int = DEFAULT_RETENTION,
        segment_events: int | None = None,
        tail_events: int = TAIL_EVENTS,
        *,
        held_events: int = MAX_HELD_EVENTS,
        space: StateDirSpace | None = None,
        write: Writer = os.write,
    ) -> None:
        if retention < 1:
            raise ValueError(f"retention must be at least 1, got {retention}")
        self.directory = directory
        self.retention = retention
        self.segment_events = min(segment_events or default_segment_events(retention), retention)
        self._segments: list[Segment] = []
        self._last_seq = 0
        self._fd = -1
        #: Bytes of whole lines in the open segment: where to cut back to after a failed write.
        self._fd_size = 0
        self._fd_events = 0
        self._tail: collections.deque[Event] = collections.deque(maxlen=tail_events)
        self.space = space if space is not None else space_of(directory)
        self._write = write
        #: Events (and their lines) not yet on disk, oldest first: they wait for room.
        self._held: collections.deque[tuple[Event, bytes]] = collections.deque()
        self._held_limit = max(1, min(held_events, retention))
        #: Events given up on disk because too many waited (see the module docstring).
        self.given_up = 0
        #: The next line written must start a segment: the events before it were given up.
        self._disk_gap = False
        #: The empty file that reserves the waiting seqs across a restart.
        self._reserved: Path | None = None
        #: What went wrong while events waited, each logged once until all are written.
        self._logged: set[str] = set()
        self.write_failures = 0
        self._recover()
        self.journal_id = self._identity()

    # ------------------------------------------------------------------ state

    def _identity(self) -> str:
        """This journal's id (``JOURNAL_ID_FILE``), made at random the first time.

        Why: a journal can vanish under a daemon's feet (a state dir on a tmpfs across a reboot,
        an operator's rm) and seq then starts again at 1. A subscriber whose cursor is at 5,000
        would take the new journal's events for old ones; a new id tells it otherwise. An id that
        cannot be written (a full disk) is still used for this run and written next time.
        """
        path = self.directory / JOURNAL_ID_FILE
        try:
            recorded = json.loads(path.read_bytes()).get("journal_id", "")
        except (OSError, ValueError, AttributeError):
            recorded = ""
        if isinstance(recorded, str) and re.fullmatch(r"[0-9a-f]{32}", recorded):
            return recorded
        journal_id = uuid.uuid4().hex
        try:
            write_json_atomically(path, {"journal_id": journal_id})
        except OSError as exc:
            log.warning("events journal %s: cannot record its id %s: %s", self.directory, journal_id, exc)
        return journal_id

    @property
    def last_seq(self) -> int:
        """The newest seq assigned (0 before the first event ever)."""
        return self._last_seq

    @property
    def first_available_seq(self) -> int:
        """The oldest seq that can still be read; ``last_seq + 1`` when none can."""
        if self._segments:
            return self._segments[0].first_seq
        if len(self._held) > len(self._tail):
            return self._held[0][0].seq
        if self._tail:
            return self._tail[0].seq
        return self._last_seq + 1

    def _in_memory(self) -> collections.deque[Event]:
        """The events readable from memory, oldest first, ending at ``last_seq``.

        Both the tail and the events waiting for room end at ``last_seq`` and have no gap, so the
        longer one holds the other: waiting events outnumber the tail only while the disk is
        full, and they stay readable until they are written.
        """
        if len(self._held) > len(self._tail):
            return collections.deque(event for event, _ in self._held)
        return self._tail

    @property
    def waiting(self) -> int:
        """Events published but not yet on disk (they wait for room)."""
        return len(self._held)

    def segment_paths(self) -> list[Path]:
        return [segment.path for segment in self._segments]

    # ------------------------------------------------------------------ start-up

    def _recover(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        segments = find_segments(self.directory)
        self._segments = segments
        if segments:
            self._last_seq = self._recover_newest(segments[-1])
        log.info(
            "events journal %s: %d segments, seq %d..%d, retention %d",
            self.directory,
            len(self._segments),
            self.first_available_seq,
            self._last_seq,
            self.retention,
        )

    def _recover_newest(self, segment: Segment) -> int:
        """Check the segment a previous daemon was writing; returns the last seq it assigned."""
        lines = whole_lines(segment)
        if not lines:
            # Nothing in it: the reservation of seqs that waited for room (or a segment created
            # just before a crash). It stays until the next event, whose segment it becomes, so
            # that a second restart before then still continues after those seqs.
            self._segments.pop()
            self._reserved = segment.path
            return segment.first_seq - 1
        try:
            decode_lines(segment, lines, 0, len(lines))
        except CorruptSegment as exc:
            highest = highest_seq_named(segment, lines)
            self._quarantine(segment, str(exc), segment.first_seq, highest)
            return highest
        return segment.first_seq + len(lines) - 1

    def _quarantine(self, segment: Segment, reason: str, first: int, last: int | None) -> None:
        move_aside(segment, reason, first, last)
        if segment in self._segments:
            self._segments.remove(segment)

    # ------------------------------------------------------------------ writing

    def append(self, event: Event, payload: bytes) -> None:
        """Journal ``event`` (``payload`` is its encoded JSON); ``event.seq`` must be ``last_seq + 1``.

        Never raises for a failed write: the event is readable from memory at once,
        and its line waits in memory until ``flush`` finds room (see the module docstring).
        """
        if event.seq != self._last_seq + 1:
            raise ValueError(f"event seq {event.seq} does not follow {self._last_seq}")
        self._last_seq = event.seq
        self._tail.append(event)
        self._held.append((event, payload))
        if len(self._held) > self._held_limit:
            self._give_up_oldest()
        if not self.flush():
            self.space.count_held_event()
            self._reserve_seqs()
        self._enforce_retention()

    def flush(self) -> bool:
        """Write the waiting lines in seq order while there is room; True once none waits."""
        if not self._held:
            return True
        if not self.space.writable():
            return False
        while self._held:
            event, payload = self._held[0]
            try:
                self._write_line(event.seq, payload)
            except OSError as exc:
                self.write_failures += 1
                if is_space_error(exc):
                    self.space.report_failure(exc, f"writing event {event.seq} to the journal")
                elif "write" not in self._logged:
                    self._logged.add("write")
                    log.error(
                        "events journal: cannot write event %d (%s); it waits in memory", event.seq, exc
                    )
                return False
            self._held.popleft()
        self._all_written()
        return True

    def _write_line(self, seq: int, payload: bytes) -> None:
        """Append one event's line to the open segment (starting one if due), whole or not at all."""
        if self._fd < 0 or self._fd_events >= self.segment_events or self._disk_gap:
            self._start_segment(seq)
            self._disk_gap = False
        line = payload + b"\n"
        written = self._write(self._fd, line)
        if written != len(line):
            os.ftruncate(self._fd, self._fd_size)  # no torn line for a reader to trip on
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
        self._fd_size += len(line)
        self._fd_events += 1

    def _give_up_oldest(self) -> None:
        """Too many events wait: the oldest is given up on disk (still in the tail while it lasts)."""
        event, _ = self._held.popleft()
        self.given_up += 1
        self._disk_gap = True
        if "given up" not in self._logged:  # once per episode
            self._logged.add("given up")
            log.error(
                "events journal: more than %d events wait for room in the state dir; the oldest "
                "are given up on disk (from event %d; still readable from memory while recent)",
                self._held_limit,
                event.seq,
            )

    def _reserve_seqs(self) -> None:
        """Keep an empty segment named after the next seq: a restart then continues after the
        waiting events. An empty file needs no data blocks, and renaming it needs no room."""
        target = self.directory / segment_name(self._last_seq + 1)
        try:
            if self._reserved is None:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            else:
                os.rename(self._reserved, target)
        except OSError as exc:
            if "reserve" not in self._logged:
                self._logged.add("reserve")
                log.error("events journal: cannot reserve the waiting seqs in %s: %s", target, exc)
            self._reserved = None
            return
        self._reserved = target

    def _all_written(self) -> None:
        """Nothing waits any more: the reservation goes, and the next trouble is logged again."""
        self._logged.clear()
        if self._reserved is not None:
            self._reserved.unlink(missing_ok=True)
            self._reserved = None

    def _start_segment(self, first_seq: int) -> None:
        self._close_segment()
        path = self.directory / segment_name(first_seq)
        # O_TRUNC: a file of this name can only be an empty leftover or reservation.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o600)
        if path == self._reserved:
            self._reserved = None  # it is a segment now
        self._fd_size = 0
        self._fd_events = 0
        self._segments.append(Segment(first_seq, path))
        self._enforce_retention()

    def _enforce_retention(self) -> None:
        """Delete whole oldest segments until at most ``retention`` seqs are readable."""
        while len(self._segments) > 1 and self._last_seq - self._segments[0].first_seq + 1 > self.retention:
            oldest = self._segments.pop(0)
            try:
                oldest.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("events journal: cannot delete old segment %s: %s", oldest.path, exc)
        while self._tail and self._tail[0].seq < self._last_seq - self.retention + 1:
            self._tail.popleft()

    def _close_segment(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Stop: one last try for the waiting lines (a reservation keeps their seqs if it fails)."""
        if self._held:
            self.space.probe()
            self.flush()
        self._close_segment()

    # ------------------------------------------------------------------ reading

    def read(self, from_seq: int, limit: int, since: float | None = None) -> JournalPage:
        """Up to ``limit`` events from ``from_seq`` (and, with ``since``, from the first that new).

        Events that cannot be read (beyond retention, or in a corrupt segment) are skipped, so
        ``next_seq`` always moves past ``from_seq`` while ``from_seq <= last_seq``.
        """
        start = max(from_seq, self.first_available_seq, 1)
        if since is not None:
            start = self._seq_at_time(start, since)
        events: list[Event] = []
        seq = start
        memory = self._in_memory()
        while len(events) < limit and seq <= self._last_seq:
            if memory and seq >= memory[0].seq:
                offset = seq - memory[0].seq
                events += itertools.islice(memory, offset, offset + limit - len(events))
                seq = events[-1].seq + 1 if events else self._last_seq + 1
                break
            seq = self._read_disk(seq, limit - len(events), events)
        next_seq = events[-1].seq + 1 if len(events) == limit else max(seq, start)
        return JournalPage(events, next_seq, self._last_seq, self.first_available_seq, self.journal_id)

    def _read_disk(self, seq: int, limit: int, into: list[Event]) -> int:
        """Read from the segment holding ``seq`` into ``into``; returns the seq to continue at.

        The returned seq is always greater than ``seq``: what cannot be read is skipped.
        """
        index = bisect.bisect_right([s.first_seq for s in self._segments], seq) - 1
        if index < 0 or seq > self._segment_end(index):
            # Deleted, quarantined or never written: continue where data exists.
            return self._first_readable_after(seq)
        segment = self._segments[index]
        end = self._segment_end(index)
        try:
            lines = segment.path.read_bytes().splitlines()
            available = min(len(lines), end - segment.first_seq + 1)
            offset = seq - segment.first_seq
            if offset >= available:
                # Events whose write failed (a full disk): lost on disk, maybe still in the tail.
                return self._first_readable_after(seq)
            stop = min(available, offset + limit)
            into += decode_lines(segment, lines, offset, stop)
        except (OSError, CorruptSegment) as exc:
            if index == len(self._segments) - 1 and self._fd >= 0:
                log.error("events journal: cannot read the open segment %s: %s", segment.path, exc)
            else:
                self._quarantine(segment, str(exc), segment.first_seq, end)
            return self._first_readable_after(seq)
        return segment.first_seq + stop

    def _segment_end(self, index: int) -> int:
        if index + 1 < len(self._segments):
            return self._segments[index + 1].first_seq - 1
        return self._last_seq

    def _first_readable_after(self, seq: int) -> int:
        """The first seq > ``seq`` that starts a segment or the tail (``last_seq + 1`` if none)."""
        candidates = [s.first_seq for s in self._segments if s.first_seq > seq]
        memory = self._in_memory()
        if memory and memory[0].seq > seq:
            candidates.append(memory[0].seq)
        return min(candidates, default=self._last_seq + 1)

    def _seq_at_time(self, start: int, since: float) -> int:
        """The first seq >= ``start`` whose timestamp is >= ``since``; ``last_seq + 1`` if none.

        Binary search over segments by their first timestamp, then within the segment by line:
        timestamps are the daemon's wall clock, so this is exact unless the clock was stepped
        back, and costs a dozen decoded lines instead of a scan.
        """
        memory = self._in_memory()
        if memory and memory[0].timestamp <= since:
            return next(
                (e.seq for e in memory if e.seq >= start and e.timestamp >= since), self._last_seq + 1
            )
        spans = [
            (segment, self._segment_end(i))
            for i, segment in enumerate(self._segments)
            if self._segment_end(i) >= start
        ]
        lo, hi = 0, len(spans)
        while lo < hi:  # after this, spans[lo - 1] is the last segment starting at or before since
            mid = (lo + hi) // 2
            stamp = first_timestamp(spans[mid][0])
            if stamp is not None and stamp <= since:
                lo = mid + 1
            else:
                hi = mid
        for segment, end in spans[max(lo - 1, 0) :]:
            try:
                lines = segment.path.read_bytes().splitlines()
                first = max(0, start - segment.first_seq)
                available = min(len(lines), end - segment.first_seq + 1)
                found = first + bisect.bisect_left(
                    range(first, available), since, key=lambda k: decode_event_payload(lines[k]).timestamp
                )
            except (OSError, ProtocolError):
                continue  # a read of this segment will report (and quarantine) it
            if found < available:
                return segment.first_seq + found
        return next((e.seq for e in memory if e.seq >= start and e.timestamp >= since), self._last_seq + 1)
