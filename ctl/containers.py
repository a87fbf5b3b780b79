"""``actr containers``: list, start, kill, exec, attach, logs, state, pause/resume, migrate and stats.

Each handler returns the process exit code and lets the client library's errors
(``DaemonUnreachable``, ``RequestFailed``) propagate, so that ``ctl.main`` owns the whole
error-reporting policy.

What a handler needs is imported when it runs: building the parser must stay cheap, since every
``actr`` builds all of it. The one-shot commands (list, state, kill, pause, resume, start, exec,
logs, also ``logs -f``) use the ``BlockingClient`` and never import trio, and so do ``start -a`` and
``exec -a`` without a terminal (``ctl.attach_blocking``). What needs an event loop (``exec -a -t``,
attach, stats) returns a coroutine, which ``ctl.main`` runs under trio, and imports
``ctl.attach`` (terminal modes, detach keys, window sizes) only then.

Why one module of ~530 lines: ``ctl.main`` imports each command group by name and asks it for its
parser; the group's parser names its handlers, and the helpers they share (the early send of exec
and start, the attach choice) serve both. A second module would be one more import for every
``actr`` run, which the one-shot commands' budget counts in milliseconds.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ctl.arguments import UsageError, connect, id_arg, pid_arg, tls_files
from ctl.signals import UnknownSignal, parse_signal

if TYPE_CHECKING:
    from containerd_actors.client import BlockingClient, User
    from containerd_actors.client.calls import ProcessOptions
    from ctl.arguments import Commands


# --------------------------------------------------------------------------- argument types


def signal_arg(text: str) -> int:
    """argparse type for ``--signal``: names (KILL, SIGKILL, kill) or numbers; bad ones exit 2."""
    try:
        return parse_signal(text)
    except UnknownSignal as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


# --------------------------------------------------------------------------- the parser


def add_commands(commands: Commands, json_after: argparse.ArgumentParser) -> None:
    containers = commands.add_parser(
        "containers", parents=[json_after], help="interact with running containers (lists them by default)"
    )
    containers.set_defaults(handler=list_containers)
    actions = containers.add_subparsers(title="subcommands", metavar="SUBCOMMAND")

    listing = actions.add_parser("list", parents=[json_after], help="list containers: ID PATH STATUS PID1")
    listing.set_defaults(handler=list_containers)

    start = actions.add_parser("start", parents=[json_after], help="start a container; prints its pid")
    start.add_argument("-c", "--checkpoint", metavar="NAME", help="checkpoint to start the container from")
    start.add_argument("-a", "--attach", action="store_true", help="connect to the stdio of the container")
    terminal = start.add_mutually_exclusive_group()
    sets_terminal: dict[str, Any] = {"dest": "terminal", "action": "store_const"}  # None: as the bundle says
    terminal.add_argument(
        "-t",
        "--tty",
        const=True,
        default=None,
        help="give the init a terminal even if the bundle has none (Ctrl-P Ctrl-Q detaches)",
        **sets_terminal,
    )
    terminal.add_argument(
        "-T",
        "--no-tty",
        const=False,
        help="give the init pipes even if the bundle asks for a terminal",
        **sets_terminal,
    )
    start.add_argument("id", metavar="ID", type=id_arg, help="container id")
    start.add_argument("bundle", metavar="BUNDLE", help="OCI bundle directory (made absolute before sending)")
    start.set_defaults(handler=start_container)

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
    exec_.set_defaults(handler=exec_process)

    attach = actions.add_parser("attach", help="connect the terminal to a running process")
    attach.add_argument(
        "-p", "--pid", type=pid_arg, default=0, help="process to attach to (default: the init)"
    )
    attach.add_argument("id", metavar="ID", type=id_arg, help="container id")
    attach.set_defaults(handler=attach_process)

    logs = actions.add_parser("logs", help="print a process's output, kept by the daemon")
    logs.add_argument("-p", "--pid", type=pid_arg, default=0, help="process (default: the init)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the process exits")
    logs.add_argument("--tail", type=int, default=-1, metavar="N", help="start with the last N lines")
    logs.add_argument("id", metavar="ID", type=id_arg, help="container id")
    logs.set_defaults(handler=show_logs)

    state = actions.add_parser("state", parents=[json_after], help="a container and its processes")
    state.add_argument("id", metavar="ID", type=id_arg, help="container id")
    state.set_defaults(handler=container_state)

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
    kill.set_defaults(handler=kill_container)

    for name, handler, what in (
        ("pause", pause_container, "freeze every process of a container"),
        ("resume", resume_container, "thaw a paused container"),
    ):
        action = actions.add_parser(name, help=what)
        action.add_argument("id", metavar="ID", type=id_arg, help="container id")
        action.set_defaults(handler=handler)

    migrate = actions.add_parser(
        "migrate",
        parents=[json_after],
        help="move a running container to another daemon (live migration with CRIU)",
        description="The daemon serving this command drives the move, dialing --to with its own TLS "
        "certificate. On any failure the container keeps running where it was.",
    )
    migrate.add_argument("id", metavar="ID", type=id_arg, help="container id")
    migrate.add_argument(
        "--to", required=True, metavar="ADDRESS", help="the destination daemon, tls+tcp://HOST:PORT"
    )
    migrate.add_argument("--tcp", action="store_true", help="keep established TCP connections (CRIU)")
    migrate.add_argument(
        "--keep-source", action="store_true", help="keep the dump here as a checkpoint of the bundle"
    )
    migrate.add_argument(
        "--rootfs-copy",
        action="store_true",
        help="send a tar of the rootfs too (default: it must exist at the same path there)",
    )
    migrate.add_argument(
        "--pre-dump",
        type=int,
        default=0,
        metavar="N",
        help="pre-copy rounds; refused where the kernel does not track dirty memory",
    )
    migrate.set_defaults(handler=migrate_container)

    stats = actions.add_parser(
        "stats", parents=[json_after], help="cgroup stats: one container's samples, or a live table of all"
    )
    stats.add_argument("id", metavar="ID", type=id_arg, nargs="?", help="container id (default: all, live)")
    stats.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    stats.set_defaults(handler=show_stats)


# --------------------------------------------------------------------------- the commands


def list_containers(args: argparse.Namespace) -> int:
    """``actr containers [list]``: the ``ID PATH STATUS PID1`` table, or a JSON array."""
    from ctl import render

    if args.addresses and len(args.addresses) > 1:
        return _list_several(args)
    with connect(args) as client:
        containers = client.containers()
    if args.json:
        sys.stdout.write(render.containers_json(containers) + "\n")
    else:
        render.print_containers(containers, sys.stdout)
    return 0


def _list_several(args: argparse.Namespace) -> int:
    """Several ``--address``: one table, its HOST column the daemon's id (``--id``, its hostname by
    default); in JSON each object gains ``host``. Daemons are asked one after the other."""
    import json

    from ctl import render

    containers, hosts = [], []
    for address in args.addresses:
        with connect(args, address) as client:
            reply = client.state()
        containers += reply.containers
        hosts += [reply.machine.id] * len(reply.containers)
    if args.json:
        objects = json.loads(render.containers_json(containers))
        lines = [json.dumps({"host": host, **obj}) for host, obj in zip(hosts, objects, strict=True)]
        sys.stdout.write("[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n")
    else:
        render.print_containers(containers, sys.stdout, hosts=hosts)
    return 0


def start_container(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    """``actr containers start ID BUNDLE``: prints the init pid.

    With ``--attach`` it prints the container's output instead, forwards stdin, and returns the
    init's exit status.

    The bundle is made absolute here because the daemon resolves paths in its own working
    directory, not the caller's.
    """
    bundle = os.path.abspath(args.bundle)
    fields = {"id": args.id, "bundle": bundle, "checkpoint": args.checkpoint, "terminal": args.terminal}
    with _sent_early(args, "CreateContainer", fields, _prepare_attach if args.attach else None) as sent:
        if sent is not None:
            client, reply = sent
            return _after_start(args, client, reply.pid)
    with connect(args) as client:
        pid = client.create_container(args.id, bundle, checkpoint=args.checkpoint, terminal=args.terminal)
        return _after_start(args, client, pid)


def _after_start(
    args: argparse.Namespace, client: BlockingClient, pid: int
) -> int | Coroutine[Any, Any, int]:
    """What ``start`` does once its container runs as ``pid``: attach, or print the pid."""
    if args.attach:
        terminal = args.terminal
        if terminal is None:  # the bundle decided
            terminal = client.read_output(args.id, tail=0).terminal
        if terminal:
            return _attach_terminal(args, pid)
        from ctl import attach_blocking

        return attach_blocking.attach(client, args.id, pid)
    _print_pid(args.id, pid, as_json=args.json)
    return 0


async def _attach_terminal(args: argparse.Namespace, pid: int) -> int:
    """``start -a`` of a terminal: raw mode, detach keys and window sizes need ``ctl.attach`` under
    trio; the pty gets this terminal's size before the first keystroke."""
    from containerd_actors.client import Client, RequestFailed
    from ctl.attach import attach, terminal_size

    async with Client.connect(args.address, tls=tls_files(args)) as client:
        rows, cols = terminal_size(sys.stdin.fileno())
        if rows and cols:
            try:
                await client.resize_terminal(args.id, rows, cols)
            except RequestFailed:
                pass  # it has exited already; its output and status still come
        return await attach(client, args.id, pid, terminal=True)


