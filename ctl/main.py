"""``actr`` entry point: the command tree of the original ``ctr``, and the error policy.

Command-line shape (global flags go before the command, as in ctr)::

    actr [--address ADDR] [--debug] [--json] [-v] containers [list]
    actr ... containers start [-c NAME] [-a] [-t | -T] ID BUNDLE
    actr ... containers kill [-p PID] [-s SIG] ID
    actr ... containers exec --id ID [-a] [-t] [--cwd DIR] [-e K=V ...] [-u UID] [-g GID] -- ARGS...
    actr ... containers attach [-p PID] ID
    actr ... containers logs [-p PID] [-f] [--tail N] ID
    actr ... containers state ID
    actr ... checkpoints [list|create|delete] ...   (list: ID or --bundle PATH)
    actr ... metrics [--prometheus]
    actr ... events [--from SEQ | --since TIME]
    actr ... completion bash|zsh

Each command group (``ctl.containers``, ``ctl.checkpoints``, ``ctl.metrics``, ``ctl.events``) adds
its commands to the parser and names the handler that runs them. With ``-a`` (start, exec) and
``attach``, the exit code is the process's own exit status. Otherwise, exit codes: 0 success, 1
daemon unreachable or request refused, 2 bad usage (argparse's convention, also for a command
line that cannot be run), 130 interrupted by Ctrl-C, 141 stdout closed early (like a process
killed by SIGPIPE).

Start-up is most of what a one-shot command costs, so module-level imports stay light: building
the parser imports no client, codec, trio or rich. A handler imports what it needs when it runs. The
commands that ask once and print (list, state, kill, pause, resume, start, exec, logs, checkpoints,
metrics) return their exit code from a blocking client; the streams (events, attach, ``-a``,
``logs -f``, stats) return a coroutine, and only then is trio imported to run it. rich is imported
only by ``ctl.render``, when it styles output for a terminal or lays out a live table.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from containerd_actors.client import DEFAULT_ADDRESS
from ctl import checkpoints
from ctl.arguments import Parser, UsageError, json_after

PROG = "actr"
ADDRESS_ENV = "ACTR_ADDRESS"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + 2  # SIGINT, as shells report it
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE

#: A command: its exit code, or a coroutine that gives it under trio (a command that streams).
Handler = Callable[[argparse.Namespace], int | Coroutine[Any, Any, int]]


class _VersionAction(argparse.Action):
    """``-v/--version``: the package's own ``__version__``, as the daemon's ``-v`` prints it.

    Not ``importlib.metadata``, which takes longer to import (~14 ms) than the rest of ``actr
    --version`` together.
    """

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> NoReturn:
        from containerd_actors import __version__

        sys.stdout.write(f"{PROG} version {__version__}\n")
        parser.exit()


#: actr's TLS files: its own certificate and key, and the CA that signed the daemons' certificates.
TLS_FLAGS = (
    ("--tls-cert", "ACTR_TLS_CERT", "PEM client certificate"),
    ("--tls-key", "ACTR_TLS_KEY", "PEM key of --tls-cert"),
    ("--tls-ca", "ACTR_TLS_CA", "PEM CA of the daemons' certificates"),
)


class _AddressAction(argparse.Action):
    """``--address`` may be repeated: every command talks to the first (``args.address``), and
    ``containers`` lists all of them (``args.addresses``, None when the flag was not given)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *rest: Any) -> None:
        values = rest[0]
        given = [*(getattr(namespace, "addresses", None) or []), str(values)]
        namespace.addresses = given
        namespace.address = given[0]


def default_address() -> str:
    """``$ACTR_ADDRESS`` if set (and non-empty), else the daemon's default socket."""
    return os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


def _untranslated(message: str) -> str:
    return message


