"""What a restarted server finds in the state directory, and what it decides from it and from runc.

Every entry of ``<state-dir>/containers/`` must be a directory named by a valid id holding a
well-formed ``container.json``, or the intent of a start that has not written one yet. Anything
else (a torn write, a stray file, a foreign tool's leftovers, a hand edit) is moved to
``<state-dir>/quarantine/`` with one clear log line: the daemon still starts, and nothing is
deleted that an operator might want to look at.

The decisions (``decide``, ``decide_execs``) are pure: they compare the records and intents with
``runc list`` and ``runc ps``, so each rule is tested without a daemon. ``state.reconcile`` carries
them out. The rules, so that nothing under the daemon's runc root is ever left unlisted:

- a container runc knows as running or paused is adopted: from its record, or, without one, from
  the intent of its start (which names the request that made it) or from runc's own state;
- a container runc knows as ``created`` never got its process started: it is deleted;
- a record whose container runc no longer runs is adopted all the same, so that its actor
  publishes the exit (with the status the reaper saw, if it saw it) and deletes what is left;
- a start that made nothing runc knows is forgotten: no client was ever given its pid.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from containerd_actors.daemon.state.layout import ContainerRecord, Intent, IntentOp, read_intent
from containerd_actors.protocol import ID_PATTERN
from containerd_actors.runc.driver import ListedContainer

log = logging.getLogger(__name__)

_ID_RE = re.compile(ID_PATTERN)
_EXEC_RECORD_RE = re.compile(r"exec-(\d+)\.process\.json")
#: runc's states in which a container has processes that someone must manage.
LIVE = ("running", "paused")


def quarantine(entry: Path, quarantine_dir: Path, reason: str) -> Path:
    quarantine_dir.mkdir(mode=0o700, exist_ok=True)
    target = quarantine_dir / f"{entry.name}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
    os.replace(entry, target)
    log.warning("state: quarantined %s (%s) to %s", entry, reason, target)
    return target


@attrs.frozen
class FoundContainer:
    """One directory of ``<state-dir>/containers/``: its record, or the intent of the start making it."""

    id: str
    record: ContainerRecord | None
    intents: tuple[Intent, ...] = ()
    #: The pid runc wrote to ``init.pid`` (a start that got that far), if any.
    init_pid: int | None = None

    @property
    def start(self) -> Intent | None:
        return next((i for i in self.intents if i.op in (IntentOp.START, IntentOp.RESTORE)), None)

    @property
    def exec_intents(self) -> list[Intent]:
        return [intent for intent in self.intents if intent.op == IntentOp.EXEC]


def read_pid_file(path: Path) -> int | None:
    """A pid runc wrote, or None (no file yet, or a torn one)."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 1 else None


def recorded_exec_pids(directory: Path) -> set[int]:
    return {
        int(m.group(1))
        for p in directory.glob("exec-*.process.json")
        if (m := _EXEC_RECORD_RE.fullmatch(p.name))
    }


def _read_intents(directory: Path) -> list[Intent]:
    intents = []
    for path in sorted(directory.glob("intent-*.json")):
        try:
            intents.append(read_intent(path))
        except (OSError, ValueError) as exc:
            log.warning("state: ignoring unreadable intent %s: %s", path, exc)
            path.unlink(missing_ok=True)
    return intents


def scan_containers(containers_dir: Path, quarantine_dir: Path) -> dict[str, FoundContainer]:
    """Every container directory with a record or a start intent; everything else is quarantined."""
    found: dict[str, FoundContainer] = {}
    for entry in sorted(containers_dir.iterdir()):
        reason = None
        if not entry.is_dir() or entry.is_symlink():
            reason = "not a container directory"
        elif not _ID_RE.fullmatch(entry.name):
            reason = "not a valid container id"
        else:
            intents = tuple(_read_intents(entry))
            init_pid = read_pid_file(entry / "init.pid")
            try:
                record = ContainerRecord.parse(json.loads((entry / "container.json").read_bytes()))
            except FileNotFoundError:
                container = FoundContainer(entry.name, None, intents, init_pid)
                if container.start is not None and container.start.id == entry.name:
                    found[entry.name] = container
                else:
                    reason = "no container.json and no intent of a start"
            except (OSError, ValueError) as exc:
                reason = f"unreadable container.json: {exc}"
            else:
                if record.id != entry.name:
                    reason = f"container.json names {record.id!r}"
                else:
                    found[entry.name] = FoundContainer(entry.name, record, intents, init_pid)
        if reason is not None:
            quarantine(entry, quarantine_dir, reason)
    return found


