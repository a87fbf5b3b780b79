"""The server's RLIMIT_NOFILE: raised to the hard limit for itself, not for what it spawns.

Why raise it: the server holds ~7 descriptors per container (the parent's pipe ends, the
supervisor's copies of them, a pidfd), so the usual soft limit of 1024 would refuse starts past
~140 containers while the hard limit (20000 here, 524288 under systemd) allows thousands. Daemons
commonly raise their own soft limit at start-up for this reason; only the hard limit is a policy.

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
other task runs; a descriptor another thread (nng's) opens in it beyond the original limit
fails with EMFILE, which nng retries. Without a raise (soft already the hard limit), nothing
is done at all.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator

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
