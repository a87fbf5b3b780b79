"""A container in runc: its start (``runc run -d``, or ``runc restore -d`` from a checkpoint)
and its deletion once the init has exited. Its stdio is three pipes, or a pty whose master runc
sends over a console socket when the init has a terminal (see ``console``).

A start either leaves a running init with its record written, or no trace at all: nothing in
runc's root, nothing in the state directory, and a ``CommandError`` that says why. A server killed
half-way leaves the start's intent behind, with the pipe ends already in the reaper's keeping, so
the next server adopts what runc made (or deletes what it only half made); see ``state.recovery``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from containerd_actors.daemon.container.checkpoint import (
    checkpoint_terminal,
    checkpoints_dir,
    criu_options,
    fresh_criu_work_dir,
    read_checkpoint,
)
from containerd_actors.daemon.container.console import InitStdio
from containerd_actors.daemon.container.deps import ActorDeps, ContainerRuntime
from containerd_actors.daemon.container.messages import ContainerRemoved
from containerd_actors.daemon.container.process import Launched, pidfd_if_alive, reaper_key
from containerd_actors.daemon.container.slots import StartSlots, StartsStopped
from containerd_actors.daemon.container.stdio import ProcessOutput
from containerd_actors.daemon.events.messages import EventDraft
from containerd_actors.daemon.mailbox import CommandError, ReplyTo, answer, fail, post
from containerd_actors.daemon.metrics.messages import RecordDuration, tell
from containerd_actors.daemon.metrics.registry import CONTAINER_START_TIME
from containerd_actors.daemon.state.layout import (
    ContainerPaths,
    ContainerRecord,
    Intent,
    IntentOp,
    complete_intent,
)
from containerd_actors.daemon.state.space import space_of
from containerd_actors.host.fd_limit import SpareFds
from containerd_actors.host.fds import describe_os_error, is_fd_limit_error
from containerd_actors.host.procfs import process_start_time
from containerd_actors.host.reaping import ExitWatcher
from containerd_actors.protocol import ErrorCode, EventType
from containerd_actors.runc.bundle import read_bundle_config, validate_bundle, write_with_terminal
from containerd_actors.runc.driver import RuncError, RuncTimeout, RuncUnavailable
from containerd_actors.runc.process_spec import init_process_info

log = logging.getLogger(__name__)


@attrs.frozen
class StartedInit:
    """A running init, and what its actor keeps from the bundle for later exec'd processes."""

    launched: Launched
    bundle: Path
    #: The bundle's OCI ``process`` object, the template of every exec'd process's spec.
    process_spec: dict[str, Any]


