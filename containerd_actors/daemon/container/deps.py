"""What a container actor is given: the runtime it drives, and the services and mailboxes it uses.

``ContainerRuntime`` is the part of ``runc.driver.Runc`` the actor needs. Naming it as a protocol
lets tests drive real container actors with a stand-in that starts plain processes, without runc.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import attrs

from containerd_actors.daemon.container.messages import ReportsMailbox
from containerd_actors.daemon.container.routes import ProcessRoutes
from containerd_actors.daemon.container.slots import StartSlots
from containerd_actors.daemon.events.messages import EventsMailbox
from containerd_actors.daemon.faults import NO_FAULTS, FaultHook
from containerd_actors.daemon.metrics.messages import MetricsMailbox
from containerd_actors.host.reaping import ExitWatcher
from containerd_actors.runc.driver import Runc
from containerd_actors.transport.tls import TlsFiles


class ContainerRuntime(Protocol):
    """Starts, execs into, freezes, checkpoints and deletes containers by id (``runc.driver.Runc``).

    Each member is Runc's own method, so its signature and docstring are written once, in the driver.
    """

    run_detached = Runc.run_detached
    restore_detached = Runc.restore_detached
    exec_detached = Runc.exec_detached
    checkpoint = Runc.checkpoint
    pause = Runc.pause
    resume = Runc.resume
    delete = Runc.delete


@attrs.frozen
class ActorDeps:
    """What every container actor is handed by the supervisor: shared services and the mailboxes it tells."""

    runtime: ContainerRuntime
    #: The --concurrency limit on runc starts (its runners are served by the supervisor).
    start_slots: StartSlots
    exit_watcher: ExitWatcher
    events: EventsMailbox
    #: Where the actor reports its snapshots and its end (the supervisor's mailbox).
    supervisor: ReportsMailbox
    metrics: MetricsMailbox
    oom_notify: bool
    #: Tests' fault injection (``daemon.faults``); empty in a daemon that was not told of any.
    faults: FaultHook = NO_FAULTS
    #: The certificate a migration's source dials the destination with (the daemon's own); None
    #: without TLS listeners, and then a migration is refused.
    migration_tls: TlsFiles | None = None
    #: ``--migration-stream-min``: None for ``migration.source.STREAM_MIN_BYTES``.
    migration_stream_min_mib: int | None = None
    #: Where the actor's open stdin ports are listed for the API server (``container.routes``);
    #: None: every WriteInput comes through the supervisor and the actor.
    process_routes: ProcessRoutes | None = None
    #: runc's ``--root``: its state names a container's cgroups after the init has exited.
    runc_root: Path | None = None
