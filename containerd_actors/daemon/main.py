"""`containerd-actors`: logging, and the choice of process (its flags are parsed in ``flags``).

This module stays light on purpose: the same command starts the reaper (a small long-lived
process that should not carry trio, nng, cattrs or attrs in its memory) and, as its child, the
API server, whose heavy imports live in ``wiring`` (and its settings' attrs classes in ``config``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from containerd_actors.daemon.flags import Flags, parse_flags
from containerd_actors.daemon.flags import duration_arg as duration_arg  # the flags' type, named here too
from containerd_actors.daemon.state.lock import StateDirInUse, lock_state_dir
from containerd_actors.host.fds import close_quietly
from containerd_actors.host.sd_notify import Notifier, take_listen_fds
from containerd_actors.protocol.addresses import DEFAULT_STATE_DIR
from containerd_actors.reaper.handover import HandoverError, take_handover

if TYPE_CHECKING:
    from containerd_actors.daemon.config import DaemonConfig

log = logging.getLogger("containerd_actors")


def config_from_args(argv: list[str] | None = None) -> DaemonConfig:
    return config_from_flags(parse_flags(argv))


def config_from_flags(flags: Flags) -> DaemonConfig:
    """The API server's settings (attrs classes: imported here, in the server only)."""
    from containerd_actors.daemon.config import DaemonConfig
    from containerd_actors.transport.tls import TlsFiles

    args, listeners = flags.args, flags.listeners
    return DaemonConfig(
        id=args.id,
        debug=args.debug,
        state_dir=flags.state_dir,
        concurrency=args.concurrency,
        metrics_interval=args.metrics_interval,
        listen=listeners.local,
        remote_listen=listeners.remote,
        tls=TlsFiles(*flags.tls_paths) if flags.tls_paths is not None else None,
        read_only_clients=frozenset(args.read_only_client),
        tls_reload_interval=args.tls_reload_interval,
        remote_events_address=listeners.remote_events_address,
        remote_events_batch_address=listeners.remote_events_batch_address,
        remote_streams=listeners.streams,
        events_address=flags.events_address,
        events_batch_address=flags.events_batch_address,
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
    flags = parse_flags(raw_args)
    args = flags.args
    setup_logging(args.debug)
    if os.geteuid() != 0:
        log.warning("not running as root: runc will likely refuse to create containers")
    try:
        # A reaper re-executed for an upgrade already holds the lock, and the pipe ends.
        handover = take_handover()
    except HandoverError as exc:
        log.error("upgrade: %s; the containers keep running, start the daemon again", exc)
        raise SystemExit(1) from None
    if args.reaper_fd is None and handover is None:
        # The outermost daemon process holds the state directory (the reaper, or with
        # --no-reaper the server itself); a server started by the reaper runs under its lock.
        try:
            lock_fd = lock_state_dir(flags.state_dir)
        except (StateDirInUse, OSError) as exc:
            log.error("%s", exc)
            raise SystemExit(1) from None
    else:
        lock_fd = handover.lock_fd if handover is not None else -1
    # What systemd passed back from its fd store (our pipe ends): close-on-exec at once, so that
    # neither the API server nor runc inherits them.
    passed = take_listen_fds(os.environ, os.getpid()) if args.reaper_fd is None else []
    if args.reaper_fd is None and not args.no_reaper:
        # This process becomes the reaper; the API server runs as its child (see reaper/process.py).
        from containerd_actors.reaper.process import run_reaper
        from containerd_actors.reaper.wire import SERVER_FD

        server_argv = ["-m", "containerd_actors.daemon.main", "--reaper-fd", str(SERVER_FD), *raw_args]
        status = run_reaper(
            server_argv,
            flags.state_dir,
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
    serve = import_server()
    from containerd_actors.transport.memory import keep_freed_buffers

    keep_freed_buffers()  # stdio's MiB buffers reuse freed memory, not fresh pages
    serve(config_from_flags(flags))


#: Modules the API server's libraries import at their top but an idle server never uses: each is put
#: in ``sys.modules`` unexecuted, and runs where a name of it is first used (``attrs_code``'s
#: ``_Deferred``). pynng imports asyncio for its asyncio support, and the server runs it under trio;
#: trio imports ssl and hmac for its TLS and DTLS streams, which the server does not use (nng does
#: its TLS with the mbedTLS it links); ssl and hmac (with hashlib) load OpenSSL's libraries. A
#: migration's bulk channel uses ssl and hmac, and runs them then. Measured at idle: asyncio 1.4
#: MiB, ssl and hmac 4.8 MiB of the server's RSS (most of it OpenSSL's pages), and ~40 modules.
UNUSED_AT_IDLE = ("asyncio", "ssl", "hmac")


def import_server() -> Callable[[DaemonConfig], None]:
    """``wiring.serve``, imported as the API server imports it (tests/e2e/test_daemon_cli.py looks at
    what that leaves in ``sys.modules``)."""
    from containerd_actors.protocol import attrs_code

    for name in UNUSED_AT_IDLE:
        attrs_code.defer_module(name)
    from containerd_actors.daemon.wiring import serve

    return serve


if __name__ == "__main__":
    main()