async def start_init(
    id: str,
    bundle: str,
    checkpoint: str | None,
    paths: ContainerPaths,
    runtime: ContainerRuntime,
    slots: StartSlots,
    terminal: bool | None = None,
    request_id: str | None = None,
    exit_watcher: ExitWatcher | None = None,
) -> StartedInit:
    """Start (or restore) the init in one of ``slots``; raises CommandError, leaving no trace.

    ``terminal`` overrides the bundle's ``process.terminal`` (None: the checkpoint's, else the
    bundle's). With a terminal, runc sends the pty master over a console socket and the init's
    output is its one stream.

    ``exit_watcher`` is handed copies of the pipe ends before runc runs, so that a container a
    killed server started keeps its stdio (see the module docstring); a terminal's master exists
    only after, and is handed over once the record is written. ``request_id`` is recorded so that the same
    request repeated is answered with this container's pid.
    """
    _spare_fds()  # held from the first start on, long before the limit is near
    try:
        bundle_path = validate_bundle(bundle)
        config = read_bundle_config(bundle_path)
        info = init_process_info(0, config)
        process_spec = dict(config.get("process") or {})
        restore_from = read_checkpoint(bundle_path, checkpoint) if checkpoint else None
        if terminal is None and restore_from is not None:
            terminal = checkpoint_terminal(bundle_path, restore_from.name)
    except (ValueError, TypeError, AttributeError) as exc:
        raise CommandError(ErrorCode.INVALID_BUNDLE, f"bad bundle config: {exc}") from None
    except OSError as exc:  # only the fd limit gets here (EMFILE): nothing is made yet
        raise CommandError(
            ErrorCode.RUNTIME_FAILED, f"cannot start container: {describe_os_error(exc)}"
        ) from None
    space_of(paths.directory.parent).require_room(f"start container {id!r}")  # before runc fails obscurely
    if terminal is None:
        terminal = info.terminal
    try:
        paths.create()
    except FileExistsError:
        raise CommandError(
            ErrorCode.ALREADY_EXISTS,
            f"container {id!r} already has state in {paths.directory} (left by an earlier daemon?)",
        ) from None
    stdio = InitStdio(terminal)  # opens nothing yet: its pipes are made in the try below
    # The files are made with the first byte written (``paths.create`` just made their directory):
    # a reader before that finds empty logs, and most inits of a burst never write to stderr.
    output = ProcessOutput(0, paths.stdout_log, paths.stderr_log, terminal=terminal, new=True)
    key = reaper_key(id)
    kept = False
    #: Whether runc was asked to make the container: before that, runc's root has nothing to
    #: undo (and at the fd limit, ``runc delete`` could not even be spawned).
    runc_called = False
    pidfd = -1
    try:
        # In the try: out of descriptors (EMFILE) here, the start is refused and undone like any
        # other failure, where an error before it crashed the actor and left the state directory.
        stdio.open()
        # Before the slot: a start still queued when the server dies is recognised as one.
        intent = Intent(
            IntentOp.START if restore_from is None else IntentOp.RESTORE,
            id,
            str(bundle_path),
            request_id,
            checkpoint=checkpoint,
            kept_key=key if exit_watcher is not None and not terminal else None,
        )
        intent_path = intent.write(paths)
        runc_bundle = bundle_path
        if terminal != info.terminal:
            runc_bundle = write_with_terminal(bundle_path, config, terminal, paths.runc_bundle)

        async def in_slot() -> int:
            nonlocal kept, runc_called
            early_ends = stdio.ends_before_run
            if exit_watcher is not None and early_ends is not None:
                await exit_watcher.keep(key, early_ends)
                kept = True
            runc_called = True
            if restore_from is None:
                return await runtime.run_detached(
                    id,
                    runc_bundle,
                    paths.pid_file,
                    paths.runc_log,
                    stdio.runc_stdio,
                    console_socket=stdio.console_socket,
                )
            return await runtime.restore_detached(
                id,
                runc_bundle,
                checkpoints_dir(bundle_path) / restore_from.name,
                fresh_criu_work_dir(paths),
                paths.pid_file,
                paths.runc_log,
                stdio.runc_stdio,
                criu_options(restore_from),
                console_socket=stdio.console_socket,
            )

        pid = await slots.run(in_slot)
        stdin_fd, out_fds = await stdio.parent_ends()
        # In the try: a record that cannot be written (a full state dir) undoes the start.
        ContainerRecord(
            id,
            str(bundle_path),
            pid,
            process_start_time(pid),
            time.time(),
            terminal=terminal,
            request_id=request_id,
        ).write(paths)
        pidfd = pidfd_if_alive(pid)
        if terminal and exit_watcher is not None:
            # A pty master exists only now; kept before the answer, so that a copy it cannot
            # make (EMFILE) undoes the start instead of crashing the actor of a started container.
            kept = True
            await exit_watcher.keep(key, [stdin_fd, *(fd for fd in out_fds if fd >= 0)])
    except BaseException as exc:
        stdio.close_all()
        output.close_logs()
        if pidfd >= 0:
            os.close(pidfd)
        with trio.CancelScope(shield=True):
            await _forget_failed_start(id, paths, runtime if runc_called else None)
            if kept and exit_watcher is not None:
                await exit_watcher.drop(key)
        if isinstance(exc, RuncTimeout):
            raise CommandError(ErrorCode.RUNTIME_FAILED, exc.message) from None
        if isinstance(exc, RuncError):
            raise CommandError(
                ErrorCode.RUNTIME_FAILED, f"runc {exc.command} failed: {exc.message}"
            ) from None
        if isinstance(exc, OSError):
            raise CommandError(
                ErrorCode.RUNTIME_FAILED, f"cannot start container: {describe_os_error(exc)}"
            ) from None
        if isinstance(exc, StartsStopped):
            raise CommandError(ErrorCode.RUNTIME_FAILED, f"container {id!r} not started: {exc}") from None
        raise
    output.pid = pid
    complete_intent(intent_path)
    launched = Launched(
        attrs.evolve(info, pid=pid, terminal=terminal),
        key,
        pidfd,
        output,
        stdin_fd,
        out_fds,
        started_here=True,
    )
    return StartedInit(launched, bundle_path, process_spec)