def load_records(containers_dir: Path, quarantine_dir: Path) -> list[ContainerRecord]:
    """The valid records, oldest first; everything else but interrupted starts is quarantined."""
    found = scan_containers(containers_dir, quarantine_dir)
    records = [container.record for container in found.values() if container.record is not None]
    return sorted(records, key=lambda record: record.created)


@attrs.frozen
class Decision:
    """What the reconcile does with one container id (``why`` goes to the log)."""

    id: str
    why: str
    #: ``runc delete --force`` it first: runc holds a container whose process never started.
    delete_from_runc: bool = False
    #: Hand it to an actor with this record (its pid's start time is read when it is written).
    record: ContainerRecord | None = None
    #: The record is new: write it before the adoption.
    new_record: bool = False
    #: runc's status, which the actor starts from (``stopped``/``absent``: only its exit is left).
    status: str = "absent"
    #: Compare ``runc ps`` with the exec records: an exec was in flight, or nothing recorded any.
    find_execs: bool = False
    #: Remove its directory and logs: a start that made nothing that any client was told of.
    forget: bool = False


def decide(found: FoundContainer | None, listed: ListedContainer | None, now: float) -> Decision:
    """The one rule book of the reconcile, for one id (see the module docstring)."""
    assert found is not None or listed is not None
    id = found.id if found is not None else listed.id  # type: ignore[union-attr]
    status = listed.status if listed is not None else "absent"
    delete = status == "created"
    if found is not None and found.record is not None:
        execs = bool(found.exec_intents) and status in LIVE
        why = {
            "created": "left in created: deleted; its exit is published",
            "absent": "no longer in runc: its exit is published",
            "stopped": "stopped: its exit is published",
        }.get(status, f"{status}: adopted from its record")
        return Decision(
            id, why, delete, found.record, status="absent" if delete else status, find_execs=execs
        )
    start = found.start if found is not None else None
    if status in LIVE or (status == "stopped" and start is not None and found is not None and found.init_pid):
        assert listed is not None
        pid = listed.pid if status in LIVE else found.init_pid  # type: ignore[union-attr]
        assert pid is not None
        if start is not None:
            record = ContainerRecord(id, start.bundle, pid, None, now, request_id=start.request_id)
            why = f"{status}, started by request {start.request_id!r} that recorded nothing: adopted"
        else:
            record = ContainerRecord(id, listed.bundle, pid, None, now)
            why = f"{status} in runc with no record: adopted from runc's state"
        return Decision(id, why, record=record, new_record=True, status=status, find_execs=status in LIVE)
    if listed is not None:
        why = f"{status} in runc with no record and no pid to report: deleted"
        if status == "created":
            why = "left in created by an interrupted start: deleted"
        return Decision(id, why, delete_from_runc=True, forget=found is not None)
    return Decision(id, "a start that made no container: forgotten", forget=True)


def decide_all(found: Mapping[str, FoundContainer], listed: Iterable[ListedContainer]) -> list[Decision]:
    """A decision for every id that has a directory or that runc knows, oldest record first."""
    by_id = {container.id: container for container in listed}
    now = time.time()
    ids = sorted(set(found) | set(by_id))
    decisions = [decide(found.get(id), by_id.get(id), now) for id in ids]
    return sorted(decisions, key=lambda d: (d.record.created if d.record is not None else now, d.id))


@attrs.frozen
class FoundExec:
    """An exec'd process to record: from its exec's intent (spec, kept pipes) or found by ``runc ps``."""

    pid: int
    intent: Intent | None
    #: In the container now (``runc ps``): its start time may be read and pinned.
    alive: bool


def decide_execs(
    init_pid: int,
    recorded: set[int],
    intents: Iterable[tuple[Intent, int | None]],
    ps: Mapping[int, int | None] | None,
) -> list[FoundExec]:
    """The exec'd processes no record names yet.

    ``intents`` pairs each exec intent with the pid runc wrote to its pid file (None: runc never
    got that far). ``ps`` maps each pid in the container to its parent (None: the container is
    not running). A process whose parent is in the container is some process's child, not an
    exec'd one: exec'd processes are orphaned by ``runc exec -d`` to the subreaper.
    """
    found: dict[int, FoundExec] = {}
    for intent, pid in intents:
        if pid is None or pid in recorded or pid == init_pid:
            continue
        found[pid] = FoundExec(pid, intent, alive=ps is not None and pid in ps)
    for pid, parent in (ps or {}).items():
        if pid == init_pid or pid in recorded or pid in found:
            continue
        if parent is not None and parent in ps:  # type: ignore[operator]
            continue
        found[pid] = FoundExec(pid, None, alive=True)
    return sorted(found.values(), key=lambda f: f.pid)
