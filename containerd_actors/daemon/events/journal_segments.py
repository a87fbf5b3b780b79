"""The journal's segment files on disk: naming, finding, checking and quarantining them.

Apart from ``journal.py`` because none of this needs the journal's state: a segment is a file
named after its first seq, and whether its lines are whole and hold the seqs they should is a
question of the file alone. The journal decides what to do with the answers (which segments it
keeps, which seq it continues from).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from pathlib import Path

import attrs

from containerd_actors.protocol import Event, ProtocolError, decode_event_payload

#: The journal's own logger: what it logs about its segments reads as before they moved here.
log = logging.getLogger("containerd_actors.daemon.events.journal")

SEGMENT_SUFFIX = ".jsonl"
QUARANTINE_SUFFIX = ".corrupt"
_SEGMENT_NAME = re.compile(r"(\d+)" + re.escape(SEGMENT_SUFFIX))
#: Zero-padded width of a segment's first seq in its file name (room for any int64).
_SEQ_DIGITS = 20


class CorruptSegment(Exception):
    """A segment holds a line that is not the event it should be."""


@attrs.define
class Segment:
    first_seq: int
    path: Path
    #: The first event's timestamp, read when a ``since`` lookup first needs it.
    first_timestamp: float | None = None


def segment_name(first_seq: int) -> str:
    return f"{first_seq:0{_SEQ_DIGITS}d}{SEGMENT_SUFFIX}"


def find_segments(directory: Path) -> list[Segment]:
    """The segment files in ``directory``, oldest first (other files are not the journal's)."""
    segments = []
    for path in directory.iterdir():
        match = _SEGMENT_NAME.fullmatch(path.name)
        if match and path.is_file():
            segments.append(Segment(int(match.group(1)), path))
    segments.sort(key=lambda segment: segment.first_seq)
    return segments


def whole_lines(segment: Segment) -> list[bytes]:
    """The segment's lines, after cutting off a torn last line (a write that never completed)."""
    data = segment.path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        log.warning(
            "events journal: %s: cut off a torn last line (%d bytes), a write that never "
            "completed (the event was not published after it)",
            segment.path,
            len(data) - complete,
        )
        os.truncate(segment.path, complete)
        data = data[:complete]
    return data.splitlines()


def highest_seq_named(segment: Segment, lines: list[bytes]) -> int:
    """The highest seq a corrupt segment mentions: never reuse a seq a subscriber may have seen."""
    highest = segment.first_seq + len(lines) - 1
    for line in lines:
        try:
            highest = max(highest, decode_event_payload(line).seq)
        except ProtocolError:
            continue
    return highest


def move_aside(segment: Segment, reason: str, first: int, last: int | None) -> None:
    """Rename a corrupt segment to ``<name>.corrupt`` (numbered if taken) and log what is lost."""
    target = segment.path.with_name(segment.path.name + QUARANTINE_SUFFIX)
    for n in itertools.count(1):
        if not target.exists():
            break
        target = segment.path.with_name(f"{segment.path.name}{QUARANTINE_SUFFIX}.{n}")
    try:
        segment.path.rename(target)
        where = f"moved to {target.name}"
    except OSError as exc:
        where = f"could not move it aside ({exc}); ignoring it"
    lost = f"events {first}..{last}" if last is not None else f"events from {first}"
    log.error("events journal: %s is corrupt (%s); %s; %s are lost", segment.path, reason, where, lost)


def first_timestamp(segment: Segment) -> float | None:
    """The segment's first event's timestamp, read once and kept on the segment."""
    if segment.first_timestamp is None:
        try:
            with open(segment.path, "rb") as file:
                segment.first_timestamp = decode_event_payload(file.readline()).timestamp
        except (OSError, ProtocolError):
            return None  # an empty or unreadable segment; a read will quarantine it
    return segment.first_timestamp


def decode_lines(segment: Segment, lines: list[bytes], start: int, stop: int) -> list[Event]:
    """Decode ``lines[start:stop]``, checking that line i holds seq ``first_seq + i``."""
    events = []
    for index in range(start, stop):
        expected = segment.first_seq + index
        try:
            event = decode_event_payload(lines[index])
        except ProtocolError as exc:
            raise CorruptSegment(f"line {index + 1}: {exc.message}") from None
        if event.seq != expected:
            raise CorruptSegment(f"line {index + 1} holds seq {event.seq}, expected {expected}")
        events.append(event)
    return events
