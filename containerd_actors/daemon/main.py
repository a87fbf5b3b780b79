"""`containerd-actors`: flags (the original containerd's), logging, and the choice of process.

This module stays light on purpose: the same command starts the reaper (a small long-lived
process that should not carry trio, nng and cattrs in its memory) and, as its child, the API
server, whose heavy imports live in ``wiring``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

import attrs

from containerd_actors import __version__
from containerd_actors.daemon.config import DEFAULT_RETENTION, DaemonConfig, RemoteStreams
from containerd_actors.daemon.state.lock import StateDirInUse, lock_state_dir
from containerd_actors.host.fds import close_quietly
from containerd_actors.host.sd_notify import Notifier, take_listen_fds
from containerd_actors.protocol.addresses import (
    DEFAULT_ADDRESS,
    DEFAULT_STATE_DIR,
    EVENTS_BATCH_SOCKET,
    EVENTS_SOCKET,
    address_beside,
    normalize_address,
)
from containerd_actors.protocol.durations import parse_duration
from containerd_actors.reaper.handover import HandoverError, take_handover
from containerd_actors.transport.tls import TlsFiles, TlsFilesError, is_plain_tcp, is_tls

log = logging.getLogger("containerd_actors")


def duration_arg(text: str) -> float:
    """argparse type for the duration flags: Go's spelling (``1m0s``, ``500ms``) or plain seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    seconds = parse_duration(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 1m0s, 30s, 500ms)")
    return seconds


def derived_address(base: str, socket_name: str, what: str, flag: str) -> str:
    """The address ``what`` beside ``base`` (see ``address_beside``), or exit naming the flag to pass."""
    address = address_beside(base, socket_name)
    if address is None:
        raise SystemExit(f"containerd-actors: cannot derive {what} from {base!r}; pass {flag}")
    return address


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="containerd-actors", description="High performance container daemon (runc, Trio actors)"
    )
    parser.add_argument(
        "--id", default=socket.gethostname(), help="unique containerd id to identify the instance"
    )
    parser.add_argument("--debug", action="store_true", help="enable debug output in the logs")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="runtime state directory")
    parser.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=10,
        help="set the concurrency level for tasks (parallel starts)",
    )
    parser.add_argument(
        "--metrics-interval",
        type=duration_arg,
        default=60.0,
        help="interval for flushing metrics to the log (default 1m0s)",
    )
    parser.add_argument(
        "-l",
        "--listen",
        type=normalize_address,
        action="append",
        default=None,
        help="address on which the API will listen; repeat it to add tls+tcp://HOST:PORT listeners "
        "(the local ipc socket stays; default " + DEFAULT_ADDRESS + ")",
    )
    parser.add_argument("--tls-cert", default=None, help="PEM certificate of this daemon (tls+tcp listeners)")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-ca", default=None, help="PEM CA that signs the clients' certificates (mutual TLS is required)"
    )
    parser.add_argument(
        "--read-only-client",
        action="append",
        default=[],
        metavar="CN",
        help="a TLS client certificate's common name that may only read (repeatable)",
    )
    parser.add_argument(
        "--tls-reload-interval",
        type=duration_arg,
        default=0.0,
        help="re-read the TLS files this often when they change (default: only on SIGHUP to the API server)",
    )
    parser.add_argument(
        "--insecure-tcp",
        action="store_true",
        help="allow plain tcp:// listeners: no encryption, no client identity, full rights for anyone",
    )
    parser.add_argument(
        "--events-address",
        type=normalize_address,
        default=None,
        help="address on which events are published (default: events.sock beside the listen socket)",
    )
    parser.add_argument(
        "--events-batch-address",
        type=normalize_address,
        default=None,
        help="address on which events are published in batches, for fast subscribers"
        " (default: events-batch.sock beside the events socket)",
    )
    parser.add_argument("--oom-notify", action="store_true", help="enable oom notifications for containers")
    parser.add_argument(
        "--metrics-address",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (default: off)",
    )
    parser.add_argument("--runtime", default="runc", help="runc binary to drive (default: runc from PATH)")
    parser.add_argument(
        "--start-timeout",
        type=duration_arg,
        default=15.0,
        help="kill a runc that has not started its container within this time (default 15s)",
    )
    parser.add_argument(
        "--no-reaper",
        action="store_true",
        help="run without the reaper parent (a daemon crash then loses exit statuses and stdio)",
    )
    # Internal: set by the reaper when it starts the API server, naming the fd of its socket.
    parser.add_argument("--reaper-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--events-retention",
        type=int,
        default=DEFAULT_RETENTION,
        metavar="N",
        help=f"keep at most N events in the journal for replay (default {DEFAULT_RETENTION:,})",
    )
    parser.add_argument(
        "--cgroup-parent",
        default="",
        metavar="PATH",
        help="cgroup under which containers that arrive by migration are restored"
        " (default: containerd-actors-<--id>, so two daemons on one host never claim the same path)",
    )
    parser.add_argument(
        "--migration-idle-timeout",
        type=duration_arg,
        default=120.0,
        metavar="DURATION",
        help="drop a migration arriving here whose source sends nothing for this long, the dump"
        " included (default 2m)",
    )
    parser.add_argument(
        "--migration-stream-min",
        type=int,
        default=None,
        metavar="MIB",
        help="stream a migrating container's memory pages to the destination while CRIU dumps it from"
        " this many MiB of memory up; smaller dumps go to disk and are sent after (default 128; 0: always)",
    )
    parser.add_argument("-v", "--version", action="version", version=f"containerd-actors {__version__}")
    return parser