async def start_and_answer(
    id: str,
    bundle: str,
    checkpoint: str | None,
    paths: ContainerPaths,
    deps: ActorDeps,
    start_reply: ReplyTo,
    terminal: bool | None = None,
    request_id: str | None = None,
    by: str | None = None,
) -> StartedInit | None:
    """Start the init for its actor, answer the creator (``by``: its TLS CN, or None if local) and
    announce the start; None when it did not start (the supervisor has been told the id is free).

    An unexpected error is answered and raised: the supervisor removes a crashed actor's entry itself.
    """
    started_at = time.monotonic_ns()
    try:
        # The reaper is handed copies of the pipe ends before runc runs (see ``start_init``), so a
        # server crash never closes a container's stdio.
        started = await start_init(
            id,
            bundle,
            checkpoint,
            paths,
            deps.runtime,
            deps.start_slots,
            terminal,
            request_id,
            deps.exit_watcher,
        )
    except CommandError as error:
        fail(start_reply, error)
        await post(deps.supervisor, ContainerRemoved(id))
        return None
    except BaseException as error:
        fail(start_reply, CommandError(ErrorCode.INTERNAL, f"start failed: {error!r}"))
        raise
    init = started.launched
    answer(start_reply, init.info.pid)
    tell(deps.metrics, RecordDuration(CONTAINER_START_TIME, time.monotonic_ns() - started_at))
    await post(deps.events, EventDraft(EventType.START_CONTAINER, id, init.info.pid, by=by))
    return started


def announce_intent(intent: Intent, paths: ContainerPaths) -> Path | None:
    """Write ``intent`` for a step that goes ahead even if it cannot be announced (a delete, a dump):
    a reconcile then decides from runc's state alone, which it can for these."""
    try:
        return intent.write(paths)
    except OSError as exc:
        log.warning("container %s: cannot write the intent of %s: %s", intent.id, intent.op, exc)
        return None


async def delete_from_runtime(runtime: ContainerRuntime, id: str) -> None:
    """After the init's exit: remove the container from runc's root, by force if it must be.

    Out of descriptors, runc cannot even be started: tried again for a few seconds with the spare
    descriptors released (as the undo of a failed start is), since containers exiting free theirs.
    """
    failure: RuncUnavailable | None = None
    for attempt, delay in enumerate(FORGET_RETRY_DELAYS_S):
        await trio.sleep(delay)
        try:
            if attempt == 0:  # the usual case: no spare descriptors closed and reopened per exit
                await _delete_once(runtime, id)
            else:
                with _spare_fds().released():
                    await _delete_once(runtime, id)
            return
        except RuncUnavailable as exc:
            failure = exc
    assert failure is not None
    log.error("container %s: runc delete could not be run (%s); it stays in runc's root", id, failure.message)


async def _delete_once(runtime: ContainerRuntime, id: str) -> None:
    """``runc delete``, then ``--force`` if runc refused; raises only RuncUnavailable."""
    try:
        await runtime.delete(id)
    except RuncUnavailable:
        raise
    except RuncError as exc:
        if "does not exist" in exc.message:
            return  # runc removed it already, as a checkpoint with --exit does
        log.warning("container %s: runc delete failed (%s); forcing", id, exc.message)
        try:
            await runtime.delete(id, force=True)
        except RuncUnavailable:
            raise
        except RuncError as exc2:
            log.error("container %s: runc delete --force failed: %s", id, exc2.message)


#: The waits between tries to undo a failed start while the server is out of descriptors: runc
#: itself cannot be run then, and ``rmtree`` silently leaves what it cannot open. ~4 s in all.
FORGET_RETRY_DELAYS_S = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


#: Descriptors kept free for ``runc delete`` in the undo of a start (see ``SpareFds``).
SPARE_FDS = 8
_spare: SpareFds | None = None


def _spare_fds() -> SpareFds:
    """Made at the first start (refilled after each undo): importing this module opens nothing."""
    global _spare
    if _spare is None:
        _spare = SpareFds(SPARE_FDS)
    return _spare


async def _forget_failed_start(id: str, paths: ContainerPaths, runtime: ContainerRuntime | None) -> None:
    """A failed start leaves no trace: not in runc's root (None: runc was never called), not in
    the state directory.

    At the fd limit the undo itself may fail (runc cannot be spawned): the start's own
    descriptors are closed by then, and others free up as containers exit, so it is tried again
    for a while. If it still cannot run, the start's intent stays, and the next server's recovery
    deletes what runc made (see ``state.recovery``); the error is logged, never raised over the
    start's own.
    """
    error = "?"
    for delay in FORGET_RETRY_DELAYS_S:
        await trio.sleep(delay)
        try:
            if runtime is not None:
                with _spare_fds().released():
                    await runtime.delete(id, force=True)
        except RuncUnavailable as exc:
            error = exc.message  # runc could not be started: nothing was deleted yet
            continue
        except RuncError:
            pass  # runc already cleaned up, which is the usual case
        except OSError as exc:
            if not is_fd_limit_error(exc):
                raise
            error = describe_os_error(exc)
            continue
        paths.remove()
        paths.remove_logs()
        if not paths.directory.exists():
            return
        error = f"{paths.directory} could not be removed"
    log.error(
        "container %s: the failed start could not be undone (%s); its intent is left for recovery",
        id,
        error,
    )
