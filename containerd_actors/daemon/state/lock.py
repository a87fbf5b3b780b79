"""One daemon per state directory, enforced with an exclusive flock held for the daemon's life.

Why: two daemons on one ``--state-dir`` (say, with different ``--listen`` addresses) would both
adopt the same containers, both reap and ``runc delete`` them, and append to one event journal with
clashing sequence numbers. The socket address cannot catch that; the state directory can.

The lock is an ``flock`` on ``<state-dir>/daemon.lock``: the kernel drops it when the holder dies,
however it dies, so a crashed daemon never leaves a stale lock behind. The file holds the holder's
pid, only to name it in the error.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "daemon.lock"


class StateDirInUse(Exception):
    """Another live process holds the state directory's lock."""


def lock_state_dir(state_dir: Path) -> int:
    """Take the lock (without waiting) and return its descriptor; keep it open to keep the lock.

    The descriptor is close-on-exec: the API server that the reaper starts does not inherit it,
    so a server crash and restart leave the lock with the reaper.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateDirInUse(
            f"state dir {state_dir} is in use by another containerd-actors (pid {holder})"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
