"""Exits on their way to the journal: a note that outlives a server killed before the event is written.

A container actor removes a process's record (the container's directory, or an exec's record)
once its exit is handled, and the events actor journals the ``exit`` event a moment later. A
server killed in between left nothing that named the exit: the record was gone, runc had
forgotten the container, and the reaper's copy of the status is filed by pid only, so the next
server released it as unclaimed and the exit was lost for good (found by scripts/chaos.py).

So the actor writes a note (``exits/<id>.<pid>.json``: id, pid, status, reason) before it
removes the record, and hands its path to the events actor with the exit (``EventDraft.note``),
which removes it once the journal has written the line. The note holds the status, so the
reaper may forget its copy as soon as the exit is told. A new server publishes the exit of every
note it finds, unless the journal already holds it or the record is still there (the adoption
of that record publishes the exit then).
"""

from __future__ import annotations

import errno
import json
import logging
import time
from pathlib import Path

import attrs

from containerd_actors import protocol as wire
from containerd_actors.daemon.events.messages import EventDraft, EventsMailbox, GetStatus
from containerd_actors.daemon.mailbox import Ask, ask
from containerd_actors.daemon.state.layout import EXITS, container_paths, write_json_atomically
from containerd_actors.protocol import EventType

log = logging.getLogger(__name__)


@attrs.frozen
class ExitNote:
    id: str
    pid: int
    status: int | None
    reason: str | None
    #: When it was written (Unix seconds): the journal is searched from a little before.
    time: float
    #: True for an exec'd process, False for the init.
    exec: bool

    def to_json(self) -> dict:
        return attrs.asdict(self)

    @classmethod
    def parse(cls, raw: dict) -> ExitNote:
        status = raw["status"]
        if not isinstance(raw["id"], str) or not isinstance(raw["pid"], int):
            raise ValueError("id must be a string and pid an integer")
        if status is not None and not isinstance(status, int):
            raise ValueError("status must be an integer or null")
        return cls(raw["id"], raw["pid"], status, raw.get("reason"), float(raw["time"]), bool(raw["exec"]))


#: How far before a note's time the journal is searched for its exit (clock steps, write order).
SEARCH_MARGIN_S = 5.0


def note_path(state_dir: Path, id: str, pid: int) -> Path:
    return state_dir / EXITS / f"{id}.{pid}.json"


def write_note(
    state_dir: Path, id: str, pid: int, status: int | None, reason: str | None, exec: bool
) -> Path | None:
    """Write the note of an exit about to be published; None if it cannot be written (a full
    state dir: the exit is published all the same, only a kill in the next moment loses it)."""
    path = note_path(state_dir, id, pid)
    note = ExitNote(id, pid, status, reason, time.time(), exec).to_json()
    try:
        try:
            write_json_atomically(path, note)
        except OSError as exc:
            # The directory is made when a note finds it missing, not tried on every exit (a
            # mkdir failing with EEXIST was a tenth of an exec'd process's exit here).
            if exc.errno != errno.ENOENT:
                raise
            path.parent.mkdir(mode=0o700, exist_ok=True)
            write_json_atomically(path, note)
    except OSError as exc:
        log.warning("container %s: cannot note the exit of %d before publishing it: %s", id, pid, exc)
        return None
    return path


def remove_note(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def read_notes(state_dir: Path) -> list[tuple[Path, ExitNote]]:
    """Every readable note; an unreadable one (a torn write cannot happen, a hand edit can) is
    logged and removed, since nothing could be published from it."""
    notes = []
    for path in sorted((state_dir / EXITS).glob("*.json")):
        try:
            notes.append((path, ExitNote.parse(json.loads(path.read_bytes()))))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("reconcile: unreadable exit note %s (%s): removed", path, exc)
            path.unlink(missing_ok=True)
    return notes


def record_remains(state_dir: Path, note: ExitNote) -> bool:
    """The record the note's exit belongs to is still there: its adoption publishes the exit."""
    paths = container_paths(state_dir, note.id)
    if note.exec:
        return paths.exec_record(note.pid).exists()
    try:
        return json.loads(paths.record.read_bytes()).get("pid") == note.pid
    except (OSError, ValueError, AttributeError):
        return False


async def journalled_exits(events: EventsMailbox, since: float) -> set[tuple[str, int]]:
    """(id, pid) of every ``exit`` the journal holds from ``since`` on."""
    found: set[tuple[str, int]] = set()
    request = wire.Events(request_id="exit-notes", from_seq=0, since=since, limit=wire.MAX_EVENTS_PER_PAGE)
    while True:
        page = await ask(events, lambda reply_to, request=request: Ask(request, reply_to))
        found |= {(e.id, e.pid) for e in page.events if e.type == EventType.EXIT}
        if page.next_seq > page.last_seq or not page.events:
            return found
        request = wire.Events(request_id="exit-notes", from_seq=page.next_seq, limit=wire.MAX_EVENTS_PER_PAGE)


async def publish_noted_exits(state_dir: Path, events: EventsMailbox) -> int:
    """At start-up, before the reaper's unclaimed exits are released: publish what the notes
    say a killed server did not journal; returns how many were published."""
    notes = read_notes(state_dir)
    if not notes:
        return 0
    pending = [(path, note) for path, note in notes if not record_remains(state_dir, note)]
    published = 0
    if pending:
        journalled = await journalled_exits(events, min(note.time for _, note in pending) - SEARCH_MARGIN_S)
        for _path, note in pending:
            if (note.id, note.pid) not in journalled:
                await events.send(EventDraft(EventType.EXIT, note.id, note.pid, note.status, note.reason))
                published += 1
                log.info(
                    "reconcile: container %s: the exit of %d (status %s) was not journalled: published",
                    note.id,
                    note.pid,
                    note.status,
                )
        await ask(events, GetStatus)  # journalled before the notes go
    for path, _note in notes:
        path.unlink(missing_ok=True)
    return published
