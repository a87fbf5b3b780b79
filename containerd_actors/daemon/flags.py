"""The daemon's command line (the original containerd's flags), parsed and checked.

Apart from ``main`` and from ``config`` (the ``DaemonConfig`` the API server runs on, an attrs
class) because the reaper parses and checks the same flags, so that a bad one fails the start, and
the reaper must stay small: it lives as long as the host's containers, so it imports neither attrs
nor the API server's libraries (tests/e2e/test_daemon_cli.py holds it to that).
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import NamedTuple

from containerd_actors import __version__
from containerd_actors.protocol.addresses import (
    DEFAULT_ADDRESS,
    DEFAULT_STATE_DIR,
    EVENTS_BATCH_SOCKET,
    EVENTS_SOCKET,
    address_beside,
    is_plain_tcp,
    is_tls,
    normalize_address,
)
from containerd_actors.protocol.durations import parse_duration
from containerd_actors.transport.pem import TlsFilesError, read_pem_files

#: Events the journal keeps for replay by default (about 100 bytes each).
DEFAULT_RETENTION = 100_000


class RemoteStreams(NamedTuple):
    """A remote API listener and the two event streams beside it, on its next two ports.

    Each remote listener has its own, because a client reaches the daemon only by the address it
    dialed: one on another network than the first listener's could not subscribe otherwise.
    """

    api: str
    events: str
    batch: str


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


class Listeners(NamedTuple):
    local: str
    remote: tuple[str, ...]
    remote_events_address: str | None
    remote_events_batch_address: str | None
    streams: tuple[RemoteStreams, ...] = ()


class Flags(NamedTuple):
    """The parsed flags, checked, with what they imply worked out (addresses beside others)."""

    args: argparse.Namespace
    state_dir: Path
    listeners: Listeners
    events_address: str
    events_batch_address: str
    #: The ``--tls-*`` files, read once and found to be PEM; None without a tls+tcp:// listener.
    tls_paths: tuple[Path, Path, Path] | None


def parse_flags(argv: list[str] | None = None) -> Flags:
    """The command line checked as the API server would check it; SystemExit naming the fault."""
    args = build_parser().parse_args(argv)
    if args.concurrency < 1:
        raise SystemExit("containerd-actors: --concurrency must be at least 1")
    if args.events_retention < 1:
        raise SystemExit("containerd-actors: --events-retention must be at least 1")
    listeners = split_listeners(args.listen or [DEFAULT_ADDRESS], args.insecure_tcp)
    tls_paths = checked_tls_paths(args, listeners.remote)
    events_address = args.events_address or derived_address(
        listeners.local, EVENTS_SOCKET, "an events address", "--events-address"
    )
    batch_address = args.events_batch_address or derived_address(
        events_address, EVENTS_BATCH_SOCKET, "an event batch address", "--events-batch-address"
    )
    state_dir = Path(os.path.abspath(args.state_dir))
    return Flags(args, state_dir, listeners, events_address, batch_address, tls_paths)


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


def checked_tls_paths(args: argparse.Namespace, remote: tuple[str, ...]) -> tuple[Path, Path, Path] | None:
    given = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca": args.tls_ca}
    if not any(is_tls(a) for a in remote):
        if any(given.values()):
            raise SystemExit("containerd-actors: the --tls-* flags need a tls+tcp:// --listen address")
        return None
    missing = [flag for flag, value in given.items() if not value]
    if missing:
        raise SystemExit(f"containerd-actors: a tls+tcp:// listener needs {', '.join(missing)}")
    paths = (Path(args.tls_cert), Path(args.tls_key), Path(args.tls_ca))
    try:
        read_pem_files(*paths)  # fail at start, naming the file, rather than at the first client
    except TlsFilesError as exc:
        raise SystemExit(f"containerd-actors: {exc}") from None
    return paths
