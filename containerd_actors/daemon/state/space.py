"""Whether the state directory has room: one fact that every writer into it shares.

When the filesystem under the state directory is full (a write fails with ENOSPC, EDQUOT or
EIO), the daemon degrades instead of failing: container logs drop output and count it, the
events journal holds events in memory, and starts are refused with an error that says so. This
object is where those writers meet. The first failed write marks the state directory full (one
line in the daemon log); while it is full, writers skip their writes instead of failing each one;
a probe of the free space (``statvfs``, at most every ``PROBE_INTERVAL_S``) marks it as having
room again (one more line) and calls back whoever waited for room: a log writes its
``[N bytes lost: state dir full]`` marker, the events actor flushes the journal.

Why sharing it is safe: the daemon runs in one trio thread and every method here is synchronous,
so no two writers interleave inside it; it holds only its own flag, counters and callbacks. It
belongs to no actor because the filesystem it describes belongs to none: the logs of a hundred
container actors and the journal of the events actor all live on it.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import trio

from containerd_actors.daemon.mailbox import CommandError
from containerd_actors.protocol import ErrorCode

log = logging.getLogger(__name__)

#: The errors of a write that mean "the state directory cannot take this now". EIO is included:
#: a filesystem that fails writes is, for the daemon, a full one (its containers must go on).
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})
#: Free bytes a start needs, and that count as room again: a start writes a handful of small
#: files (the record, runc's state, pid file and log, two empty logs), a few pages each.
ROOM_BYTES = 64 << 10
#: Free inodes a start needs (on filesystems that count them).
ROOM_INODES = 16
#: How often a full state directory is probed for room again.
PROBE_INTERVAL_S = 0.5


def is_space_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS


class StateDirFull(CommandError):
    """A start (or another request that must write records) refused because there is no room."""

    def __init__(self, root: Path, what: str) -> None:
        super().__init__(
            ErrorCode.RUNTIME_FAILED,
            f"cannot {what}: state dir {root}: no space left on device "
            "(free space in it; the daemon notices within a second)",
        )


def statvfs_room(root: Path) -> tuple[int, int]:
    """(free bytes, free inodes) for an unprivileged writer; inodes are -1 where not counted."""
    stats = os.statvfs(root)
    inodes = stats.f_favail if stats.f_files else -1
    return stats.f_bavail * stats.f_frsize, inodes


class StateDirSpace:
    """Full or not, since when, what was lost meanwhile, and who waits for room.

    ``room`` and ``clock`` are there for tests, which simulate a full disk without filling one.
    """

    def __init__(
        self,
        root: Path,
        *,
        room: Callable[[Path], tuple[int, int]] = statvfs_room,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self._room = room
        self._clock = clock
        self.full = False
        #: Times the state directory became full; the totals below are since the daemon started.
        self.episodes = 0
        self.lost_output_bytes = 0
        self.held_events = 0
        self._episode_lost = 0
        self._episode_held = 0
        self._last_probe = -math.inf
        self._waiting: list[Callable[[], None]] = []
        self._became_full = trio.Event()

    # ------------------------------------------------------------------ what writers report

    def report_failure(self, exc: OSError, what: str) -> None:
        """A write failed with a space error: the first one marks the state directory full."""
        if self.full:
            return
        self.full = True
        self.episodes += 1
        self._last_probe = self._clock()
        log.error(
            "state dir %s is full (%s, %s): container output is dropped and counted, events wait in "
            "memory, starts are refused, until it has room again",
            self.root,
            exc.strerror or exc,
            what,
        )
        self._became_full.set()

    def count_lost_output(self, size: int) -> None:
        self.lost_output_bytes += size
        self._episode_lost += size

    def count_held_event(self) -> None:
        self.held_events += 1
        self._episode_held += 1

    # ------------------------------------------------------------------ what writers ask

    def writable(self) -> bool:
        """Worth trying a write? While full, a probe at most every ``PROBE_INTERVAL_S`` decides."""
        if not self.full:
            return True
        now = self._clock()
        if now - self._last_probe < PROBE_INTERVAL_S:
            return False
        return self.probe()

    def probe(self) -> bool:
        """Look at the free space now; returns whether there is room (and announces it if new)."""
        self._last_probe = self._clock()
        if self.has_room():
            if self.full:
                self._recovered()
            return True
        return False

    def has_room(self) -> bool:
        try:
            free_bytes, free_inodes = self._room(self.root)
        except OSError:
            return not self.full  # cannot tell: keep what we believed
        return free_bytes >= ROOM_BYTES and (free_inodes < 0 or free_inodes >= ROOM_INODES)

    def require_room(self, what: str) -> None:
        """Raise ``StateDirFull`` unless a write of a few small files should succeed now."""
        if self.full and not self.probe():
            raise StateDirFull(self.root, what)
        if not self.full and not self.has_room():
            self.report_failure(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), f"found while {what}")
            raise StateDirFull(self.root, what)

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once there is room (at once if the state directory is not full)."""
        if self.full:
            self._waiting.append(callback)
        else:
            callback()

    # ------------------------------------------------------------------ recovery

    def _recovered(self) -> None:
        self.full = False
        log.warning(
            "state dir %s has room again: %d bytes of container output were lost and %d events "
            "waited in memory while it was full",
            self.root,
            self._episode_lost,
            self._episode_held,
        )
        self._episode_lost = self._episode_held = 0
        self._became_full = trio.Event()
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            # A callback whose write fails again marks the state directory full again and
            # waits once more; the others still get their turn.
            try:
                callback()
            except Exception:
                log.exception("state dir %s: a writer waiting for room failed", self.root)

    async def watch(self) -> None:
        """Probe while full, so that idle waiters (a closed log, a quiet journal) hear of room."""
        while True:
            await self._became_full.wait()
            while self.full:
                await trio.sleep(PROBE_INTERVAL_S)
                self.probe()


#: One ``StateDirSpace`` per state directory the process uses (the daemon uses one).
_spaces: dict[Path, StateDirSpace] = {}


def state_dir_space(state_dir: Path) -> StateDirSpace:
    """The space of a state directory, made on first use; writers below it share it."""
    root = Path(os.path.abspath(state_dir))
    space = _spaces.get(root)
    if space is None:
        space = _spaces[root] = StateDirSpace(root)
    return space


def space_of(directory: Path) -> StateDirSpace:
    """The space of the state directory holding ``directory``; outside every one, its own.

    (Tests that make logs or journals in a temporary directory thereby get a space of their own.)
    """
    # Strings, not PurePath.is_relative_to: this runs a few times per container start.
    absolute = os.path.abspath(directory)
    best: Path | None = None
    for root in _spaces:
        text = str(root)
        below = absolute == text or absolute.startswith(text if text.endswith(os.sep) else text + os.sep)
        if below and (best is None or len(text) > len(str(best))):
            best = root
    if best is not None:
        return _spaces[best]
    return state_dir_space(Path(absolute))
