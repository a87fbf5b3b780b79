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

from containerd_actors import __version__
from containerd_actors.daemon.config import DEFAULT_RETENTION, DaemonConfig
from containerd_actors.daemon.state.lock import StateDirInUse, lock_state_dir
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
        default=DEFAULT_ADDRESS,
        help="address on which the API will listen",
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
    parser.add_argument("-v", "--version", action="version", version=f"containerd-actors {__version__}")
    return parser


def config_from_args(argv: list[str] | None = None) -> DaemonConfig:
    args = build_parser().parse_args(argv)
    if args.concurrency < 1:
        raise SystemExit("containerd-actors: --concurrency must be at least 1")
    if args.events_retention < 1:
        raise SystemExit("containerd-actors: --events-retention must be at least 1")
    events_address = args.events_address or derived_address(
        args.listen, EVENTS_SOCKET, "an events address", "--events-address"
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
        listen=args.listen,
        events_address=events_address,
        events_batch_address=batch_address,
        oom_notify=args.oom_notify,
        metrics_address=args.metrics_address,
        runtime=args.runtime,
        start_timeout=args.start_timeout,
        reaper_fd=args.reaper_fd,
        no_reaper=args.no_reaper,
        events_retention=args.events_retention,
    )


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
    if config.reaper_fd is None and not config.no_reaper:
        # This process becomes the reaper; the API server runs as its child (see reaper/process.py).
        from containerd_actors.reaper.process import run_reaper
        from containerd_actors.reaper.wire import SERVER_FD

        server_argv = ["-m", "containerd_actors.daemon.main", "--reaper-fd", str(SERVER_FD), *raw_args]
        status = run_reaper(
            server_argv, config.state_dir, daemon_argv=raw_args, lock_fd=lock_fd, handover=handover
        )
        raise SystemExit(status)
    from containerd_actors.daemon.wiring import serve

    serve(config)


if __name__ == "__main__":
    main()
