"""The API server process: the actor tree under one trio.run.

The tree: the metrics actor; the events actor (which tells metrics); the supervisor, which starts
one container actor per container (each tells events, metrics and the supervisor); and the API
server, which asks them. A restarted server first reconciles the state directory with runc's root
(``state.reconcile``), then hands every container found, with the pipe ends the reaper kept, to
the supervisor to adopt.

The events and metrics actors are supervised one for one (``supervision.supervise``): a crash
restarts the actor's loop on its same mailbox and state, is logged, published as an
``actor-restart`` event and counted; past the restart limit the server exits with
``EXIT_RESTART_LIMIT`` (the supervisor does the same for container actors) and the reaper
starts a new one. Tests' fault injection (``faults``) is read from the environment here, once.

Set-up that must happen before trio starts lives here: becoming the child subreaper when there
is no reaper (so that container inits are re-parented to us), raising the fd limit (three pipe
ends per container), and preparing the state and socket directories.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
from pathlib import Path

# Before trio, which imports attrs: attrs' own methods then come from the cache (``attrs_code``),
# not compiled afresh with tokenize and platform imported for them.
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
import pynng
import trio

from containerd_actors import __version__
from containerd_actors.daemon.api import ApiServer
from containerd_actors.daemon.config import DaemonConfig
from containerd_actors.daemon.container.adopt import plan_adoptions
from containerd_actors.daemon.events.actor import EventsActor
from containerd_actors.daemon.events.journal import EventJournal
from containerd_actors.daemon.events.messages import EventDraft, EventsMailbox
from containerd_actors.daemon.faults import NO_FAULTS, FaultHook
from containerd_actors.daemon.memory_debug import snapshot_directory, write_snapshots_on_signal
from containerd_actors.daemon.metrics.actor import MetricsActor
from containerd_actors.daemon.metrics.http import serve_prometheus
from containerd_actors.daemon.metrics.messages import AddToCounter, MetricsMailbox, tell
from containerd_actors.daemon.metrics.registry import ACTOR_RESTARTS
from containerd_actors.daemon.profiling import profiled
from containerd_actors.daemon.state.exit_notes import publish_noted_exits
from containerd_actors.daemon.state.layout import prepare_state_dir
from containerd_actors.daemon.state.reconcile import reconcile, release_unclaimed_exits
from containerd_actors.daemon.state.space import state_dir_space
from containerd_actors.daemon.supervision import (
    EXIT_RESTART_LIMIT,
    OnRestart,
    RestartLimitExceeded,
    crash_summary,
    supervise,
)
from containerd_actors.daemon.supervisor.actor import Supervisor
from containerd_actors.daemon.tls_reload import reload_tls_when_asked
from containerd_actors.host.cgroup_paths import remove_empty_cgroup
from containerd_actors.host.fd_limit import raise_soft_limit
from containerd_actors.host.reaping import ExitWatcher, LocalSubreaper, become_child_subreaper
from containerd_actors.host.sd_notify import encode, socket_address
from containerd_actors.protocol import EventType, warm_up
from containerd_actors.reaper.link import ReaperLink
from containerd_actors.runc.driver import Runc

log = logging.getLogger("containerd_actors")


def raise_fd_limit() -> None:
    """Thousands of containers need more descriptors than the usual soft limit of 1024; runc and
    the containers still get the original one (see ``host.fd_limit`` for both whys)."""
    soft, hard = raise_soft_limit()
    if soft < hard:
        log.debug("RLIMIT_NOFILE raised from %d to %d (runc is spawned with %d)", soft, hard, soft)


def prepare_socket_dir(address: str) -> None:
    """IPC sockets get a directory of mode 0700: pynng cannot set the socket file's own permissions."""
    scheme, _, path = address.partition("://")
    if scheme != "ipc":
        return
    directory = Path(path).parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)
    elif directory.stat().st_mode & 0o077:
        log.warning("socket directory %s is accessible to other users; prefer a 0700 directory", directory)


