"""`containerd-actors`: flags (the original containerd's), process set-up, and the actor tree.

Set-up that must happen before trio starts lives here: becoming the child subreaper (so that
container inits are re-parented to us), raising the fd limit (three pipe ends per container),
and preparing the state and socket directories.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import signal
import socket
import sys
from pathlib import Path

import pynng
import trio

from .. import __version__
from ..protocol import warm_up
from ..reaper.process import run_reaper
from ..reaper.wire import SERVER_FD
from ..reaping import ExitWatcher, LocalSubreaper, become_child_subreaper
from ..runc import Runc
from .config import DaemonConfig
from .events import EventsActor
from .journal import DEFAULT_RETENTION, EventJournal
from .prometheus_http import serve_prometheus
from .reaper_link import ReaperLink
from .recovery import load_records
from .server import ApiServer, default_daemon_id
from .state_dir import prepare_state_dir
from .supervisor import Supervisor
from .telemetry import MetricsActor

log = logging.getLogger("containerd_actors")

DEFAULT_STATE_DIR = "/run/containerd-actors"
DEFAULT_LISTEN = "ipc:///run/containerd-actors/containerd.sock"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go-style durations, as the original's flags took them (``1m0s``, ``500ms``).

    Plain numbers are seconds.
    """
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 1m0s, 30s, 500ms)")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _address(text: str) -> str:
    return text if "://" in text else "ipc://" + os.path.abspath(text)


def default_events_address(listen: str) -> str:
    """``events.sock`` beside an IPC listen socket; the next port for TCP."""
    scheme, _, rest = listen.partition("://")
    if scheme == "ipc":
        return f"ipc://{os.path.join(os.path.dirname(rest), 'events.sock')}"
    host, _, port = rest.rpartition(":")
    if port.isdigit():
        return f"{scheme}://{host}:{int(port) + 1}"
    raise SystemExit(
        f"containerd-actors: cannot derive an events address from {listen!r}; pass --events-address"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="containerd-actors", description="High performance container daemon (runc, Trio actors)"
    )
    parser.add_argument(
        "--id", default=default_daemon_id(), help="unique containerd id to identify the instance"
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
        type=parse_duration,
        default=60.0,
        help="interval for flushing metrics to the log (default 1m0s)",
    )
    parser.add_argument(
        "-l", "--listen", type=_address, default=DEFAULT_LISTEN, help="address on which the API will listen"
    )
    parser.add_argument(
        "--events-address",
        type=_address,
        default=None,
        help="address on which events are published (default: events.sock beside the listen socket)",
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
        type=parse_duration,
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
    return DaemonConfig(
        id=args.id,
        debug=args.debug,
        state_dir=Path(os.path.abspath(args.state_dir)),
        concurrency=args.concurrency,
        metrics_interval=args.metrics_interval,
        listen=args.listen,
        events_address=args.events_address or default_events_address(args.listen),
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


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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


def notify_ready(main_pid: int) -> None:
    """sd_notify READY=1, so systemd (Type=notify) and the tests know when requests are served."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    if target.startswith("@"):
        target = "\0" + target[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as notify:
        try:
            notify.sendto(f"READY=1\nMAINPID={main_pid}".encode(), target)
        except OSError as exc:
            log.warning("cannot notify readiness on %s: %s", target, exc)


async def run_daemon(config: DaemonConfig) -> None:
    warm_up()
    runc = Runc(config.runc_root, binary=config.runtime, timeout=config.start_timeout)
    metrics = MetricsActor(config.metrics_interval)
    # Before any actor runs: the journal fixes where seq continues after a restart.
    journal = EventJournal(config.events_dir, retention=config.events_retention)
    events = EventsActor(config.events_address, journal, metrics.mailbox)
    records = load_records(config.containers_dir, config.state_dir / "quarantine")
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
            await nursery.start(metrics.run)
            await nursery.start(events.run)
            supervisor = Supervisor(config, runc, exit_watcher, events.mailbox, metrics.mailbox)
            await nursery.start(supervisor.run, records, kept)
            server = ApiServer(config, supervisor.mailbox, events.mailbox, metrics.mailbox)
            await nursery.start(server.run)
            if config.metrics_address:
                await nursery.start(serve_prometheus, config.metrics_address, metrics.mailbox)
            log.info(
                "containerd-actors %s ready: id=%s state-dir=%s concurrency=%d next event seq=%d",
                __version__,
                config.id,
                config.state_dir,
                config.concurrency,
                journal.last_seq + 1,
            )
            (config.state_dir / "server.pid").write_text(f"{os.getpid()}\n")
            if isinstance(exit_watcher, ReaperLink):
                await exit_watcher.announce_serving()
            notify_ready(main_pid=os.getppid() if config.reaper_fd is not None else os.getpid())
            async for signum in stop_signals:
                log.info("received %s: stopping; containers keep running", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> None:
    raw_args = sys.argv[1:] if argv is None else argv
    config = config_from_args(raw_args)
    setup_logging(config.debug)
    if os.geteuid() != 0:
        log.warning("not running as root: runc will likely refuse to create containers")
    raise_fd_limit()
    if config.reaper_fd is None and not config.no_reaper:
        # This process becomes the reaper; the API server runs as its child (see reaper/process.py).
        server_argv = ["-m", "containerd_actors.daemon.main", "--reaper-fd", str(SERVER_FD), *raw_args]
        raise SystemExit(run_reaper(server_argv, config.state_dir))
    if config.reaper_fd is None:
        become_child_subreaper()
    prepare_state_dir(config.state_dir)
    prepare_socket_dir(config.listen)
    prepare_socket_dir(config.events_address)
    try:
        trio.run(run_daemon, config)
    except* pynng.AddressInUse:
        log.error("another process is already listening on %s or %s", config.listen, config.events_address)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