def exec_process(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    """``actr containers exec``: prints the new pid, or with ``-a`` runs attached and returns its status."""
    command = args.args[1:] if args.args[:1] == ["--"] else args.args
    if not command:
        raise UsageError("containers exec: give the command line after --, e.g. -- sh")
    user = None
    if args.uid is not None or args.gid is not None or args.additional_gids:
        from containerd_actors.client import User

        user = User(uid=args.uid or 0, gid=args.gid or 0, additional_gids=list(args.additional_gids or []))
    if args.attach and args.tty:
        return _exec_in_terminal(args, command, user)
    rows, cols = 0, 0
    if args.tty:
        from ctl.attach import terminal_size

        rows, cols = terminal_size(sys.stdin.fileno())
    options = _exec_options(args, user, rows, cols)
    meanwhile = _prepare_attach if args.attach else None
    if not args.tty and user is None:
        fields = {"id": args.exec_id, "args": command, **options}
        with _sent_early(args, "AddProcess", fields, meanwhile) as sent:
            if sent is not None:
                client, reply = sent
                return _after_exec(args, client, reply.pid)
    with connect(args) as client:
        pid = client.add_process(args.exec_id, command, meanwhile=meanwhile, **options)
        return _after_exec(args, client, pid)


def _after_exec(args: argparse.Namespace, client: BlockingClient, pid: int) -> int:
    """What ``exec`` (without ``-t``) does once its process runs as ``pid``: attach, or print the pid."""
    if args.attach:
        from ctl import attach_blocking

        return attach_blocking.attach(client, args.exec_id, pid)
    _print_pid(args.exec_id, pid, as_json=args.json)
    return 0


@contextmanager
def _sent_early(
    args: argparse.Namespace, tag: str, fields: dict[str, Any], meanwhile: Callable[[], None] | None
) -> Iterator[tuple[BlockingClient, Any] | None]:
    """The client and the reply of request ``tag``, sent before attrs and the wire classes are
    imported (``client.early``): for requests the daemon takes long over (runc exec, runc run),
    so that those imports, and ``meanwhile``, run while it works, not before. None, having sent
    nothing, where that cannot be (TLS, or a request ``plain_requests`` is not sure of): then the
    caller goes the usual way, with its usual errors. The connection closes on leaving."""
    if args.tls_cert or args.tls_key or args.tls_ca:
        yield None
        return
    from containerd_actors.client import early

    request = early.send(args.address, tag, fields)
    if request is None:
        yield None
        return
    with request:
        if meanwhile is not None:
            meanwhile()
        yield request.reply()


def _prepare_attach() -> None:
    """What ``exec -a`` and ``start -a`` need once their process runs, done while the daemon runs
    ``runc exec`` or ``runc run`` (in which actr would only wait): the attach's module, and the
    collector back on."""
    from ctl import attach_blocking  # noqa: F401
    from ctl.startup import lasting

    lasting()


def _exec_options(args: argparse.Namespace, user: User | None, rows: int, cols: int) -> ProcessOptions:
    """The AddProcess options of ``exec``, whichever client sends it."""
    return {"env": args.env, "cwd": args.cwd, "user": user, "terminal": args.tty, "rows": rows, "cols": cols}


async def _exec_in_terminal(args: argparse.Namespace, command: list[str], user: User | None) -> int:
    """``exec -a -t``: raw mode, detach keys and window sizes need ``ctl.attach`` under trio."""
    from containerd_actors.client import Client
    from ctl.attach import attach, terminal_size

    rows, cols = terminal_size(sys.stdin.fileno())
    async with Client.connect(args.address, tls=tls_files(args)) as client:
        pid = await client.add_process(args.exec_id, command, **_exec_options(args, user, rows, cols))
        return await attach(client, args.exec_id, pid, terminal=True)


def _print_pid(id: str, pid: int, *, as_json: bool) -> None:
    """What start and exec print without ``--attach``: the new process's pid."""
    sys.stdout.write(json.dumps({"id": id, "pid": pid}) + "\n" if as_json else f"{pid}\n")


async def attach_process(args: argparse.Namespace) -> int:
    """``actr containers attach ID [-p PID]``: attach to a running process (the init by default).

    Output starts with what the process writes from now on, as docker's attach does; the earlier
    output is in ``actr containers logs``.
    """
    from containerd_actors.client import Client
    from ctl.attach import attach, terminal_size

    async with Client.connect(args.address, tls=tls_files(args)) as client:
        probe = await client.read_output(args.id, args.pid, tail=0)
        if probe.terminal:
            rows, cols = terminal_size(sys.stdin.fileno())
            if rows and cols:
                await client.resize_terminal(args.id, rows, cols, args.pid)
        offsets = (probe.next_stdout_offset, probe.next_stderr_offset)
        return await attach(client, args.id, args.pid, terminal=probe.terminal, offsets=offsets)


def show_logs(args: argparse.Namespace) -> int:
    """``actr containers logs ID [-p PID] [-f] [--tail N]``: without ``-f``, what the logs hold now.

    Without trio, as ``exec -a``: a local client copies from the daemon's log files
    (``local_output``), the writer thread writes while the next read is on its way."""
    from containerd_actors.client import local_output
    from containerd_actors.client.redial import Notices, Redial
    from ctl.attach_blocking import OutputWriter, rotated_out
    from ctl.startup import lasting

    lasting()
    out_fd, err_fd = sys.stdout.fileno(), sys.stderr.fileno()
    sys.stdout.flush()
    sys.stderr.flush()
    with connect(args) as client:
        writer = OutputWriter()
        notices = Notices(functools.partial(writer.write, err_fd))
        redial = Redial(client.address, tls=client.tls, first=client, notices=notices)
        for chunk in local_output.follow_output(
            client, args.id, args.pid, follow=args.follow, tail=args.tail, redial=redial
        ):
            if chunk.skipped:
                writer.write(err_fd, rotated_out(chunk.skipped))
            writer.write(out_fd, chunk.stdout)
            writer.write(err_fd, chunk.stderr)
        writer.finish()
    return 0


def container_state(args: argparse.Namespace) -> int:
    """``actr containers state ID``: the container and each of its processes."""
    from containerd_actors.client import ErrorCode, ErrorReply, RequestFailed
    from ctl import render

    with connect(args) as client:
        try:
            containers = client.state(args.id).containers
        except RequestFailed as failure:
            # A daemon older than State.id (protocol revision 3) refuses the field; the id itself
            # was checked before sending. Then all of them, as before.
            if failure.code != ErrorCode.INVALID_REQUEST:
                raise
            containers = client.containers()
        found = [c for c in containers if c.id == args.id]
        if not found:
            raise RequestFailed(ErrorReply(None, ErrorCode.NOT_FOUND, _why_not_listed(client, args.id)))
    if args.json:
        sys.stdout.write(render.containers_json(found)[1:-1].strip() + "\n")
    else:
        render.print_processes(found[0], sys.stdout)
    return 0


def _why_not_listed(client: BlockingClient, id: str) -> str:
    """State lists running and paused containers only; one that exited still has its logs, so say so
    rather than leave the user to think it never existed."""
    from containerd_actors.client import RequestFailed

    try:
        end = client.read_output(id, tail=0)
    except RequestFailed:
        return f"no such container: {id!r}"
    if not end.exited:
        return f"no such container: {id!r}"
    status = "unknown" if end.status is None else end.status
    return f"container {id!r} has exited (status {status}); its output: actr containers logs {id}"


def kill_container(args: argparse.Namespace) -> int:
    """``actr containers kill [-p PID] [-s SIG] ID``: pid 0 is the container's init process."""
    with connect(args) as client:
        client.signal(args.id, signal=args.signal, pid=args.pid)
    return 0


def pause_container(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.pause(args.id)
    return 0


def resume_container(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.resume(args.id)
    return 0


def migrate_container(args: argparse.Namespace) -> int:
    """``actr containers migrate ID --to ADDRESS``: prints where it runs and the frozen time."""
    with connect(args) as client:
        reply = client.migrate_container(
            args.id,
            args.to,
            tcp=args.tcp,
            keep_source=args.keep_source,
            rootfs_copy=args.rootfs_copy,
            pre_dump=args.pre_dump,
        )
    if args.json:
        fields = (
            "pid", "frozen_s", "total_s", "dump_s", "transfer_s", "restore_s", "bytes_sent",
            "pages_streamed", "kept_checkpoint",
        )  # fmt: skip
        print(json.dumps({"id": args.id, "to": args.to, **{name: getattr(reply, name) for name in fields}}))
    else:
        dump = "dump, pages streamed" if reply.pages_streamed else "dump"
        print(
            f"{args.id} runs at {args.to} as pid {reply.pid}: frozen {reply.frozen_s:.3f} s "
            f"({dump} {reply.dump_s:.3f}, transfer {reply.transfer_s:.3f}, restore {reply.restore_s:.3f}), "
            f"{reply.bytes_sent / 2**20:.1f} MiB sent, {reply.total_s:.3f} s in all"
        )
        if reply.kept_checkpoint:
            print(f"its dump is kept here as checkpoint {reply.kept_checkpoint}")
    return 0


async def show_stats(args: argparse.Namespace) -> int:
    """``actr containers stats [ID]``: streams, so it runs under trio (``ctl.stats``)."""
    from ctl.stats import show_stats

    return await show_stats(args)
