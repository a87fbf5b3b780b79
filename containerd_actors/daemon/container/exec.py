"""Exec'ing a process into a running container: ``runc exec -d`` over pipes or a pty.

The process is then owned like the init (see ``process``): its output is drained into logs of its
own, its stdin has a port, and its exit goes through the actor's mailbox. Its record lets a
restarted daemon adopt it again.

Until that record is written, the exec's intent stands for it: written before ``runc exec``, with
the process spec and (where runc will write it) the pid file beside it, and the pipe ends already
in the reaper's keeping under a key of the exec's own. A server killed in between leaves all of
it for the next one, which adopts the process with its pipes (see ``state.reconcile``).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import attrs
import trio

from containerd_actors.daemon.container.console import ConsoleSocket
from containerd_actors.daemon.container.deps import ContainerRuntime
from containerd_actors.daemon.container.process import Launched, pidfd_if_alive, reaper_key
from containerd_actors.daemon.container.stdio import PIPE_BYTES, ContainerPipes, ProcessOutput
from containerd_actors.daemon.mailbox import CommandError
from containerd_actors.daemon.state.layout import (
    ContainerPaths,
    Intent,
    IntentOp,
    complete_intent,
    write_json_atomically,
)
from containerd_actors.daemon.state.space import space_of
from containerd_actors.host.fds import close_quietly, describe_os_error
from containerd_actors.host.procfs import process_start_time
from containerd_actors.host.reaping import ExitWatcher
from containerd_actors.protocol import ErrorCode, ProcessInfo, converter
from containerd_actors.runc.driver import RuncError, RuncTimeout


@attrs.frozen
class ExecStarted:
    """What ``runc exec`` left us: the pid (pinned by a pidfd) and the parent's stdio ends.

    Its intent and files stay until ``complete_exec``, once the process's record is written.
    """

    pid: int
    pidfd: int
    stdin_fd: int
    out_fds: tuple[int, int]
    number: int = 0
    #: The reaper's key for the pipe ends while the pid was unknown (None: nothing kept under one).
    pending_key: str | None = None


def pending_exec_key(id: str, number: int) -> str:
    """The reaper's key for an exec's pipe ends before its pid is known (``/`` never occurs in an id)."""
    return f"{id}/exec-{number}"


async def run_exec(
    runtime: ContainerRuntime,
    id: str,
    paths: ContainerPaths,
    number: int,
    spec: dict[str, Any],
    *,
    bundle: str = "",
    request_id: str | None = None,
    exit_watcher: ExitWatcher | None = None,
) -> ExecStarted:
    """``runc exec -d`` the process ``spec`` describes; raises CommandError with runc's reason.

    ``exit_watcher`` is handed the pipe ends before runc runs (a terminal's master exists only
    after): then a server killed during the exec leaves the process with its stdio.
    """
    files = paths.exec_files(number)
    process_file, pid_file, log_file = files
    terminal = bool(spec.get("terminal"))
    pending_key = pending_exec_key(id, number) if exit_watcher is not None and not terminal else None
    intent = Intent(IntentOp.EXEC, id, bundle, request_id, number=number, kept_key=pending_key)
    intent_path = None
    space_of(paths.directory).require_room(f"exec into container {id!r}")
    try:
        write_json_atomically(process_file, spec)
        intent_path = intent.write(paths)
        if terminal:
            started = await _exec_with_terminal(runtime, id, process_file, pid_file, log_file)
        else:
            started = await _exec_with_pipes(
                runtime, id, process_file, pid_file, log_file, exit_watcher, pending_key
            )
        return attrs.evolve(started, number=number, pending_key=pending_key)
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await _forget_exec(files, intent_path, exit_watcher, pending_key)
        if isinstance(exc, RuncTimeout):
            raise CommandError(ErrorCode.RUNTIME_FAILED, exc.message) from None
        if isinstance(exc, RuncError):
            raise CommandError(ErrorCode.RUNTIME_FAILED, f"runc exec failed: {exc.message}") from None
        if isinstance(exc, OSError):
            raise CommandError(ErrorCode.RUNTIME_FAILED, f"cannot exec: {describe_os_error(exc)}") from None
        raise


async def complete_exec(started: ExecStarted, paths: ContainerPaths, exit_watcher: ExitWatcher) -> None:
    """The process is recorded and its pipe ends kept under its pid: the exec's intent is done."""
    await _forget_exec(
        paths.exec_files(started.number),
        paths.intent(IntentOp.EXEC, started.number),
        exit_watcher,
        started.pending_key,
    )


async def _forget_exec(
    files: tuple[Path, Path, Path],
    intent: Path | None,
    exit_watcher: ExitWatcher | None,
    pending_key: str | None,
) -> None:
    if exit_watcher is not None and pending_key is not None:
        await exit_watcher.drop(pending_key)
    for path in files:
        path.unlink(missing_ok=True)
    if intent is not None:
        complete_intent(intent)


