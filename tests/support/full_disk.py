"""A full state directory without filling a disk: a writer and a statvfs that share one budget."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from containerd_actors.daemon.state.space import StateDirSpace


class FullDisk:
    """``write`` stands in for ``os.write`` and writes at most ``free`` more bytes, then raises
    ENOSPC; ``room`` stands in for statvfs and reports ``free`` (or ``reported``, when a test
    wants statvfs and the writes to disagree); ``now`` is the space's clock."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.reported: int | None = None
        self.now = 0.0
        self.failed_writes = 0

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.free <= 0:
            self.failed_writes += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        count = os.write(fd, data[: self.free])
        self.free -= count
        return count

    def room(self, _root: Path) -> tuple[int, int]:
        return (self.free if self.reported is None else self.reported), -1

    def clock(self) -> float:
        return self.now

    def space(self, root: Path) -> StateDirSpace:
        return StateDirSpace(root, room=self.room, clock=self.clock)