def take_notify_socket() -> str | None:
    """Remove NOTIFY_SOCKET from the environment runc inherits, and return it.

    runc treats NOTIFY_SOCKET as the container's: `runc run -d` would then wait for the
    container itself to send READY=1, which a plain process never does, and every start would
    hang until --start-timeout. Only this process notifies.
    """
    return os.environ.pop("NOTIFY_SOCKET", None)


def notify_ready(target: str | None) -> None:
    """sd_notify READY=1 when this server is the service's main process (``--no-reaper``);
    under a reaper, the reaper says it (and this process never sees ``$NOTIFY_SOCKET``)."""
    address = socket_address(target) if target else None
    if address is None:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as notify:
        try:
            notify.sendto(encode({"READY": "1", "STATUS": "serving (no reaper)"}), address)
        except OSError as exc:
            log.warning("cannot notify readiness on %s: %s", target, exc)


def announce_restarts(events: EventsMailbox, metrics: MetricsMailbox) -> OnRestart:
    """What a restart of the events or metrics actor tells: an ``actor-restart`` event (with an
    empty id: no container's) and one more ``actor-restarts``."""

    def announce(name: str, error: BaseException, restarts: int) -> None:
        crash = crash_summary(error)
        reason = f"the {name} actor crashed ({crash}) and was restarted ({restarts} within a minute)"
        try:
            events.send_nowait(EventDraft(EventType.ACTOR_RESTART, "", 0, None, reason))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            log.error("the actor-restart event of the %s actor could not be told to the events actor", name)
        tell(metrics, AddToCounter(ACTOR_RESTARTS))

    return announce


def events_actor(
    config: DaemonConfig, journal: EventJournal, metrics: MetricsMailbox, faults: FaultHook = NO_FAULTS
) -> EventsActor:
    """The events actor on every stream address of ``config`` (local, batch, and the remote ones);
    the benchmarks build theirs here too, so that they measure the daemon's own wiring."""
    return EventsActor(
        config.events_address,
        journal,
        metrics,
        config.events_batch_address,
        faults=faults,
        tls=config.tls,
        remote_addresses=tuple(streams.events for streams in config.remote_streams),
        remote_batch_addresses=tuple(streams.batch for streams in config.remote_streams),
    )


