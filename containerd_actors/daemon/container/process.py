"""The processes of a container (its init and the exec'd ones) as their actor holds them.

A process is first ``Launched``: runc has started it (or a previous daemon had, and it is being
adopted), and its pid, pidfd and stdio ends are known. The actor then owns it as a
``ContainerProcess``: a stdin port, drains into its logs (``drains``), and a watcher that tells the actor when
it has exited. Init and exec'd processes are owned the same way; only the message their exit
sends differs.
"""

from __future__ import annotations

import logging
import os
import signal

import attrs

from containerd_actors.daemon.container.drains import ProcessDrains
from containerd_actors.daemon.container.stdin import StdinPort
from containerd_actors.daemon.container.stdio import ProcessOutput
from containerd_actors.daemon.mailbox import CommandError
from containerd_actors.host.fds import close_quietly
from containerd_actors.host.reaping import ExitWatcher, open_pidfd
from containerd_actors.protocol import ErrorCode, ProcessInfo

_log = logging.getLogger(__name__)

#: After the init exits, the kernel has already killed the rest of its pid namespace, so pipe
#: EOF follows at once; this bound only guards against a writer outside the namespace.
DRAIN_GRACE_S = 2.0


@attrs.frozen
class Launched:
    """A running (or just exited) process whose actor does not own it yet."""

    info: ProcessInfo
    #: The reaper keeps this process's pipe ends under this key (see ``reaper_key``).
    key: str
    #: -1 when the process was gone before we could pin it.
    pidfd: int
    output: ProcessOutput
    #: The pipe's write end or the pty master; -1 when closed.
    stdin_fd: int
    #: The stdout and stderr read ends (a terminal has one output: stderr is -1).
    out_fds: tuple[int, int]
    #: This server's runc started it (not adopted): its parent is this server's subreaper (see
    #: ``ExitWatcher.wait_for_exit``).
    started_here: bool = False

    def kept_fds(self) -> list[int]:
        """The ends the reaper keeps, in the order ``adopt`` expects them back."""
        return [fd for fd in (self.stdin_fd, *self.out_fds) if fd >= 0]


@attrs.define(eq=False)
class ContainerProcess:
    """A process owned by its container actor; only the actor and the tasks it starts touch it."""

    info: ProcessInfo
    key: str
    pidfd: int
    output: ProcessOutput
    stdin: StdinPort
    out_fds: tuple[int, int]
    #: Its stdout and stderr being drained into its logs (``drains.drained``: both have ended).
    drains: ProcessDrains

    @property
    def pid(self) -> int:
        return self.info.pid

    def signal(self, number: int, container_id: str) -> None:
        """Through the pidfd, so a signal never reaches a stranger that got a reaped process's pid."""
        try:
            if self.pidfd < 0:
                raise ProcessLookupError
            signal.pidfd_send_signal(self.pidfd, number)
        except ProcessLookupError:
            raise CommandError(ErrorCode.NOT_FOUND, f"container {container_id!r} is not running") from None
        except OSError as exc:
            raise CommandError(ErrorCode.RUNTIME_FAILED, f"signal failed: {exc}") from None

    async def keep_only_outputs(self, exit_watcher: ExitWatcher) -> None:
        """A client closed this process's stdin: the reaper keeps only its output ends from now on.

        The output ends are duplicated in the same step that checks their drains are still
        running: a drain closes its end when the process exits, and after that the number may
        belong to another file.
        """
        logs = (self.output.stdout, self.output.stderr)
        outputs: list[int] = []
        try:
            for fd, output_log in zip(self.out_fds, logs, strict=True):
                if fd >= 0 and not output_log.finished:
                    outputs.append(os.dup(fd))
            await exit_watcher.drop(self.key)
            if outputs:
                await exit_watcher.keep(self.key, outputs)
        except OSError as exc:
            # Out of descriptors: the stdin end goes all the same (the process must see EOF);
            # its outputs are then the actor's alone, as with ``--no-reaper``.
            _log.warning("process %d: its output ends are not kept outside the actor: %s", self.pid, exc)
            await exit_watcher.drop(self.key)
        finally:
            close_quietly(*outputs)


def no_such_process(container_id: str, pid: int) -> CommandError:
    return CommandError(ErrorCode.NOT_FOUND, f"container {container_id!r} has no process with pid {pid}")


def reaper_key(container_id: str, pid: int | None = None) -> str:
    """The reaper's key for a process's pipe ends: the container id for the init, ``id/pid`` for
    an exec'd process (``/`` never occurs in an id)."""
    return container_id if pid is None else f"{container_id}/{pid}"


def pidfd_if_alive(pid: int) -> int:
    """-1 when the process is already gone (a reaper may reap a quick exit before we look)."""
    try:
        return open_pidfd(pid)
    except ProcessLookupError:
        return -1
