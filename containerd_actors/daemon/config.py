"""The daemon's settings, parsed once from its flags and then passed down read-only."""

from __future__ import annotations

from pathlib import Path

import attrs

# Parsed from the flags, which the reaper parses too without attrs (see ``flags``); named here too.
from containerd_actors.daemon.flags import DEFAULT_RETENTION as DEFAULT_RETENTION
from containerd_actors.daemon.flags import RemoteStreams as RemoteStreams
from containerd_actors.transport.tls import TlsFiles


@attrs.frozen
class DaemonConfig:
    id: str
    debug: bool
    state_dir: Path
    concurrency: int
    metrics_interval: float
    listen: str
    events_address: str
    oom_notify: bool
    metrics_address: str | None = None
    runtime: str = "runc"
    start_timeout: float = 15.0
    #: Set when this process is the API server under a reaper: the fd of the reaper socket.
    reaper_fd: int | None = None
    no_reaper: bool = False
    events_retention: int = DEFAULT_RETENTION
    #: The batch stream's Pub0 address (``EventBatch`` messages); None publishes no batch stream.
    events_batch_address: str | None = None
    #: API listeners for other hosts: tls+tcp:// (with ``tls``), or tcp:// with --insecure-tcp.
    remote_listen: tuple[str, ...] = ()
    tls: TlsFiles | None = None
    #: Certificate CNs that may only read (``api.READ_ONLY_REQUESTS``).
    read_only_clients: frozenset[str] = frozenset()
    #: Seconds between checks for renewed TLS files; 0 checks only on SIGHUP.
    tls_reload_interval: float = 0.0
    #: The event streams beside the first remote listener (the same certificates); None without one.
    remote_events_address: str | None = None
    remote_events_batch_address: str | None = None
    #: The streams beside every remote listener (the first one's are the two above); a Ping
    #: announces those beside the listener it came on.
    remote_streams: tuple[RemoteStreams, ...] = ()
    #: The cgroup a container that arrives by migration is restored under (``<parent>/<id>``):
    #: its source may be a daemon on this same host whose frozen copy still holds its own path.
    #: Empty: ``containerd-actors-<id>``.
    cgroup_parent: str = ""
    #: A migration arriving here whose source sends nothing for this long is dropped.
    migration_idle_timeout: float = 120.0
    #: A container migrating away streams its dump's pages from this much memory (MiB) up; None:
    #: ``migration.source.STREAM_MIN_BYTES``.
    migration_stream_min_mib: int | None = None

    @property
    def migrated_cgroup_parent(self) -> str:
        return self.cgroup_parent or f"containerd-actors-{self.id}"

    @property
    def runc_root(self) -> Path:
        """A runc --root of our own, so the daemon never sees or touches containers it did not create."""
        return self.state_dir / "runc"

    @property
    def runc_exe_link(self) -> Path:
        """The link, named like the runtime's binary, through which its sealed copy is executed
        (``runc.sealed_binary``): the processes are then named ``runc`` as usual."""
        return self.state_dir / "bin" / (Path(self.runtime).name or "runc")

    @property
    def containers_dir(self) -> Path:
        return self.state_dir / "containers"

    @property
    def events_dir(self) -> Path:
        """The event journal's segment files (see ``journal``)."""
        return self.state_dir / "events"
