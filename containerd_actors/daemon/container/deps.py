"""What a container actor is given: the runtime it drives, and the services and mailboxes it uses.

``ContainerRuntime`` is the part of ``runc.driver.Runc`` the actor needs. Naming it as a protocol
lets tests drive real container actors with a stand-in that starts plain processes, without runc.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import attrs
import trio

from containerd_actors.daemon.container.messages import ReportsMailbox
from containerd_actors.daemon.events.messages import EventsMailbox
from containerd_actors.daemon.faults import NO_FAULTS, FaultHook
from containerd_actors.daemon.metrics.messages import MetricsMailbox
from containerd_actors.host.reaping import ExitWatcher
from containerd_actors.runc.driver import CriuOptions, Stdio


class ContainerRuntime(Protocol):
    """Starts, execs into, freezes, checkpoints and deletes containers by id (``runc.driver.Runc``)."""

    async def run_detached(
        self,
        id: str,
        bundle: Path,
        pid_file: Path,
        log_file: Path,
        stdio: Stdio,
        console_socket: Path | None = None,
    ) -> int:
        """Start the bundle's init with ``stdio`` (or, with a terminal, send its pty master over
        ``console_socket``); return its pid once it runs."""
        ...

    async def restore_detached(
        self,
        id: str,
        bundle: Path,
        image_path: Path,
        work_path: Path,
        pid_file: Path,
        log_file: Path,
        stdio: Stdio,
        options: CriuOptions,
        console_socket: Path | None = None,
    ) -> int:
        """Restore the init from CRIU images with ``stdio`` (or a new pty, sent over
        ``console_socket``); return its pid once it runs."""
        ...

    async def exec_detached(
        self,
        id: str,
        process_file: Path,
        pid_file: Path,
        log_file: Path,
        stdio: Stdio,
        console_socket: Path | None = None,
    ) -> int:
        """Start the process ``process_file`` specifies; with a terminal, send its pty master over
        ``console_socket``. Return its pid once it runs."""
        ...

    async def checkpoint(
        self, id: str, image_path: Path, work_path: Path, options: CriuOptions, leave_running: bool
    ) -> None: ...

    async def pause(self, id: str) -> None: ...

    async def resume(self, id: str) -> None: ...

    async def delete(self, id: str, force: bool = False) -> None: ...


@attrs.frozen
class ActorDeps:
    """What every container actor is handed by the supervisor: shared services and the mailboxes it tells."""

    runtime: ContainerRuntime
    start_limiter: trio.CapacityLimiter
    exit_watcher: ExitWatcher
    events: EventsMailbox
    #: Where the actor reports its snapshots and its end (the supervisor's mailbox).
    supervisor: ReportsMailbox
    metrics: MetricsMailbox
    oom_notify: bool
    #: Tests' fault injection (``daemon.faults``); empty in a daemon that was not told of any.
    faults: FaultHook = NO_FAULTS