def record_exec(id: str, paths: ContainerPaths, info: ProcessInfo, started: ExecStarted) -> Launched:
    """Open the process's logs and write its record; the caller has removed a recycled pid's old logs.

    So neither log nor a rotation record exists: each file is made with its first byte (``new``),
    as an init's are (most exec'd processes write to one stream or none; four system calls and
    one descriptor fewer per log)."""
    stdout_path, stderr_path = paths.exec_logs(info.pid)
    output: ProcessOutput | None = None
    try:
        # In the try: a log opened here could fail with EMFILE at the fd limit, like the record's
        # write. (A ``new`` log opens its file with its first byte, where EMFILE drops and says so.)
        output = ProcessOutput(info.pid, stdout_path, stderr_path, terminal=info.terminal, new=True)
        write_json_atomically(
            paths.exec_record(info.pid),
            {"process": converter.unstructure(info), "pid_start_time": process_start_time(info.pid)},
        )
    except OSError as exc:
        # A process without a record would be lost to a restarted daemon: it does not stay.
        if output is not None:
            output.close_logs()
        _abandon(started)
        paths.exec_record(info.pid).unlink(missing_ok=True)
        for log_path in (stdout_path, stderr_path):
            log_path.unlink(missing_ok=True)
        raise CommandError(
            ErrorCode.RUNTIME_FAILED, f"cannot exec: {describe_os_error(exc)}; the process was killed"
        ) from None
    return Launched(
        info,
        reaper_key(id, info.pid),
        started.pidfd,
        output,
        started.stdin_fd,
        started.out_fds,
        started_here=True,
    )


async def keep_exec_ends(
    paths: ContainerPaths, launched: Launched, started: ExecStarted, exit_watcher: ExitWatcher
) -> None:
    """Hand the recorded process's ends to the exit watcher; out of descriptors (the copies the
    supervisor keeps), the exec is undone like one whose record cannot be written."""
    try:
        await exit_watcher.keep(launched.key, launched.kept_fds())
    except OSError as exc:
        with trio.CancelScope(shield=True):
            await exit_watcher.drop(launched.key)
            launched.output.close_logs()
            _abandon(started)
            paths.exec_record(started.pid).unlink(missing_ok=True)
            for log_path in paths.exec_logs(started.pid):
                log_path.unlink(missing_ok=True)
            await complete_exec(started, paths, exit_watcher)
        raise CommandError(
            ErrorCode.RUNTIME_FAILED, f"cannot exec: {describe_os_error(exc)}; the process was killed"
        ) from None


def _abandon(started: ExecStarted) -> None:
    """Kill a just-exec'd process (through its pidfd, so never a stranger) and close its ends."""
    if started.pidfd >= 0:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(started.pidfd, signal.SIGKILL)
    close_quietly(started.pidfd, started.stdin_fd, *started.out_fds)


async def _exec_with_pipes(
    runtime: ContainerRuntime,
    id: str,
    process_file: Path,
    pid_file: Path,
    log_file: Path,
    exit_watcher: ExitWatcher | None,
    pending_key: str | None,
) -> ExecStarted:
    pipes = ContainerPipes.create()
    pipes.enlarge_buffers(PIPE_BYTES)
    try:
        if exit_watcher is not None and pending_key is not None:
            await exit_watcher.keep(pending_key, [pipes.stdin_write, *pipes.output_ends()])
        pid = await runtime.exec_detached(id, process_file, pid_file, log_file, pipes.child_stdio())
    except BaseException:
        pipes.close_all()
        raise
    pipes.close_child_ends()
    try:
        pidfd = pidfd_if_alive(pid)
    except OSError:
        # EMFILE: without a pidfd the process could not be watched; it must not run unowned.
        _kill_unowned(pid)
        close_quietly(pipes.stdin_write, *pipes.output_ends())
        raise
    return ExecStarted(pid, pidfd, pipes.stdin_write, pipes.output_ends())


def _kill_unowned(pid: int) -> None:
    """SIGKILL a process ``runc exec`` just started, which nothing else yet knows (it is runc's
    child, reparented to the subreaper: its pid cannot be reused before that reaps it)."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


async def _exec_with_terminal(
    runtime: ContainerRuntime, id: str, process_file: Path, pid_file: Path, log_file: Path
) -> ExecStarted:
    """runc creates the pty and sends its master over the console socket (see ``console``)."""
    with ConsoleSocket() as console:
        pid = await runtime.exec_detached(
            id, process_file, pid_file, log_file, console.runc_stdio, console_socket=console.path
        )
        pidfd = -1
        master = -1
        try:
            pidfd = pidfd_if_alive(pid)
            master = await console.take_master()
            copy = os.dup(master)
        except OSError:
            # Nobody could ever read or write this process's terminal (or, out of descriptors,
            # watch it): do not leave it running.
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            close_quietly(*(fd for fd in (pidfd, master) if fd >= 0))
            raise
    return ExecStarted(pid, pidfd, master, (copy, -1))