def config_from_args(argv: list[str] | None = None) -> DaemonConfig:
    args = build_parser().parse_args(argv)
    if args.concurrency < 1:
        raise SystemExit("containerd-actors: --concurrency must be at least 1")
    if args.events_retention < 1:
        raise SystemExit("containerd-actors: --events-retention must be at least 1")
    listeners = split_listeners(args.listen or [DEFAULT_ADDRESS], args.insecure_tcp)
    tls = tls_files(args, listeners.remote)
    events_address = args.events_address or derived_address(
        listeners.local, EVENTS_SOCKET, "an events address", "--events-address"
    )
    batch_address = args.events_batch_address or derived_address(
        events_address, EVENTS_BATCH_SOCKET, "an event batch address", "--events-batch-address"
    )
    return DaemonConfig(
        id=args.id,
        debug=args.debug,
        state_dir=Path(os.path.abspath(args.state_dir)),
        concurrency=args.concurrency,
        metrics_interval=args.metrics_interval,
        listen=listeners.local,
        remote_listen=listeners.remote,
        tls=tls,
        read_only_clients=frozenset(args.read_only_client),
        tls_reload_interval=args.tls_reload_interval,
        remote_events_address=listeners.remote_events_address,
        remote_events_batch_address=listeners.remote_events_batch_address,
        remote_streams=listeners.streams,
        events_address=events_address,
        events_batch_address=batch_address,
        oom_notify=args.oom_notify,
        metrics_address=args.metrics_address,
        runtime=args.runtime,
        start_timeout=args.start_timeout,
        reaper_fd=args.reaper_fd,
        no_reaper=args.no_reaper,
        events_retention=args.events_retention,
        cgroup_parent=args.cgroup_parent.strip("/"),
        migration_idle_timeout=args.migration_idle_timeout,
        migration_stream_min_mib=args.migration_stream_min,
    )


@attrs.frozen
class Listeners:
    local: str
    remote: tuple[str, ...]
    remote_events_address: str | None
    remote_events_batch_address: str | None
    streams: tuple[RemoteStreams, ...] = ()


def split_listeners(addresses: list[str], insecure_tcp: bool) -> Listeners:
    """The one local address (ipc, the default unless one is given) and the remote ones.

    A remote API is mutual TLS or nothing, unless the operator says ``--insecure-tcp``; the event
    streams follow every remote listener, on its next two ports, as they follow the local socket
    (the first listener's are the ones announced to clients of the others' transports).
    """
    local = [a for a in addresses if not (is_tls(a) or is_plain_tcp(a))]
    remote = tuple(a for a in addresses if is_tls(a) or is_plain_tcp(a))
    if len(local) > 1:
        raise SystemExit(f"containerd-actors: one local --listen address at most, got {', '.join(local)}")
    plain = [a for a in remote if is_plain_tcp(a)]
    if plain and not insecure_tcp:
        raise SystemExit(
            f"containerd-actors: {plain[0]} would serve the API unencrypted and to anyone; use "
            "tls+tcp:// with --tls-cert, --tls-key and --tls-ca, or pass --insecure-tcp"
        )
    streams = []
    for address in remote:
        events = derived_address(address, EVENTS_SOCKET, "a remote events address", "a port")
        batch = derived_address(events, EVENTS_BATCH_SOCKET, "a remote batch address", "a port")
        streams.append(RemoteStreams(address, events, batch))
    first = streams[0] if streams else None
    return Listeners(
        local[0] if local else DEFAULT_ADDRESS,
        remote,
        first.events if first else None,
        first.batch if first else None,
        tuple(streams),
    )


