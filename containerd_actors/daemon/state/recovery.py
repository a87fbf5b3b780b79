"""Finding the containers a previous server left running, from the state directory.

Every entry of ``<state-dir>/containers/`` must be a directory named by a valid id holding a
well-formed ``container.json``. Anything else (a torn write, a stray file, a foreign tool's
leftovers, a hand edit) is moved to ``<state-dir>/quarantine/`` with one clear log line: the
daemon still starts, and nothing is deleted that an operator might want to look at.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

from containerd_actors.daemon.state.layout import ContainerRecord
from containerd_actors.protocol import ID_PATTERN

log = logging.getLogger(__name__)

_ID_RE = re.compile(ID_PATTERN)


def quarantine(entry: Path, quarantine_dir: Path, reason: str) -> Path:
    quarantine_dir.mkdir(mode=0o700, exist_ok=True)
    target = quarantine_dir / f"{entry.name}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
    os.replace(entry, target)
    log.warning("state: quarantined %s (%s) to %s", entry, reason, target)
    return target


def load_records(containers_dir: Path, quarantine_dir: Path) -> list[ContainerRecord]:
    """The valid records, oldest first; everything else is quarantined."""
    records = []
    for entry in sorted(containers_dir.iterdir()):
        reason = None
        if not entry.is_dir() or entry.is_symlink():
            reason = "not a container directory"
        elif not _ID_RE.fullmatch(entry.name):
            reason = "not a valid container id"
        else:
            try:
                record = ContainerRecord.parse(json.loads((entry / "container.json").read_bytes()))
            except FileNotFoundError:
                reason = "no container.json (a start interrupted before it was recorded?)"
            except (OSError, ValueError) as exc:
                reason = f"unreadable container.json: {exc}"
            else:
                if record.id != entry.name:
                    reason = f"container.json names {record.id!r}"
                else:
                    records.append(record)
        if reason is not None:
            quarantine(entry, quarantine_dir, reason)
    return sorted(records, key=lambda record: record.created)
