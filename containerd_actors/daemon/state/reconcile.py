"""The start-up reconcile: bring the state directory and runc's root into agreement, then adopt.

A server killed at any instant leaves runc commands possibly still working under its root, and
intents for the steps they were doing. Before anything is decided, those runc processes are
waited for (and killed once a start's timeout has passed): a ``runc run`` that is still working
would otherwise make a container nobody lists a moment after the listing. Then ``runc list`` and
the records are compared (``recovery.decide``), and what is decided is done here: containers
runc left in ``created`` are deleted, containers that run without a record get one (written from
their start's intent or from runc's state), exec'd processes that no record names get one, and
every intent is completed. What is returned is every container to adopt, with runc's status.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from pathlib import Path

import attrs
import trio

from containerd_actors.daemon.container.process import reaper_key
from containerd_actors.daemon.state.layout import (
    ContainerPaths,
    ContainerRecord,
    IntentOp,
    container_paths,
    write_json_atomically,
)
from containerd_actors.daemon.state.recovery import (
    LIVE,
    Decision,
    FoundContainer,
    FoundExec,
    decide_all,
    decide_execs,
    read_pid_file,
    recorded_exec_pids,
    scan_containers,
)
from containerd_actors.host.fds import close_quietly
from containerd_actors.host.procfs import parent_pid, process_argv, process_ids, process_start_time
from containerd_actors.host.reaping import ExitWatcher
from containerd_actors.protocol import ProcessInfo, User, converter
from containerd_actors.runc.driver import ListedContainer, Runc, RuncError
from containerd_actors.runc.process_spec import init_process_info

log = logging.getLogger(__name__)

#: After a runc process was killed, how long its exit may take to be seen.
KILLED_RUNC_GRACE_S = 5.0


@attrs.frozen
class Recovered:
    """A container to adopt, and the status runc gave it (``absent``/``stopped``: only its exit is left)."""

    record: ContainerRecord
    status: str


async def reconcile(
    state_dir: Path,
    quarantine_dir: Path,
    runc: Runc,
    exit_watcher: ExitWatcher,
    kept: dict[str, list[int]],
    runc_timeout: float,
) -> list[Recovered]:
    """Reconcile (see the module docstring); ``kept`` (the reaper's pipe ends by key) is re-keyed
    where an exec's ends were kept before its pid was known."""
    await settle_runc(runc, exit_watcher, runc_timeout)
    found = scan_containers(state_dir / "containers", quarantine_dir)
    try:
        listed = await runc.list()
    except RuncError as exc:
        # Without runc's view nothing can be decided safely: adopt what is recorded, as it is.
        log.error("reconcile: runc list failed (%s); adopting the records without reconciling", exc.message)
        records = [c.record for c in found.values() if c.record is not None]
        return [Recovered(record, "running") for record in sorted(records, key=lambda r: r.created)]
    remove_unlisted(runc.root, listed)
    recovered = []
    for decision in decide_all(found, listed):
        if (
            decision.status != "running"
            or decision.new_record
            or decision.delete_from_runc
            or decision.forget
        ):
            log.info("reconcile: container %s: %s", decision.id, decision.why)
        try:
            adopted = await _carry_out(decision, found.get(decision.id), state_dir, runc, exit_watcher, kept)
        except OSError as exc:
            # A full disk, say: what runc runs must still be adopted, if only from memory.
            log.error("reconcile: container %s: %s", decision.id, exc)
            adopted = decision.record
        if adopted is not None:
            recovered.append(Recovered(adopted, decision.status))
    return recovered


async def release_unclaimed_exits(
    exit_watcher: ExitWatcher, recorded: list[int], state_dir: Path, recovered: list[Recovered]
) -> None:
    """Let the reaper forget the exits no adopted process will claim: the runc commands a killed
    server left (reaped by the reaper as orphans), the inits of starts that never ran. Kept, they
    would be replayed to every later server and fill ``reaper-exits.jsonl`` crash after crash."""
    claimed = set()
    for container in recovered:
        claimed.add(container.record.pid)
        claimed |= recorded_exec_pids(container_paths(state_dir, container.record.id).directory)
    unclaimed = [pid for pid in recorded if pid not in claimed]
    for pid in unclaimed:
        await exit_watcher.acknowledge(pid)
    if unclaimed:
        log.info("reconcile: %d exit(s) the reaper held belong to no container; released", len(unclaimed))


async def settle_runc(runc: Runc, exit_watcher: ExitWatcher, timeout: float) -> None:
    """Wait for every runc command still working under our root; kill those that outlive ``timeout``."""
    pids = runc.working_processes()
    if not pids:
        return
    log.info("reconcile: waiting for %d runc command(s) a previous server left working", len(pids))
    async with trio.open_nursery() as nursery:
        for pid in pids:
            nursery.start_soon(_settle_one, pid, exit_watcher, timeout)


async def _settle_one(pid: int, exit_watcher: ExitWatcher, timeout: float) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        status = None
        with trio.move_on_after(timeout) as waiting:
            status = await exit_watcher.wait_for_exit(pidfd, pid)
        if waiting.cancelled_caught:
            log.warning("reconcile: runc (pid %d) still works after %g s; killing it", pid, timeout)
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            with trio.move_on_after(KILLED_RUNC_GRACE_S):
                status = await exit_watcher.wait_for_exit(pidfd, pid)
        if status is not None:
            # The reaper recorded the exit of a runc that was never a container: it may forget it.
            await exit_watcher.acknowledge(pid)
    finally:
        os.close(pidfd)


def remove_unlisted(root: Path, listed: list[ListedContainer]) -> None:
    """Entries of runc's root that runc cannot list (no state written yet) hold nothing that runs."""
    known = {container.id for container in listed}
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name not in known and entry.is_dir(follow_symlinks=False):
            log.warning(
                "reconcile: removing %s, which runc does not list (a start killed half-way)", entry.path
            )
            shutil.rmtree(entry.path, ignore_errors=True)


async def _carry_out(
    decision: Decision,
    found: FoundContainer | None,
    state_dir: Path,
    runc: Runc,
    exit_watcher: ExitWatcher,
    kept: dict[str, list[int]],
) -> ContainerRecord | None:
    paths = container_paths(state_dir, decision.id)
    if decision.delete_from_runc:
        try:
            await runc.delete(decision.id, force=True)
        except RuncError as exc:
            log.error("reconcile: container %s: runc delete --force failed: %s", decision.id, exc.message)
    if decision.forget:
        paths.remove()
        paths.remove_logs()
    record = decision.record
    if record is None:
        return None
    if decision.new_record:
        paths.directory.mkdir(mode=0o700, exist_ok=True)
        paths.logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        start_time = process_start_time(record.pid) if decision.status in LIVE else None
        record = attrs.evolve(record, pid_start_time=start_time)
        record.write(paths)
    await _settle_execs(decision, record, found, paths, runc, exit_watcher, kept)
    for intent in found.intents if found is not None else ():
        if intent.op != IntentOp.EXEC:
            paths.intent(intent.op).unlink(missing_ok=True)
        if intent.op == IntentOp.CHECKPOINT_EXIT:
            log.warning(
                "reconcile: container %s: checkpoint %r was being taken with exit; if it is not listed, "
                "the dump did not complete",
                decision.id,
                intent.checkpoint,
            )
    return record


async def _settle_execs(
    decision: Decision,
    record: ContainerRecord,
    found: FoundContainer | None,
    paths: ContainerPaths,
    runc: Runc,
    exit_watcher: ExitWatcher,
    kept: dict[str, list[int]],
) -> None:
    """Record every exec'd process no record names yet; complete every exec intent."""
    intents = found.exec_intents if found is not None else []
    pairs = [(intent, read_pid_file(paths.exec_files(intent.number or 0)[1])) for intent in intents]
    ps: dict[int, int | None] | None = None
    if decision.status in LIVE and (decision.find_execs or pairs):
        try:
            ps = {pid: parent_pid(pid) for pid in await runc.ps(decision.id)}
        except RuncError as exc:
            log.warning("reconcile: container %s: runc ps failed: %s", decision.id, exc.message)
    for exec_found in decide_execs(record.pid, recorded_exec_pids(paths.directory), pairs, ps):
        info = _exec_info(exec_found, paths)
        start_time = process_start_time(exec_found.pid) if exec_found.alive else None
        write_json_atomically(
            paths.exec_record(exec_found.pid),
            {"process": converter.unstructure(info), "pid_start_time": start_time},
        )
        how = "its exec's intent" if exec_found.intent is not None else "runc ps"
        log.info("reconcile: container %s: exec'd process %d found by %s", record.id, exec_found.pid, how)
    for intent, pid in pairs:
        pending, key = intent.kept_key, reaper_key(record.id, pid) if pid is not None else None
        if pending is not None and pending in kept and key is not None and key not in kept:
            # The pipe ends were kept before the pid was known: keep them under the pid now.
            fds = kept.pop(pending)
            kept[key] = fds
            await exit_watcher.keep(key, fds)
            await exit_watcher.drop(pending)
    for intent in intents:
        if intent.kept_key is not None and intent.kept_key in kept:
            close_quietly(*kept.pop(intent.kept_key))
            await exit_watcher.drop(intent.kept_key)
        for path in paths.exec_files(intent.number or 0):
            path.unlink(missing_ok=True)
        paths.intent(intent.op, intent.number).unlink(missing_ok=True)


def _exec_info(exec_found: FoundExec, paths: ContainerPaths) -> ProcessInfo:
    """From the spec its exec was given; failing that, from what /proc says of it."""
    if exec_found.intent is not None:
        process_file = paths.exec_files(exec_found.intent.number or 0)[0]
        try:
            spec = json.loads(process_file.read_bytes())
            return init_process_info(exec_found.pid, {"process": spec})
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning(
                "reconcile: %s is unreadable (%s); describing the process from /proc", process_file, exc
            )
    ids = process_ids(exec_found.pid) or (0, 0)
    return ProcessInfo(
        pid=exec_found.pid, args=process_argv(exec_found.pid) or [], env=[], cwd="/", user=User(*ids)
    )
