"""``actr checkpoints``: list, create and delete a container's CRIU checkpoints.

The original's ``ctr checkpoints ID`` lists; ``original_form`` keeps that spelling working beside
the ``list``/``create``/``delete`` subcommands. Checkpoints live in the bundle, so they outlive
their container: listing and deleting work after it exited, and ``--bundle PATH`` lists a
bundle's checkpoints with no container at all.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

from ctl.arguments import UsageError, connect, id_arg

if TYPE_CHECKING:
    from ctl.arguments import Commands

SUBCOMMANDS = ("list", "create", "delete")


def add_commands(commands: Commands, json_after: argparse.ArgumentParser) -> None:
    checkpoints = commands.add_parser(
        "checkpoints",
        parents=[json_after],
        help="list all checkpoints of a container (`checkpoints ID`), or create/delete one",
    )
    checkpoints.set_defaults(handler=list_checkpoints, id=None, bundle=None)
    actions = checkpoints.add_subparsers(title="subcommands", metavar="SUBCOMMAND")

    listing = actions.add_parser(
        "list",
        parents=[json_after],
        help="NAME TCP UNIX SOCKETS SHELL CREATED, of a container (also after it exited) or a bundle",
    )
    listing.add_argument("id", metavar="ID", type=id_arg, nargs="?", help="container id")
    listing.add_argument(
        "--bundle", metavar="PATH", help="list the checkpoints of this bundle directory; no container needed"
    )
    listing.set_defaults(handler=list_checkpoints)

    create = actions.add_parser("create", parents=[json_after], help="create a new checkpoint")
    create.add_argument("--tcp", action="store_true", help="persist open tcp connections")
    create.add_argument("--unix-sockets", action="store_true", help="persist unix sockets")
    create.add_argument(
        "--exit", action="store_true", help="exit the container after the checkpoint completes"
    )
    create.add_argument("--shell", action="store_true", help="checkpoint shell jobs")
    create.add_argument("id", metavar="ID", type=id_arg, help="container id")
    create.add_argument("name", metavar="NAME", type=id_arg, help="checkpoint name")
    create.set_defaults(handler=create_checkpoint)

    delete = actions.add_parser("delete", help="delete a checkpoint")
    delete.add_argument("id", metavar="ID", type=id_arg, help="container id")
    delete.add_argument("name", metavar="NAME", type=id_arg, help="checkpoint name")
    delete.set_defaults(handler=delete_checkpoint)


def original_form(argv: list[str]) -> list[str]:
    """``checkpoints ID`` as ``checkpoints list ID``: argparse would read ID as a subcommand."""
    if "checkpoints" not in argv:
        return argv
    index = argv.index("checkpoints")
    rest = argv[index + 1 :]
    first = next((word for word in rest if not word.startswith("-")), None)
    if first is not None and first not in SUBCOMMANDS:
        return [*argv[: index + 1], "list", *rest]
    return argv


def list_checkpoints(args: argparse.Namespace) -> int:
    """``actr checkpoints [list] ID`` or ``actr checkpoints [list] --bundle PATH``."""
    from ctl import render

    if (args.id is None) == (args.bundle is None):
        raise UsageError(
            "checkpoints: give a container ID or --bundle PATH, e.g. actr checkpoints ID"
            if args.id is None
            else "checkpoints: give a container ID or --bundle PATH, not both"
        )
    with connect(args) as client:
        if args.bundle is not None:
            # Absolute here, because the daemon resolves paths in its own working directory.
            checkpoints = client.list_checkpoints(bundle=os.path.abspath(args.bundle))
        else:
            checkpoints = client.list_checkpoints(args.id)
    if args.json:
        sys.stdout.write(render.json_line(checkpoints) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in render.checkpoints_lines(checkpoints)))
    return 0


def create_checkpoint(args: argparse.Namespace) -> int:
    """``actr checkpoints create``: prints the name and how long the dump took."""
    from ctl import render

    started = time.monotonic()
    with connect(args) as client:
        checkpoint = client.create_checkpoint(
            args.id, args.name, tcp=args.tcp, unix_sockets=args.unix_sockets, shell=args.shell, exit=args.exit
        )
    if args.json:
        sys.stdout.write(render.json_line(checkpoint) + "\n")
    else:
        sys.stdout.write(f"{checkpoint.name} ({time.monotonic() - started:.2f} s)\n")
    return 0


def delete_checkpoint(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.delete_checkpoint(args.id, args.name)
    return 0
