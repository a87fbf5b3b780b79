"""The daemon's RLIMIT_NOFILE: the reaper and the server raise the soft limit to the hard one for
themselves, not for what they spawn.

Why raise it: the server holds ~7 descriptors per container (the parent's pipe ends, the
supervisor's copies of them, a pidfd), and the reaper 3 (its copies of the pipe ends, received
over a socket: at its limit the kernel drops them silently, with MSG_CTRUNC). The usual soft
limit of 1024 would refuse starts past ~140 containers while the hard limit (20000 here, 524288
under systemd) allows thousands. Daemons commonly raise their own soft limit at start-up for
this reason; the hard limit is the operator's policy.

Why not for runc: a container whose OCI spec sets no RLIMIT_NOFILE in ``process.rlimits`` gets
its limit from runc (a spec that sets it, as ``runc spec``'s default does, is not affected either
way). runc is a Go program; Go 1.19 raises its own soft limit to the hard one and hands that on,
so with this host's runc 1.1.5 (go1.19.8) such a container gets soft = hard whatever runc was
started with (measured: 1024:20000 and 20000:20000 both gave 20000:20000). Newer Go restores
the original soft limit in the children it starts, and runc then passes on the limit it was
started with: a raised one would change what such a container sees (``ulimit -n`` 20000 where
the operator's 1024 was meant; a program that closes every descriptor up to the limit, or uses
``select``, behaves differently). So ``for_children`` spawns runc with the original soft limit.

The window is a few hundred microseconds on the trio thread (a vfork and exec), in which no
other task runs; only a descriptor another thread (nng's, a migration's worker) opens in it,
while the server holds more than the original limit, fails with EMFILE: a rare, transient
error, where the alternative changes every such container. Without a raise (soft already the
hard limit, or a reaper re-executed for an upgrade, which keeps its raised one), nothing is done.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator

from containerd_actors.host.fds import close_quietly

#: The soft limit this process started with, once it has been raised (None: not raised).
_original_soft: int | None = None


def raise_soft_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one; returns (the original soft limit, the hard)."""
    global _original_soft
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        _original_soft = soft
    return soft, hard


def restore_in_forked_child() -> None:
    """In a child between ``fork`` and ``exec``: the original soft limit, with no window at all
    (the reaper starts the server so, and the server raises its own and records that one)."""
    if _original_soft is not None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(_original_soft, hard), hard))


@contextlib.contextmanager
def for_children() -> Iterator[None]:
    """The original soft limit while a child is spawned in the block (see the module docstring)."""
    if _original_soft is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(_original_soft, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class SpareFds:
    """A few descriptors held back so that a start failing at the fd limit can still be undone.

    Undoing a start that runc has begun means running ``runc delete``, which takes ~5
    descriptors of the server (two capture pipes and a pidfd): at the limit it could not be
    spawned, and the half-made container would stay until the next server's recovery. Closing
    these just before frees the room; they are opened again after (as many as the limit allows).
    """

    def __init__(self, count: int) -> None:
        self._count = count
        self._fds: list[int] = []
        self.refill()

    def refill(self) -> None:
        while len(self._fds) < self._count:
            try:
                self._fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        close_quietly(*self._fds)
        self._fds.clear()
        try:
            yield
        finally:
            self.refill()
