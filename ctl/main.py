"""``actr`` entry point: the argparse command tree of the original ``ctr`` and the error policy.

Command-line shape (global flags go before the command, as in ctr)::

    actr [--address ADDR] [--debug] [--json] [-v] containers [list]
    actr ... containers start [-c NAME] [-a] ID BUNDLE
    actr ... containers kill [-p PID] [-s SIG] ID
    actr ... containers exec --id ID [-a] [-t] [--cwd DIR] [-e K=V ...] [-u UID] [-g GID] -- ARGS...
    actr ... containers attach [-p PID] ID
    actr ... containers logs [-p PID] [-f] [--tail N] ID
    actr ... containers state ID
    actr ... events [--from SEQ | --since TIME]

With ``-a`` (start, exec) and ``attach``, the exit code is the process's own exit status.
Otherwise, exit codes: 0 success, 1 daemon unreachable or request refused, 2 bad usage (argparse's
convention, also for flags the daemon cannot honour yet), 130 interrupted by Ctrl-C,
141 stdout closed early (like a process killed by SIGPIPE).

Module-level imports stay light: rich is imported only by ``ctl.render`` when it styles output.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import trio

from containerd_actors.client import DEFAULT_ADDRESS, ClientError
from containerd_actors.protocol import ID_PATTERN, User
from ctl import commands, observe
from ctl.signals import UnknownSignal, parse_signal
from ctl.times import BadTime, parse_since

PROG = "actr"
ADDRESS_ENV = "ACTR_ADDRESS"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + 2  # SIGINT, as shells report it
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE

Handler = Callable[[argparse.Namespace], Awaitable[int]]


# --------------------------------------------------------------------------- argument types


def signal_arg(text: str) -> int:
    """argparse type for ``--signal``: names (KILL, SIGKILL, kill) or numbers; bad ones exit 2."""
    try:
        return parse_signal(text)
    except UnknownSignal as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_ID_RE = re.compile(ID_PATTERN)


def id_arg(text: str) -> str:
    """argparse type for container ids: the wire's pattern, checked here so a typo is a usage error."""
    if not _ID_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"container id {text!r} must match {ID_PATTERN}")
    return text


def pid_arg(text: str) -> int:
    """argparse type for ``--pid``: a non-negative integer (0 means the init process)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"pid must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"pid must be >= 0, got {value}")
    return value


def env_arg(text: str) -> str:
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    return text


def gids_arg(text: str) -> list[int]:
    try:
        gids = [int(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated group ids, got {text!r}") from None
    if any(gid < 0 for gid in gids):
        raise argparse.ArgumentTypeError("group ids must be >= 0")
    return gids


def seq_arg(text: str) -> int:
    """argparse type for ``--from``: a non-negative event seq (0 means the oldest still kept)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seq must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seq must be >= 0, got {value}")
    return value