def tls_files(args: argparse.Namespace, remote: tuple[str, ...]) -> TlsFiles | None:
    given = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca": args.tls_ca}
    if not any(is_tls(a) for a in remote):
        if any(given.values()):
            raise SystemExit("containerd-actors: the --tls-* flags need a tls+tcp:// --listen address")
        return None
    missing = [flag for flag, value in given.items() if not value]
    if missing:
        raise SystemExit(f"containerd-actors: a tls+tcp:// listener needs {', '.join(missing)}")
    files = TlsFiles(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_ca))
    try:
        files.check()  # fail at start, naming the file, rather than at the first client
    except TlsFilesError as exc:
        raise SystemExit(f"containerd-actors: {exc}") from None
    return files


class _PlainFormatter(logging.Formatter):
    """The original's log shape (``[containerd] 2015/12/16 11:48:28 message``).

    Lines other than INFO also name their level, so warnings stand out in a plain log.
    """

    def __init__(self, daemon_name: str) -> None:
        super().__init__(datefmt="%Y/%m/%d %H:%M:%S")
        self._prefix = f"[{daemon_name}]"

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"level={record.levelname.lower()} "
        text = f"{self._prefix} {self.formatTime(record, self.datefmt)} {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PlainFormatter("containerd-actors"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # pynng logs every pipe callback at debug level; that is noise even in --debug.
    logging.getLogger("pynng").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> None:
    raw_args = sys.argv[1:] if argv is None else argv
    if raw_args[:1] == ["upgrade"]:
        from containerd_actors.reaper.upgrade import run_upgrade

        raise SystemExit(run_upgrade(raw_args[1:], DEFAULT_STATE_DIR))
    config = config_from_args(raw_args)
    setup_logging(config.debug)
    if os.geteuid() != 0:
        log.warning("not running as root: runc will likely refuse to create containers")
    try:
        # A reaper re-executed for an upgrade already holds the lock, and the pipe ends.
        handover = take_handover()
    except HandoverError as exc:
        log.error("upgrade: %s; the containers keep running, start the daemon again", exc)
        raise SystemExit(1) from None
    if config.reaper_fd is None and handover is None:
        # The outermost daemon process holds the state directory (the reaper, or with
        # --no-reaper the server itself); a server started by the reaper runs under its lock.
        try:
            lock_fd = lock_state_dir(config.state_dir)
        except (StateDirInUse, OSError) as exc:
            log.error("%s", exc)
            raise SystemExit(1) from None
    else:
        lock_fd = handover.lock_fd if handover is not None else -1
    # What systemd passed back from its fd store (our pipe ends): close-on-exec at once, so that
    # neither the API server nor runc inherits them.
    passed = take_listen_fds(os.environ, os.getpid()) if config.reaper_fd is None else []
    if config.reaper_fd is None and not config.no_reaper:
        # This process becomes the reaper; the API server runs as its child (see reaper/process.py).
        from containerd_actors.reaper.process import run_reaper
        from containerd_actors.reaper.wire import SERVER_FD

        server_argv = ["-m", "containerd_actors.daemon.main", "--reaper-fd", str(SERVER_FD), *raw_args]
        status = run_reaper(
            server_argv,
            config.state_dir,
            daemon_argv=raw_args,
            lock_fd=lock_fd,
            handover=handover,
            notifier=Notifier.from_environment(os.environ),
            restored=passed,
        )
        raise SystemExit(status)
    if passed:
        log.warning("--no-reaper: closing the %d fds systemd passed (only a reaper keeps them)", len(passed))
        close_quietly(*(fd for _name, fd in passed))
    from containerd_actors.daemon.wiring import serve
    from containerd_actors.transport.memory import keep_freed_buffers

    keep_freed_buffers()  # stdio's MiB buffers reuse freed memory, not fresh pages
    serve(config)


if __name__ == "__main__":
    main()
