"""A debugging hook for CPU: profile the API server with cProfile, enabled by environment.

The start path's cost is a few milliseconds of the server's CPU per container, spread over
many small steps; only a profile of a real burst of starts (``scripts/bench_start.py``) says
which of them matter. With ``CONTAINERD_ACTORS_PROFILE=FILE`` in its environment the API server
runs under ``cProfile`` and writes its stats to ``FILE.<pid>`` when it stops (read them with
``python -m pstats``). The clock is the trio thread's CPU time: a wall clock would charge a
syscall for the time a loaded machine kept the server waiting, and the process's CPU time
would charge nng's threads to whatever the trio thread ran. Each call then costs a syscall, so
everything runs about three times slower and pure-Python steps look larger than they are
against system calls. ``CONTAINERD_ACTORS_PROFILE_CLOCK=wall`` measures the wall instead (what
blocks the event loop, such as the vfork of ``posix_spawn`` waiting for runc's exec). Without
the variable nothing is profiled. The wire cannot reach it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping

log = logging.getLogger(__name__)

VARIABLE = "CONTAINERD_ACTORS_PROFILE"
CLOCK_VARIABLE = "CONTAINERD_ACTORS_PROFILE_CLOCK"


@contextlib.contextmanager
def profiled(environ: Mapping[str, str]) -> Iterator[None]:
    """Profile what runs inside, if the hook is on; the stats are written however it ends."""
    target = environ.get(VARIABLE)
    if not target:
        yield
        return
    import cProfile  # here: a server that is not profiled need not carry it

    wall = environ.get(CLOCK_VARIABLE) == "wall"
    profile = cProfile.Profile(time.perf_counter if wall else time.thread_time)
    log.warning("cProfile is on (%s): stats go to %s.%d at exit", VARIABLE, target, os.getpid())
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        path = f"{target}.{os.getpid()}"
        try:
            profile.dump_stats(path)
        except OSError as exc:
            log.error("cannot write the profile to %s: %s", path, exc)
