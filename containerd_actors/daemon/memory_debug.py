"""A debugging hook for memory growth: tracemalloc snapshots on demand, enabled by environment.

A server whose RSS grows under a soak (``scripts/bench_soak.py``) must show what grows. With
``CONTAINERD_ACTORS_TRACEMALLOC=DIR`` in its environment, the API server traces allocations
from its start (``TRACE_FRAMES`` frames each; it runs several times slower) and, on each
SIGUSR2, writes ``DIR/<pid>-<n>.snapshot`` (``tracemalloc.Snapshot.dump``) and logs its name.
Two snapshots compare with ``Snapshot.load(a).compare_to(Snapshot.load(b), "lineno")``, which
the soak script does with ``--tracemalloc``. Without the variable nothing is traced and SIGUSR2
keeps its default action. The wire cannot reach it.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger(__name__)

VARIABLE = "CONTAINERD_ACTORS_TRACEMALLOC"
TRACE_FRAMES = 8


def snapshot_directory(environ: Mapping[str, str]) -> Path | None:
    """Where snapshots go, if the hook is on; tracing starts here, as early as the server can."""
    value = environ.get(VARIABLE)
    if not value:
        return None
    import tracemalloc  # here: with its pickle, ~0.5 MiB of every server that never traces

    directory = Path(value)
    directory.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(TRACE_FRAMES)
    log.warning("tracemalloc is on (%s): snapshots on SIGUSR2 go to %s", VARIABLE, directory)
    return directory


async def write_snapshots_on_signal(directory: Path, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    import tracemalloc

    with trio.open_signal_receiver(signal.SIGUSR2) as signals:
        task_status.started()
        numbers = itertools.count(1)
        async for _ in signals:
            gc.collect()  # what is garbage is not growth
            path = directory / f"{os.getpid()}-{next(numbers)}.snapshot"
            tracemalloc.take_snapshot().dump(str(path))
            log.info("tracemalloc snapshot written to %s", path)