async def run_daemon(config: DaemonConfig) -> None:
    notify_socket = take_notify_socket()
    snapshots = snapshot_directory(os.environ)  # a debugging hook, off unless asked for
    warm_up()
    faults = FaultHook.from_environment(os.environ)
    runc = Runc(
        config.runc_root,
        binary=config.runtime,
        timeout=config.start_timeout,
        exe_link=config.runc_exe_link,
    )
    metrics = MetricsActor(config.metrics_interval, faults=faults)
    # Before any actor runs: the journal fixes where seq continues after a restart.
    journal = EventJournal(config.events_dir, retention=config.events_retention)
    events = events_actor(config, journal, metrics.mailbox, faults)
    on_restart = announce_restarts(events.mailbox, metrics.mailbox)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as stop_signals:
        async with trio.open_nursery() as nursery:
            exit_watcher: ExitWatcher
            kept: dict[str, list[int]] = {}
            if config.reaper_fd is not None:
                link = ReaperLink(socket.socket(fileno=config.reaper_fd))
                await nursery.start(link.run)
                exit_watcher, kept = link, link.kept
            else:
                exit_watcher = LocalSubreaper()
            await nursery.start(supervise, "metrics", metrics.run, on_restart)
            nursery.start_soon(state_dir_space(config.state_dir).watch)  # tells waiters of room
            await nursery.start(supervise, "events", events.run, on_restart)
            # Before anything serves: runc's root and the records agree, and nothing runc runs is unlisted.
            recovered = await reconcile(
                config.state_dir,
                config.state_dir / "quarantine",
                runc,
                exit_watcher,
                kept,
                config.start_timeout,
            )
            # Exits a killed server had not journalled yet, before the reaper forgets their statuses.
            await publish_noted_exits(config.state_dir, events.mailbox)
            if isinstance(exit_watcher, ReaperLink):
                await release_unclaimed_exits(
                    exit_watcher, exit_watcher.recorded_exits(), config.state_dir, recovered
                )
            adoptions = await plan_adoptions(
                [r.record for r in recovered], kept, exit_watcher, {r.record.id: r.status for r in recovered}
            )
            supervisor = Supervisor(
                config.state_dir,
                config.concurrency,
                runc,
                exit_watcher,
                events.mailbox,
                metrics.mailbox,
                oom_notify=config.oom_notify,
                faults=faults,
                migration_tls=config.tls,
                migration_stream_min_mib=config.migration_stream_min_mib,
                runc_root=config.runc_root,
            )
            await nursery.start(supervisor.run, adoptions)
            server = ApiServer(
                config,
                supervisor.mailbox,
                events.mailbox,
                metrics.mailbox,
                events.status,
                process_routes=supervisor.process_routes,
            )
            await nursery.start(server.run)
            if config.tls is not None:
                await nursery.start(
                    reload_tls_when_asked,
                    config.tls,
                    config.tls_reload_interval,
                    server.reload_tls,
                    events.mailbox,
                )
            if config.metrics_address:
                await nursery.start(serve_prometheus, config.metrics_address, metrics.mailbox)
            if snapshots is not None:
                await nursery.start(write_snapshots_on_signal, snapshots)
            log.info(
                "containerd-actors %s ready: id=%s state-dir=%s concurrency=%d next event seq=%d",
                __version__,
                config.id,
                config.state_dir,
                config.concurrency,
                journal.last_seq + 1,
            )
            try:
                (config.state_dir / "server.pid").write_text(f"{os.getpid()}\n")
            except OSError as exc:  # a full state dir must not stop a restarted server
                log.error("cannot write %s: %s", config.state_dir / "server.pid", exc)
            tune_garbage_collector()
            if isinstance(exit_watcher, ReaperLink):
                await exit_watcher.announce_serving()
            notify_ready(notify_socket)
            async for signum in stop_signals:
                log.info("received %s: stopping; containers keep running", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


#: Young objects between collections. Each start leaves a few hundred long-lived objects (actor,
#: tasks, records), and with Python's default of 700 the collector ran 280 times per 500 starts,
#: gen 1 and 2 passes included: 0.4-0.56 s, about 1 ms of CPU per start. At 20,000: ~0.25 s.
GC_YOUNG_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Collect less often, and never rescan what start-up built (modules, converters, actors).

    ``gc.freeze`` moves every object alive now out of the collector's generations, so the
    periodic full collections walk only what containers and requests added since.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def serve(config: DaemonConfig) -> None:
    """Run the API server in this process until SIGTERM/SIGINT."""
    raise_fd_limit()
    if config.reaper_fd is None:
        become_child_subreaper()
    prepare_state_dir(config.state_dir)
    prepare_socket_dir(config.listen)
    addresses = [config.listen, config.events_address]
    if config.events_batch_address is not None:
        addresses.append(config.events_batch_address)
    remote = [*config.remote_listen]
    for streams in config.remote_streams:
        remote += [streams.events, streams.batch]
    for address in addresses[1:]:
        prepare_socket_dir(address)
    try:
        with profiled(os.environ):  # a debugging hook, off unless asked for
            trio.run(run_daemon, config)
        # The cgroup migrated-in containers were restored under, if none runs there any more.
        remove_empty_cgroup("/" + config.migrated_cgroup_parent)
    except* RestartLimitExceeded:
        # Logged where it happened, with the traceback; the reaper starts a fresh server.
        log.error("exiting with status %d: an actor crashed past its restart limit", EXIT_RESTART_LIMIT)
        raise SystemExit(EXIT_RESTART_LIMIT) from None
    except* pynng.AddressInUse:
        listened = addresses + [address for address in remote if address is not None]
        log.error("another process is already listening on %s or %s", ", ".join(listened[:-1]), listened[-1])
        raise SystemExit(1) from None
