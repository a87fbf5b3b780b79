"""What a reaper hands to the newer version of itself when it re-executes for an upgrade.

An upgrade must not close a single pipe end: a container whose stdout loses its last reader gets
SIGPIPE on its next write, and the bytes written in between are gone. So the reaper does what
nginx does for a binary upgrade: it keeps its pid (and so its children, the container inits, and
its place as their subreaper; ``PR_SET_CHILD_SUBREAPER`` survives ``execve``), makes the
descriptors it holds inheritable, and ``execv``s the installed code anew. The new process finds
them through one descriptor named in ``$CONTAINERD_ACTORS_HANDOVER_FD``: a memfd holding JSON.

A memfd rather than the environment: an environment string is limited to 128 KiB, which a few
thousand containers' keys would pass, and rather than a file: a full state directory (the very
case the daemon must survive) could not hold it.

This crosses versions (both ways: a downgrade is an upgrade to older code), so the format only
ever grows: a key once written keeps its meaning, a reader ignores keys it does not know, and
``version`` is there to name in a log line, never to refuse: after the exec there is no older
process left to fall back to.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, NamedTuple

HANDOVER_ENV = "CONTAINERD_ACTORS_HANDOVER_FD"
HANDOVER_VERSION = 1


class HandoverError(Exception):
    """The handover is unreadable or names descriptors that are not open."""


class Handover(NamedTuple):
    """A NamedTuple, not a dataclass: dataclasses imports inspect, ~1 MiB of the reaper's memory."""

    #: The descriptor holding the state directory's flock (the lock must never be let go).
    lock_fd: int
    #: The pipe ends held per key, exactly as the old reaper held them.
    kept: dict[str, list[int]]
    #: The version that handed over, for the log line that says what was upgraded from.
    from_version: str
    #: Per key, the names under which its fds are in systemd's fd store already (``reaper.fdstore``):
    #: the new image stores nothing twice. Absent in a handover from a version without the store.
    stored: dict[str, list[str]] = {}  # shared default: a handover is read, never changed in place


def write_handover(handover: Handover) -> int:
    """Make every named descriptor inheritable and return the (inheritable) memfd describing them."""
    for fd in [handover.lock_fd, *(fd for fds in handover.kept.values() for fd in fds)]:
        os.set_inheritable(fd, True)
    document = {
        "version": HANDOVER_VERSION,
        "lock_fd": handover.lock_fd,
        "kept": handover.kept,
        "from_version": handover.from_version,
        "stored": handover.stored,
    }
    memfd = os.memfd_create("containerd-actors-handover", 0)
    os.write(memfd, json.dumps(document).encode())
    os.set_inheritable(memfd, True)
    return memfd


def undo_handover(handover: Handover, memfd: int) -> None:
    """The exec failed: nothing may leak into the next API server, so close-on-exec again."""
    os.close(memfd)
    for fd in [handover.lock_fd, *(fd for fds in handover.kept.values() for fd in fds)]:
        os.set_inheritable(fd, False)


def take_handover() -> Handover | None:
    """The handover this process was started with, or None for an ordinary start.

    The variable is removed, and every descriptor made close-on-exec again, so that neither
    reaches the API server this reaper starts.
    """
    named = os.environ.pop(HANDOVER_ENV, None)
    if named is None:
        return None
    try:
        memfd = int(named)
        with os.fdopen(memfd, "rb") as source:
            source.seek(0)
            document: Any = json.loads(source.read())
    except (ValueError, OSError) as exc:
        raise HandoverError(f"unreadable handover in fd {named}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("version"), int):
        raise HandoverError("handover without a version")
    try:
        handover = Handover(
            lock_fd=int(document["lock_fd"]),
            kept={str(key): [int(fd) for fd in fds] for key, fds in dict(document["kept"]).items()},
            from_version=str(document.get("from_version", "unknown")),
            stored={str(k): [str(n) for n in names] for k, names in dict(document.get("stored", {})).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise HandoverError(f"malformed handover: {exc!r}") from None
    for fd in [handover.lock_fd, *(fd for fds in handover.kept.values() for fd in fds)]:
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            raise HandoverError(f"handover names fd {fd}, which is not open") from None
        if stat.S_ISDIR(mode):
            raise HandoverError(f"handover names fd {fd}, which is a directory")
        os.set_inheritable(fd, False)
    return handover
