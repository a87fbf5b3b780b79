"""A container in runc: its start (``runc run -d``, or ``runc restore -d`` from a checkpoint)
and its deletion once the init has exited. Its stdio is three pipes, or a pty whose master runc
sends over a console socket when the init has a terminal (see ``console``).

A start either leaves a running init with its record written, or no trace at all: nothing in
runc's root, nothing in the state directory, and a ``CommandError`` that says why.
"""

from __future__ import annotations

import logging
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
from containerd_actors.daemon.container.deps import ContainerRuntime
from containerd_actors.daemon.container.process import Launched, pidfd_if_alive, reaper_key
from containerd_actors.daemon.container.stdio import ProcessOutput
from containerd_actors.daemon.mailbox import CommandError
from containerd_actors.daemon.state.layout import ContainerPaths, write_json_atomically
from containerd_actors.daemon.state.space import space_of
from containerd_actors.host.procfs import process_start_time
from containerd_actors.protocol import ErrorCode
from containerd_actors.runc.bundle import read_bundle_config, validate_bundle, write_with_terminal
from containerd_actors.runc.driver import RuncError, RuncTimeout
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
    limiter: trio.CapacityLimiter,
    terminal: bool | None = None,
) -> StartedInit:
    """Start (or restore) the init under ``limiter``; raises CommandError, leaving no trace.

    ``terminal`` overrides the bundle's ``process.terminal`` (None: the checkpoint's, else the
    bundle's). With a terminal, runc sends the pty master over a console socket and the init's
    output is its one stream.
    """
    try:
        bundle_path = validate_bundle(bundle)
        config = read_bundle_config(bundle_path)
        info = init_process_info(0, config)
        process_spec = dict(config.get("process") or {})
    except (ValueError, TypeError, AttributeError) as exc:
        raise CommandError(ErrorCode.INVALID_BUNDLE, f"bad bundle config: {exc}") from None
    restore_from = read_checkpoint(bundle_path, checkpoint) if checkpoint else None
    space_of(paths.directory.parent).require_room(f"start container {id!r}")  # before runc fails obscurely
    if terminal is None and restore_from is not None:
        terminal = checkpoint_terminal(bundle_path, restore_from.name)
    if terminal is None:
        terminal = info.terminal
    try:
        paths.create()
    except FileExistsError:
        raise CommandError(
            ErrorCode.ALREADY_EXISTS,
            f"container {id!r} already has state in {paths.directory} (left by an earlier daemon?)",
        ) from None
    stdio = InitStdio(terminal)
    # Opened before the reply, so a client that saw the pid finds the log files.
    output = ProcessOutput(0, paths.stdout_log, paths.stderr_log, terminal=terminal)
    try:
        runc_bundle = bundle_path
        if terminal != info.terminal:
            runc_bundle = write_with_terminal(bundle_path, config, terminal, paths.runc_bundle)
        async with limiter:
            if restore_from is None:
                pid = await runtime.run_detached(
                    id,
                    runc_bundle,
                    paths.pid_file,
                    paths.runc_log,
                    stdio.runc_stdio,
                    console_socket=stdio.console_socket,
                )
            else:
                pid = await runtime.restore_detached(
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
        stdin_fd, out_fds = await stdio.parent_ends()
        # In the try: a record that cannot be written (a full state dir) undoes the start.
        write_json_atomically(
            paths.record,
            {
                "id": id,
                "bundle": str(bundle_path),
                "pid": pid,
                "pid_start_time": process_start_time(pid),
                "created": time.time(),
                "terminal": terminal,
            },
        )
        pidfd = pidfd_if_alive(pid)
    except BaseException as exc:
        stdio.close_all()
        output.close_logs()
        with trio.CancelScope(shield=True):
            await _forget_failed_start(id, paths, runtime)
        if isinstance(exc, RuncTimeout):
            raise CommandError(ErrorCode.RUNTIME_FAILED, exc.message) from None
        if isinstance(exc, RuncError):
            raise CommandError(
                ErrorCode.RUNTIME_FAILED, f"runc {exc.command} failed: {exc.message}"
            ) from None
        if isinstance(exc, OSError):
            raise CommandError(ErrorCode.RUNTIME_FAILED, f"cannot start container: {exc}") from None
        raise
    output.pid = pid
    launched = Launched(
        attrs.evolve(info, pid=pid, terminal=terminal),
        reaper_key(id),
        pidfd,
        output,
        stdin_fd,
        out_fds,
    )
    return StartedInit(launched, bundle_path, process_spec)


async def delete_from_runtime(runtime: ContainerRuntime, id: str) -> None:
    """After the init's exit: remove the container from runc's root, by force if it must be."""
    try:
        await runtime.delete(id)
    except RuncError as exc:
        if "does not exist" in exc.message:
            return  # runc removed it already, as a checkpoint with --exit does
        log.warning("container %s: runc delete failed (%s); forcing", id, exc.message)
        try:
            await runtime.delete(id, force=True)
        except RuncError as exc2:
            log.error("container %s: runc delete --force failed: %s", id, exc2.message)


async def _forget_failed_start(id: str, paths: ContainerPaths, runtime: ContainerRuntime) -> None:
    """A failed start leaves no trace: not in runc's root, not in the state directory."""
    try:
        await runtime.delete(id, force=True)
    except RuncError:
        pass  # runc already cleaned up, which is the usual case
    paths.remove()
    paths.remove_logs()
