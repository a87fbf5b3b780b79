"""What every command group shares: argument types, the trailing ``--json``, usage errors, connecting.

An argument type raises ``argparse.ArgumentTypeError``, so argparse prints ``actr ...: error: ...``
and exits 2 before anything connects; ``UsageError`` is the same mistake found after parsing.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from containerd_actors.client import ID_PATTERN

if TYPE_CHECKING:
    from containerd_actors.client import BlockingClient, TlsFiles

    #: What ``add_subparsers`` returns: each command group adds its commands to it.
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


class Parser(argparse.ArgumentParser):
    """actr's parsers (the subcommands' too: argparse makes them of the root's class).

    argparse makes a help formatter for every argument it adds (to check the metavar), and a
    formatter asks ``shutil`` for the terminal's width, so every ``actr`` would import shutil (with
    bz2 and lzma, ~2 ms) for help it does not print. The width is found here as shutil finds it.
    """

    def _get_formatter(self) -> argparse.HelpFormatter:
        return self.formatter_class(prog=self.prog, width=_terminal_columns() - 2)


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``: ``$COLUMNS``, else the terminal's, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns


class UsageError(Exception):
    """A command line that argparse accepted but that cannot be run; reported as exit 2."""


_ID_RE = re.compile(ID_PATTERN)


def id_arg(text: str) -> str:
    """Container ids and checkpoint names: the wire's pattern, checked here so a typo is a usage error."""
    if not _ID_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"container id {text!r} must match {ID_PATTERN}")
    return text


def non_negative_int(what: str) -> Callable[[str], int]:
    """An argument type for a count or number that cannot be negative, named ``what`` in errors."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{what} must be >= 0, got {value}")
        return value

    return parse


#: ``--pid``: 0 means the container's init process.
pid_arg = non_negative_int("pid")


def json_after() -> argparse.ArgumentParser:
    """A parent parser that also accepts ``--json`` after the command (``actr containers --json``).

    SUPPRESS as the default keeps the global flag's value when it is not repeated.
    """
    parser = Parser(add_help=False)
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def tls_files(args: argparse.Namespace) -> TlsFiles | None:
    """The TLS files from ``--tls-cert``/``--tls-key``/``--tls-ca`` (or ``$ACTR_TLS_*``): all three
    or none."""
    given = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca": args.tls_ca}
    if not any(given.values()):
        return None
    missing = [flag for flag, value in given.items() if not value]
    if missing:
        raise UsageError(
            f"TLS needs {', '.join(missing)} too (or $ACTR_TLS_CERT, $ACTR_TLS_KEY, $ACTR_TLS_CA)"
        )
    from pathlib import Path

    from containerd_actors.client import TlsFiles

    return TlsFiles(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_ca))


def connect(args: argparse.Namespace, address: str | None = None) -> AbstractContextManager[BlockingClient]:
    """The connection of a command that asks and prints: blocking, so trio is never imported."""
    from containerd_actors.client import BlockingClient

    return BlockingClient.connect(address or args.address, tls=tls_files(args))
