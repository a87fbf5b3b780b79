"""Taking over the containers a previous API server left running.

A restarted server finds each container's record in the state directory (``state.recovery``) and
gets back the pipe ends the reaper kept for it (keys: the container id for the init,
``id/pid`` for an exec'd process). Each container is then adopted by a new actor: its init and
exec'd processes are tracked again from their records, their output continues in the same logs,
and an exit that happened while no server ran is reported with the status the reaper recorded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs

from containerd_actors.daemon.container.process import Launched, pidfd_if_alive, reaper_key
from containerd_actors.daemon.container.stdio import ProcessOutput
from containerd_actors.daemon.state.layout import ContainerPaths, ContainerRecord
from containerd_actors.host.fds import close_quietly
from containerd_actors.host.procfs import process_start_time
from containerd_actors.host.reaping import ExitWatcher
from containerd_actors.protocol import ProcessInfo, User
from containerd_actors.protocol.codec import tolerant_converter
from containerd_actors.runc.bundle import read_bundle_config
from containerd_actors.runc.process_spec import init_process_info

log = logging.getLogger(__name__)


#: Written into the log of a process adopted without its pipes (nobody held them across the
#: restart): what it wrote since is gone, and a reader must not take the silence for none.
OUTPUT_LOST_MARKER = (
    b"[containerd-actors: output lost: the daemon restarted and nothing kept this process's pipes]\n"
)


@attrs.frozen
class Adoption:
    """One container to take over: its record and the pipe ends the reaper kept for it."""

    record: ContainerRecord
    init_fds: list[int]
    #: By reaper key (``id/pid``), for the exec'd processes.
    exec_fds: dict[str, list[int]]
    #: runc's status at the reconcile: ``paused`` is kept; any other the actor learns by itself.
    status: str = "running"


async def plan_adoptions(
    records: list[ContainerRecord],
    kept: dict[str, list[int]],
    exit_watcher: ExitWatcher,
    statuses: Mapping[str, str] | None = None,
) -> list[Adoption]:
    """Hand each record the pipe ends kept for it; close and release those no record claims."""
    unclaimed = dict(kept)
    adoptions = []
    for record in records:
        prefix = reaper_key(record.id) + "/"
        exec_fds = {key: unclaimed.pop(key) for key in list(unclaimed) if key.startswith(prefix)}
        status = (statuses or {}).get(record.id, "running")
        adoptions.append(Adoption(record, unclaimed.pop(reaper_key(record.id), []), exec_fds, status))
    for key, fds in unclaimed.items():
        log.warning("reaper held pipes for %s, which has no record; closing them", key)
        close_quietly(*fds)
        await exit_watcher.drop(key)
    return adoptions


def _alive(pid: int, start_time: int | None) -> bool:
    """The same process as recorded: a pid alone may have been reused by a stranger."""
    return process_start_time(pid) == start_time


@attrs.frozen
class AdoptedInit:
    launched: Launched
    #: The bundle's OCI process object, the template of exec'd processes' specs (as at a start):
    #: without it they would run without the bundle's capabilities and rlimits.
    process_spec: dict[str, Any]


def adopt_init(id: str, bundle: Path, paths: ContainerPaths, adoption: Adoption) -> AdoptedInit:
    """The init as the record describes it, with the ends the reaper kept (stdin may be closed)."""
    record = adoption.record
    try:
        config = read_bundle_config(bundle)
        info = init_process_info(record.pid, config)
        process_spec = dict(config.get("process") or {})
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning(
            "container %s: its bundle's config is unreadable now (%s); exec gets a bare spec", id, exc
        )
        info = ProcessInfo(pid=record.pid, args=[], env=[], cwd="/", user=User())
        process_spec = {}
    # The record says whether the init has a pty: ``start -t``/``-T`` may have overridden the bundle.
    info = attrs.evolve(info, terminal=record.terminal)
    stdin_fd, out_fds = _kept_ends(adoption.init_fds, record.terminal)
    # The logs continue where the previous server left them (offsets count from the current file).
    paths.logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    alive = _alive(record.pid, record.pid_start_time)
    if alive and out_fds == (-1, -1):
        mark_output_lost(paths.stdout_log)
    output = ProcessOutput(record.pid, paths.stdout_log, paths.stderr_log, terminal=record.terminal)
    pidfd = pidfd_if_alive(record.pid) if alive else -1
    log.info("container %s: adopted (pid %d%s)", id, record.pid, "" if alive else ", already exited")
    return AdoptedInit(Launched(info, reaper_key(id), pidfd, output, stdin_fd, out_fds), process_spec)


def _kept_ends(fds: list[int], terminal: bool) -> tuple[int, tuple[int, int]]:
    """The stdin end and output ends among what the reaper kept (``Launched.kept_fds`` order).

    A terminal's ends are the pty master twice (input; output); pipes are stdin, stdout, stderr,
    or only the two outputs once a client closed stdin. Anything else is closed and left undrained.
    """
    if terminal and len(fds) == 2:
        return fds[0], (fds[1], -1)
    if not terminal and len(fds) == 3:
        return fds[0], (fds[1], fds[2])
    if not terminal and len(fds) == 2:  # its stdin was closed before the restart
        return -1, (fds[0], fds[1])
    close_quietly(*fds)
    return -1, (-1, -1)


def adopt_execs(id: str, paths: ContainerPaths, exec_fds: dict[str, list[int]]) -> list[Launched]:
    """The exec'd processes a previous server started, from their records and kept pipe ends."""
    adopted = []
    for record_path in paths.exec_records():
        try:
            raw = json.loads(record_path.read_bytes())
            info = tolerant_converter.structure(raw["process"], ProcessInfo)
            start_time = raw.get("pid_start_time")
        except (OSError, ValueError, KeyError, TypeError, cattrs.BaseValidationError) as exc:
            log.warning("container %s: ignoring unreadable %s: %s", id, record_path, exc)
            record_path.unlink(missing_ok=True)
            continue
        key = reaper_key(id, info.pid)
        stdin_fd, out_fds = _kept_ends(exec_fds.pop(key, []), info.terminal)
        alive = _alive(info.pid, start_time)
        pidfd = pidfd_if_alive(info.pid) if alive else -1
        stdout_path, stderr_path = paths.exec_logs(info.pid)
        if alive and out_fds == (-1, -1):
            mark_output_lost(stdout_path)
        output = ProcessOutput(info.pid, stdout_path, stderr_path, terminal=info.terminal)
        adopted.append(Launched(info, key, pidfd, output, stdin_fd, out_fds))
        log.info("container %s: adopted exec'd process %d", id, info.pid)
    return adopted


def mark_output_lost(log_path: Path) -> None:
    """Say in the log that output was lost, once: a second restart without pipes adds nothing new."""
    try:
        with open(log_path, "a+b") as log_file:
            size = log_file.seek(0, os.SEEK_END)
            if size >= len(OUTPUT_LOST_MARKER):
                log_file.seek(size - len(OUTPUT_LOST_MARKER))
                if log_file.read() == OUTPUT_LOST_MARKER:
                    return
            log_file.write(OUTPUT_LOST_MARKER)
    except OSError as exc:
        log.warning("cannot mark lost output in %s: %s", log_path, exc)


async def release_unrecorded(
    exec_fds: Mapping[str, list[int]], execs: list[Launched], exit_watcher: ExitWatcher
) -> None:
    """Let go of the pipe ends kept for a process no record names (an exec that never started)."""
    for key in set(exec_fds) - {launched.key for launched in execs}:
        close_quietly(*exec_fds[key])
        await exit_watcher.drop(key)
