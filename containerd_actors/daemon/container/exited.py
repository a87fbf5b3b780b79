"""What is left of an exited container, on disk: written at its exit, read back after a restart.

The supervisor keeps the output views and bundle of the last exited containers in memory (for
``logs`` and checkpoint listings); without a record on disk a restarted server forgot them, so
``logs`` of an exited container answered ``not_found`` and their log directories were never
pruned. ``ExitedRecord`` (``logs/<id>/exited.json``) holds what the views need: each kept
process's exit status and its logs' final offsets, with the rotation base, so a restarted server
serves the same bytes and reports the same rotated-out count as before.

An exec'd process that exits while its container runs on gets the same record of its own
(``exec-<pid>.exited.json``), so its logs stay readable after a restart too, and the container's
record at its exit names it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from types import MappingProxyType

from containerd_actors.daemon.container.stdio import OutputView, ProcessOutput
from containerd_actors.daemon.state.layout import ContainerPaths, ExitedProcess, ExitedRecord

log = logging.getLogger(__name__)


def record_exit(
    id: str,
    bundle: str,
    init_pid: int,
    status: int | None,
    outputs: Mapping[int, OutputView],
    paths: ContainerPaths,
) -> None:
    """Write the container's exited record; a failure (a full state dir) costs only its logs'
    life across a restart, so it is logged, never raised."""
    processes = []
    for pid, view in outputs.items():
        stdout, stderr = view.log_ranges()
        is_init = pid == init_pid
        processes.append(
            ExitedProcess(pid, is_init, view.terminal, status if is_init else view.status, stdout, stderr)
        )
    record = ExitedRecord(id, bundle, init_pid, status, time.time(), tuple(processes))
    try:
        record.write(paths)
    except OSError as exc:
        log.warning("container %s: its exit is not recorded (%s); a restart forgets its logs", id, exc)


def record_exec_exit(id: str, pid: int, view: OutputView, paths: ContainerPaths) -> None:
    """Write an exited exec'd process's record (logged, never raised, like ``record_exit``)."""
    stdout, stderr = view.log_ranges()
    try:
        ExitedProcess(pid, False, view.terminal, view.status, stdout, stderr).write(
            paths.exec_exited_record(pid)
        )
    except OSError as exc:
        log.warning(
            "container %s: the exit of %d is not recorded (%s); a restart forgets its logs", id, pid, exc
        )


def recall_exited_execs(id: str, paths: ContainerPaths, live: set[int]) -> list[OutputView]:
    """The exec'd processes that exited before a restart, oldest record first; ``live`` pids (a
    process adopted again, or a recycled pid) are not among them."""
    found = []
    for path in paths.exec_exited_records():
        try:
            process = ExitedProcess.parse(json.loads(path.read_bytes()))
            written = os.stat(path).st_mtime_ns
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("container %s: ignoring unreadable %s: %s", id, path, exc)
            continue
        if process.pid not in live and path == paths.exec_exited_record(process.pid):
            found.append((written, process))
    found.sort(key=lambda item: item[0])
    return [_view(process, paths) for _, process in found]


def _view(process: ExitedProcess, paths: ContainerPaths) -> OutputView:
    if process.init:
        stdout_path, stderr_path = paths.stdout_log, paths.stderr_log
    else:
        stdout_path, stderr_path = paths.exec_logs(process.pid)
    output = ProcessOutput(
        process.pid,
        stdout_path,
        stderr_path,
        terminal=process.terminal,
        finished=(process.stdout, process.stderr),
    )
    output.mark_exited(process.status)
    return output.view


def outputs_of(record: ExitedRecord, paths: ContainerPaths) -> Mapping[int, OutputView]:
    """Read-only views on the recorded processes' logs, as they were at the exit."""
    return MappingProxyType({process.pid: _view(process, paths) for process in record.processes})
