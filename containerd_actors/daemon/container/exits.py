"""How a container's processes end: each exit watched, its output closed, recorded and announced.

Apart from ``actor.py`` because the steps of an exit come in an order that clients and a restarted
server rely on (the record before the id is freed, the supervisor's snapshot before the event, the
note until the events actor has journalled the exit: see ``state/exit_notes.py``), and that order
reads best in one place. None of this keeps state: the actor's loop calls these with what they
need, and keeps its own bookkeeping (which processes live, its phase) itself.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

import trio

from containerd_actors.daemon.container.deps import ActorDeps
from containerd_actors.daemon.container.exited import record_exec_exit, record_exit
from containerd_actors.daemon.container.messages import (
    ContainerMailbox,
    ContainerRemoved,
    ExecExited,
    InitExited,
)
from containerd_actors.daemon.container.process import DRAIN_GRACE_S, ContainerProcess
from containerd_actors.daemon.container.start import announce_intent, delete_from_runtime
from containerd_actors.daemon.container.stdio import OutputView
from containerd_actors.daemon.events.messages import EventDraft
from containerd_actors.daemon.mailbox import post
from containerd_actors.daemon.metrics.messages import RecordDuration, tell
from containerd_actors.daemon.metrics.registry import CONTAINER_DELETE_TIME
from containerd_actors.daemon.state.exit_notes import write_note
from containerd_actors.daemon.state.layout import LOG_FILE_SUFFIXES, ContainerPaths, Intent, IntentOp
from containerd_actors.host.reaping import ExitWatcher
from containerd_actors.protocol import EventType

log = logging.getLogger("containerd_actors.daemon.container.actor")

#: Why an exit event can carry no status: the process was not our child or the reaper's.
UNKNOWN_EXIT_REASON = (
    "the process exited while no reaper was its parent (the daemon and its reaper were both down), "
    "so its exit status could not be observed"
)
#: Why an exec'd process's exit announced with its container's end carries no status.
EXEC_EXIT_UNSEEN_REASON = (
    "the exec'd process's exit was not seen within the grace after the init's "
    "(it was not the reaper's child), so its exit status could not be observed"
)


async def watch(
    process: ContainerProcess,
    is_init: bool,
    exit_watcher: ExitWatcher,
    mailbox: ContainerMailbox,
    started_here: bool = False,
) -> None:
    """Wait for the process's exit and for its output to end, then tell the actor."""
    pid = process.pid
    status = exit_watcher.exited_while_away(pid)
    if status is None:
        status = await exit_watcher.wait_for_exit(process.pidfd, pid, started_here=started_here)
    with trio.move_on_after(DRAIN_GRACE_S):
        await process.drains.drained.wait()
    # ``post``: the task ends here, and a send's scheduling pass would only delay its end.
    await post(mailbox, InitExited(status) if is_init else ExecExited(pid, status))


def close_pidfd(process: ContainerProcess) -> None:
    if process.pidfd >= 0:
        os.close(process.pidfd)
        process.pidfd = -1


def end_output(process: ContainerProcess, status: int | None) -> None:
    """The process has exited and its drains had their grace: readers see the end."""
    process.drains.cancel()
    process.output.close_logs()
    process.output.mark_exited(status)
    process.stdin.close()


def killed_by(signalled: tuple[int, str] | None, status: int | None) -> str | None:
    """The TLS client whose signal (``signalled``: the last one sent, and by whom) the process
    died of (status 128+N for signal N), if any."""
    if signalled is None or status is None:
        return None
    signal_number, by = signalled
    return by if status == 128 + signal_number else None


def end_exec(id: str, paths: ContainerPaths, process: ContainerProcess, status: int | None) -> None:
    """An exec'd process has exited: its output ends, and its exited record keeps its logs."""
    close_pidfd(process)
    end_output(process, status)
    record_exec_exit(id, process.pid, process.output.view, paths)


def forget_exec_files(paths: ContainerPaths, pid: int) -> None:
    """Remove an exited exec'd process's log files and exited record.

    Also before every exec (a recycled pid's), where usually none exists: names as strings, not
    seven Paths made and parsed for seven failing unlinks."""
    for log_path in paths.exec_logs(pid):
        name = str(log_path)
        for suffix in LOG_FILE_SUFFIXES:
            _unlink_if_there(name + suffix)
    _unlink_if_there(str(paths.exec_exited_record(pid)))


def _unlink_if_there(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


async def announce_exec_exit(
    id: str,
    paths: ContainerPaths,
    process: ContainerProcess,
    status: int | None,
    reason: str | None,
    by: str | None,
    deps: ActorDeps,
) -> None:
    """Announce an exec'd process's exit (``reason``: why a null status is unknown) and let the
    reaper forget it; the actor has already reported the snapshot without it."""
    pid = process.pid
    # The note outlives the record until the events actor has journalled the exit (and
    # removed the note): see state/exit_notes.py.
    note = write_note(paths.state_dir, id, pid, status, reason, exec=True)
    paths.exec_record(pid).unlink(missing_ok=True)
    await post(deps.events, EventDraft(EventType.EXIT, id, pid, status, reason, by, note=note))
    await deps.exit_watcher.drop(process.key)
    await deps.exit_watcher.acknowledge(pid)
    log.debug("container %s: exec'd process %d exited with %s", id, pid, status)


async def remove_container(
    id: str,
    bundle: str,
    bundle_path: str,
    paths: ContainerPaths,
    init: ContainerProcess,
    status: int | None,
    outputs: Mapping[int, OutputView],
    by: str | None,
    deps: ActorDeps,
) -> None:
    """The init and the exec'd processes are gone: delete from runc, free the id, tell the world.

    ``outputs`` are every readable process's views, the init's included (its end is marked here).
    """
    close_pidfd(init)
    deleting_at = time.monotonic_ns()
    announce_intent(Intent(IntentOp.DELETE, id, bundle), paths)  # gone with the directory
    await delete_from_runtime(deps.runtime, id)
    tell(deps.metrics, RecordDuration(CONTAINER_DELETE_TIME, time.monotonic_ns() - deleting_at))
    end_output(init, status)
    # Before the container's directory goes: a server killed in between adopts it again.
    record_exit(id, bundle_path, init.pid, status, outputs, paths)
    reason = None if status is not None else UNKNOWN_EXIT_REASON
    # The record goes before the id is freed (a start may reuse it at once), and the exit is
    # journalled only after: the note names the exit in between, until the events actor
    # has journalled it and removed the note (see state/exit_notes.py).
    note = write_note(paths.state_dir, id, init.pid, status, reason, exec=False)
    paths.remove()
    await deps.supervisor.send(ContainerRemoved(id, outputs, init.pid, bundle_path))
    await deps.events.send(EventDraft(EventType.EXIT, id, init.pid, status, reason, by, note=note))
    await deps.exit_watcher.drop(init.key)
    await deps.exit_watcher.acknowledge(init.pid)