def _remember_translations() -> None:
    """argparse passes every message through ``gettext``, which looks for a catalogue on disk each
    time (four ``stat`` calls a message, ~65 messages to build actr's parser: half of its cost); the
    answer cannot change within a process, so each is looked up once.

    Where there is no catalogue to look in at all (no directory of them where gettext looks, and no
    other domain or directory bound), every answer is the message itself: then not even once (~1 ms,
    and the import of ``locale`` that looking up the language costs)."""
    import functools
    import gettext

    if argparse._ is _untranslated or hasattr(argparse._, "cache_info"):
        return
    catalogues = getattr(gettext, "_default_localedir", None)
    bound = getattr(gettext, "_localedirs", None)
    domain = getattr(gettext, "_current_domain", None)
    if catalogues is not None and bound == {} and domain == "messages" and not os.path.isdir(catalogues):
        argparse._ = _untranslated  # type: ignore[attr-defined]
    else:
        argparse._ = functools.cache(gettext.gettext)  # type: ignore[attr-defined]


#: The command groups, each a module of this package that adds its commands to the parser.
GROUPS = ("containers", "checkpoints", "metrics", "events", "completion")
#: Global flags that take a value (the next argument, or after ``=``).
_VALUE_FLAGS = ("--address", *(flag for flag, _, _ in TLS_FLAGS))


def chosen_group(argv: Sequence[str]) -> str | None:
    """The command group ``argv`` runs, where that is certain before parsing: only the global
    flags spelled out in full before it. Else None (help, an abbreviated flag, ``completion``,
    which walks the whole tree): then the whole parser is built."""
    tokens = iter(argv)
    for token in tokens:
        if token in ("--debug", "--json"):
            continue
        if token in _VALUE_FLAGS:
            next(tokens, None)
            continue
        if token.partition("=")[0] in _VALUE_FLAGS:
            continue
        return token if token in GROUPS and token != "completion" else None
    return None


def build_parser(group: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``group`` only that group's commands (what ``main`` runs: ~2 ms
    less than building and importing every group for a command that uses one)."""
    _remember_translations()
    parser = Parser(
        prog=PROG,
        description="High performance container daemon controller (containerd-actors).",
    )
    parser.add_argument(
        "--address",
        action=_AddressAction,
        default=default_address(),
        help=f"daemon API address: nng URL (tls+tcp://HOST:PORT for another host) or socket path "
        f"(default: ${ADDRESS_ENV}, else {DEFAULT_ADDRESS}); repeat it to list containers of several "
        "daemons in one table with a HOST column",
    )
    for flag, env, what in TLS_FLAGS:
        parser.add_argument(
            flag,
            default=os.environ.get(env) or None,
            help=f"{what} for tls+tcp:// addresses (default: ${env})",
        )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    parser.add_argument("-v", "--version", action=_VersionAction, help="print the version")
    # root_parser: ``actr completion`` walks the whole tree, and ctl.completion cannot import this module.
    parser.set_defaults(handler=None, addresses=None, root_parser=parser)

    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    json_flag = json_after()
    for name in GROUPS if group is None else (group,):
        importlib.import_module(f"ctl.{name}").add_commands(commands, json_flag)
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


def _under_trio(command: Coroutine[Any, Any, int]) -> int:
    import trio

    from ctl.startup import lasting

    lasting()

    async def run_command() -> int:
        return await command

    return trio.run(run_command)


def run(args: argparse.Namespace) -> int:
    """Run the chosen command (under trio if it streams); every expected failure is one stderr line."""
    handler: Handler = args.handler
    try:
        outcome = handler(args)
        code = outcome if isinstance(outcome, int) else _under_trio(outcome)
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
        if isinstance(exc, UsageError):
            _error(str(exc))
            return EXIT_USAGE
        from containerd_actors.client import ClientError

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


def main(argv: Sequence[str] | None = None) -> int:
    argv = checkpoints.original_form(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser(chosen_group(argv))
    try:
        args = parser.parse_args(argv)
        if args.handler is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def console_main() -> NoReturn:
    """The ``actr`` script: ``main``, then out without tearing the interpreter down.

    Freeing every module and object at exit (the wire types, cattrs, attrs) costs ~10 ms, a sixth
    of a one-shot command. Exit handlers still run, and the output is flushed first; a reader
    that went away meanwhile gets the usual 141.
    """
    import atexit

    from ctl.startup import pause_collection

    pause_collection()
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = EXIT_BROKEN_PIPE
    except (OSError, ValueError):
        code = code or EXIT_FAILURE
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    console_main()