def since_arg(text: str) -> float:
    """argparse type for ``--since``: see ``ctl.times.parse_since``."""
    try:
        return parse_since(text)
    except BadTime as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _VersionAction(argparse.Action):
    """``-v/--version``; looks the version up only when asked, keeping start-up cheap."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("containerd-actors")
        except PackageNotFoundError:
            number = "unknown"
        sys.stdout.write(f"{PROG} version {number}\n")
        parser.exit()


# --------------------------------------------------------------------------- handlers


async def _containers_list(args: argparse.Namespace) -> int:
    return await commands.list_containers(args.address, as_json=args.json)


async def _containers_start(args: argparse.Namespace) -> int:
    return await commands.start_container(
        args.address, args.id, args.bundle, checkpoint=args.checkpoint, attach=args.attach, as_json=args.json
    )


async def _containers_exec(args: argparse.Namespace) -> int:
    command = args.args[1:] if args.args[:1] == ["--"] else args.args
    if not command:
        raise commands.NotSupported("containers exec: give the command line after --, e.g. -- sh")
    user = None
    if args.uid is not None or args.gid is not None or args.additional_gids:
        user = User(uid=args.uid or 0, gid=args.gid or 0, additional_gids=list(args.additional_gids or []))
    return await commands.exec_process(
        args.address,
        args.exec_id,
        command,
        attach=args.attach,
        terminal=args.tty,
        cwd=args.cwd,
        env=args.env,
        user=user,
        as_json=args.json,
    )


async def _containers_attach(args: argparse.Namespace) -> int:
    return await commands.attach_process(args.address, args.id, args.pid)


async def _containers_logs(args: argparse.Namespace) -> int:
    return await commands.show_logs(args.address, args.id, args.pid, follow=args.follow, tail=args.tail)


async def _containers_state(args: argparse.Namespace) -> int:
    return await commands.container_state(args.address, args.id, as_json=args.json)


async def _containers_kill(args: argparse.Namespace) -> int:
    return await commands.kill_container(args.address, args.id, signal=args.signal, pid=args.pid)


async def _containers_pause(args: argparse.Namespace) -> int:
    return await observe.pause(args.address, args.id)


async def _containers_resume(args: argparse.Namespace) -> int:
    return await observe.resume(args.address, args.id)


async def _containers_stats(args: argparse.Namespace) -> int:
    return await observe.stats(args.address, args.id, no_stream=args.no_stream, as_json=args.json)


async def _metrics(args: argparse.Namespace) -> int:
    return await observe.metrics(args.address, prometheus=args.prometheus, as_json=args.json)


async def _checkpoints_list(args: argparse.Namespace) -> int:
    return await observe.list_checkpoints(args.address, args.id, as_json=args.json)


async def _checkpoints_create(args: argparse.Namespace) -> int:
    return await observe.create_checkpoint(
        args.address,
        args.id,
        args.name,
        tcp=args.tcp,
        unix_sockets=args.unix_sockets,
        shell=args.shell,
        exit=args.exit,
        as_json=args.json,
    )


async def _checkpoints_delete(args: argparse.Namespace) -> int:
    return await observe.delete_checkpoint(args.address, args.id, args.name)


async def _events(args: argparse.Namespace) -> int:
    return await commands.stream_events(
        args.address, as_json=args.json, from_seq=args.from_seq, since=args.since
    )


# --------------------------------------------------------------------------- parser


def default_address() -> str:
    """``$ACTR_ADDRESS`` if set (and non-empty), else the daemon's default socket."""
    return os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="High performance container daemon controller (containerd-actors).",
    )
    parser.add_argument(
        "--address",
        default=default_address(),
        help=f"daemon API address: nng URL or socket path (default: ${ADDRESS_ENV}, else {DEFAULT_ADDRESS})",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    parser.add_argument("-v", "--version", action=_VersionAction, help="print the version")
    parser.set_defaults(handler=None)

    # Also accept --json after the command (``actr containers --json``); SUPPRESS keeps the global value.
    json_after = argparse.ArgumentParser(add_help=False)
    json_after.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    containers = sub.add_parser(
        "containers", parents=[json_after], help="interact with running containers (lists them by default)"
    )
    containers.set_defaults(handler=_containers_list)
    actions = containers.add_subparsers(title="subcommands", metavar="SUBCOMMAND")

    listing = actions.add_parser("list", parents=[json_after], help="list containers: ID PATH STATUS PID1")
    listing.set_defaults(handler=_containers_list)

    start = actions.add_parser("start", parents=[json_after], help="start a container; prints its pid")
    start.add_argument("-c", "--checkpoint", metavar="NAME", help="checkpoint to start the container from")
    start.add_argument("-a", "--attach", action="store_true", help="connect to the stdio of the container")
    start.add_argument("id", metavar="ID", type=id_arg, help="container id")
    start.add_argument("bundle", metavar="BUNDLE", help="OCI bundle directory (made absolute before sending)")
    start.set_defaults(handler=_containers_start)

    exec_ = actions.add_parser(
        "exec",
        parents=[json_after],
        help="run another process in a running container; prints its pid (or attaches with -a)",
        usage="%(prog)s --id ID [-a] [-t] [--cwd DIR] [-e K=V ...] [-u UID] [-g GID] -- ARGS...",
    )
    exec_.add_argument("--id", dest="exec_id", required=True, type=id_arg, help="container id")
    exec_.add_argument(
        "-a", "--attach", action="store_true", help="connect stdio and exit with the process's status"
    )
    exec_.add_argument(
        "-t", "--tty", action="store_true", help="allocate a terminal (Ctrl-P Ctrl-Q detaches)"
    )
    exec_.add_argument("--cwd", default="", help="working directory inside the container (absolute)")
    exec_.add_argument(
        "-e", "--env", action="append", default=[], type=env_arg, metavar="K=V", help="set a variable"
    )
    exec_.add_argument("-u", "--uid", type=int, default=None, help="user id (default: the container's)")
    exec_.add_argument("-g", "--gid", type=int, default=None, help="group id")
    exec_.add_argument(
        "--additional-gids",
        type=gids_arg,
        default=None,
        metavar="GID,GID",
        help="supplementary group ids, comma-separated",
    )
    exec_.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the command line, after --")
    exec_.set_defaults(handler=_containers_exec)

    attach = actions.add_parser("attach", help="connect the terminal to a running process")
    attach.add_argument(
        "-p", "--pid", type=pid_arg, default=0, help="process to attach to (default: the init)"
    )
    attach.add_argument("id", metavar="ID", type=id_arg, help="container id")
    attach.set_defaults(handler=_containers_attach)

    logs = actions.add_parser("logs", help="print a process's output, kept by the daemon")
    logs.add_argument("-p", "--pid", type=pid_arg, default=0, help="process (default: the init)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the process exits")
    logs.add_argument("--tail", type=int, default=-1, metavar="N", help="start with the last N lines")
    logs.add_argument("id", metavar="ID", type=id_arg, help="container id")
    logs.set_defaults(handler=_containers_logs)

    state = actions.add_parser("state", parents=[json_after], help="a container and its processes")
    state.add_argument("id", metavar="ID", type=id_arg, help="container id")
    state.set_defaults(handler=_containers_state)

    kill = actions.add_parser("kill", help="send a signal to a container or one of its processes")
    kill.add_argument(
        "-p", "--pid", type=pid_arg, default=0, help="pid of the process to signal (default: 0, the init)"
    )
    kill.add_argument(
        "-s",
        "--signal",
        type=signal_arg,
        default=15,
        help="signal to send: a name (TERM, SIGKILL, kill) or a number (default: 15)",
    )
    kill.add_argument("id", metavar="ID", type=id_arg, help="container id")
    kill.set_defaults(handler=_containers_kill)

    for name, handler, what in (
        ("pause", _containers_pause, "freeze every process of a container"),
        ("resume", _containers_resume, "thaw a paused container"),
    ):
        action = actions.add_parser(name, help=what)
        action.add_argument("id", metavar="ID", type=id_arg, help="container id")
        action.set_defaults(handler=handler)

    stats = actions.add_parser(
        "stats", parents=[json_after], help="cgroup stats: one container's samples, or a live table of all"
    )
    stats.add_argument("id", metavar="ID", type=id_arg, nargs="?", help="container id (default: all, live)")
    stats.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    stats.set_defaults(handler=_containers_stats)

    checkpoints = sub.add_parser(
        "checkpoints",
        parents=[json_after],
        help="list all checkpoints of a container (`checkpoints ID`), or create/delete one",
    )
    checkpoints.set_defaults(handler=_checkpoints_list)
    checkpoint_actions = checkpoints.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    listing = checkpoint_actions.add_parser(
        "list", parents=[json_after], help="NAME TCP UNIX SOCKETS SHELL CREATED"
    )
    listing.add_argument("id", metavar="ID", type=id_arg, help="container id")
    listing.set_defaults(handler=_checkpoints_list)
    create = checkpoint_actions.add_parser("create", parents=[json_after], help="create a new checkpoint")
    create.add_argument("--tcp", action="store_true", help="persist open tcp connections")
    create.add_argument("--unix-sockets", action="store_true", help="persist unix sockets")
    create.add_argument(
        "--exit", action="store_true", help="exit the container after the checkpoint completes"
    )
    create.add_argument("--shell", action="store_true", help="checkpoint shell jobs")
    create.add_argument("id", metavar="ID", type=id_arg, help="container id")
    create.add_argument("name", metavar="NAME", type=id_arg, help="checkpoint name")
    create.set_defaults(handler=_checkpoints_create)
    delete = checkpoint_actions.add_parser("delete", help="delete a checkpoint")
    delete.add_argument("id", metavar="ID", type=id_arg, help="container id")
    delete.add_argument("name", metavar="NAME", type=id_arg, help="checkpoint name")
    delete.set_defaults(handler=_checkpoints_delete)

    metrics = sub.add_parser("metrics", parents=[json_after], help="the daemon's telemetry")
    metrics.add_argument("--prometheus", action="store_true", help="Prometheus text exposition format")
    metrics.set_defaults(handler=_metrics)

    events = sub.add_parser(
        "events",
        parents=[json_after],
        help="receive events from the daemon: TYPE ID PID STATUS SEQ TIME",
        description="Print events as they happen; none is missed while the daemon's journal holds it. "
        "With --from or --since, first print past events from the journal, then continue live "
        "without a gap or a repeat.",
    )
    start_at = events.add_mutually_exclusive_group()
    start_at.add_argument(
        "--from",
        dest="from_seq",
        metavar="SEQ",
        type=seq_arg,
        default=None,
        help="replay from event SEQ (0: the oldest the daemon still keeps)",
    )
    start_at.add_argument(
        "--since",
        metavar="TIME",
        type=since_arg,
        default=None,
        help="replay from the first event at or after TIME: 10m, 1h30m (ago), a Unix timestamp, "
        "or ISO 8601 such as 2026-01-02T15:04:05Z",
    )
    events.set_defaults(handler=_events)
    return parser


# --------------------------------------------------------------------------- running


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _single(exc: BaseException) -> BaseException:
    """Unwrap exception groups that hold a single exception, so they get the plain message."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush cannot complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run(args: argparse.Namespace) -> int:
    """Run the chosen command under trio and turn every expected failure into one stderr line."""
    handler: Handler = args.handler
    try:
        code = trio.run(handler, args)
        sys.stdout.flush()  # inside the try: a reader that went away (`| head`) surfaces here
        return code
    except BaseException as raw:
        exc = _single(raw)
        if isinstance(exc, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        if isinstance(exc, BrokenPipeError):
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        if isinstance(exc, SystemExit | GeneratorExit):
            raise
        if args.debug:
            import traceback

            traceback.print_exception(raw)
        if isinstance(exc, commands.NotSupported):
            _error(str(exc))
            return EXIT_USAGE
        if isinstance(exc, ClientError):
            # DaemonUnreachable: "cannot reach containerd-actors at ADDR: REASON";
            # RequestFailed: "CODE: MESSAGE" (the daemon's ErrorReply).
            _error(str(exc))
            return EXIT_FAILURE
        if not isinstance(exc, Exception):
            raise
        hint = "" if args.debug else " (--debug shows the traceback)"
        _error(f"unexpected error: {type(exc).__name__}: {exc}{hint}")
        return EXIT_FAILURE


CHECKPOINT_SUBCOMMANDS = ("list", "create", "delete")


def _original_checkpoints_form(argv: list[str]) -> list[str]:
    """The original's ``ctr checkpoints ID`` lists; argparse would read ID as a subcommand, so add "list"."""
    if "checkpoints" not in argv:
        return argv
    index = argv.index("checkpoints")
    rest = argv[index + 1 :]
    first = next((word for word in rest if not word.startswith("-")), None)
    if first is not None and first not in CHECKPOINT_SUBCOMMANDS:
        return [*argv[: index + 1], "list", *rest]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(_original_checkpoints_form(list(sys.argv[1:] if argv is None else argv)))
        if args.handler is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
