"""Checkpoints: taken with CRIU through runc, kept in ``<bundle>/checkpoints/<name>/`` with the
options they were taken with.

The original dropped the CRIU options before CRIU saw them and never stored them, so listings
always said false. Here the options go to CRIU and into ``checkpoint.json`` beside the images,
and a listing reads them back. A dump is written into a hidden temporary directory and renamed
into place only when it succeeded, so a failed or interrupted dump leaves nothing half-written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from containerd_actors.daemon.container.deps import ContainerRuntime
from containerd_actors.daemon.mailbox import CommandError
from containerd_actors.daemon.state.layout import (
    ContainerPaths,
    Intent,
    IntentOp,
    complete_intent,
    write_json_atomically,
)
from containerd_actors.host.fds import is_fd_limit_error
from containerd_actors.protocol import Checkpoint, CreateCheckpoint, ErrorCode
from containerd_actors.runc.driver import CriuOptions, RuncError

log = logging.getLogger(__name__)

METADATA = "checkpoint.json"


def checkpoints_dir(bundle: Path) -> Path:
    return bundle / "checkpoints"


def criu_options(checkpoint: Checkpoint) -> CriuOptions:
    return CriuOptions(
        tcp_established=checkpoint.tcp, ext_unix_sk=checkpoint.unix_sockets, shell_job=checkpoint.shell
    )


def read_checkpoint(bundle: Path, name: str) -> Checkpoint:
    """The stored checkpoint ``name``; NOT_FOUND when it (or its metadata) is missing."""
    directory = checkpoints_dir(bundle) / name
    try:
        raw = json.loads((directory / METADATA).read_text())
        return Checkpoint(
            name=name,
            tcp=bool(raw["tcp"]),
            unix_sockets=bool(raw["unix_sockets"]),
            shell=bool(raw["shell"]),
            exit=bool(raw["exit"]),
            created=float(raw["created"]),
        )
    except FileNotFoundError:
        raise CommandError(
            ErrorCode.NOT_FOUND, f"no checkpoint {name!r} in {checkpoints_dir(bundle)}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if is_fd_limit_error(exc):
            raise  # the server's limit: the checkpoint is fine (the start answers it)
        raise CommandError(
            ErrorCode.NOT_FOUND, f"checkpoint {name!r} has unreadable metadata: {exc}"
        ) from None


def checkpoint_terminal(bundle: Path, name: str) -> bool | None:
    """Whether the dumped init had a pty (its restore needs a console socket); None if not recorded."""
    try:
        raw = json.loads((checkpoints_dir(bundle) / name / METADATA).read_text())
    except (OSError, ValueError) as exc:
        if is_fd_limit_error(exc):
            raise  # not "unrecorded": a restore with the wrong stdio would fail obscurely
        return None
    terminal = raw.get("terminal") if isinstance(raw, dict) else None
    return terminal if isinstance(terminal, bool) else None


def list_checkpoints(bundle: Path) -> list[Checkpoint]:
    """Every complete checkpoint, oldest first; temporary and foreign directories are skipped."""
    found = []
    try:
        entries = list(os.scandir(checkpoints_dir(bundle)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            found.append(read_checkpoint(bundle, entry.name))
        except CommandError:
            continue
    return sorted(found, key=lambda checkpoint: (checkpoint.created, checkpoint.name))


@contextmanager
def new_checkpoint_dir(bundle: Path, name: str) -> Iterator[Path]:
    """A private directory for CRIU to dump into; the caller publishes it with ``publish_checkpoint``.

    Whatever is left of it when the block ends (a failed dump) is removed.
    """
    parent = checkpoints_dir(bundle)
    if (parent / name).exists():
        raise CommandError(ErrorCode.ALREADY_EXISTS, f"checkpoint {name!r} already exists in {parent}")
    parent.mkdir(mode=0o700, exist_ok=True)
    temporary = parent / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    temporary.mkdir(mode=0o700)
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def publish_checkpoint(bundle: Path, temporary: Path, checkpoint: Checkpoint, terminal: bool = False) -> None:
    """Record the options (and whether the init had a terminal) beside the images, then rename
    the whole directory into place."""
    write_json_atomically(
        temporary / METADATA,
        {
            "tcp": checkpoint.tcp,
            "unix_sockets": checkpoint.unix_sockets,
            "shell": checkpoint.shell,
            "exit": checkpoint.exit,
            "created": checkpoint.created,
            "terminal": terminal,
        },
    )
    target = checkpoints_dir(bundle) / checkpoint.name
    try:
        os.rename(temporary, target)
    except OSError:
        raise CommandError(
            ErrorCode.ALREADY_EXISTS, f"checkpoint {checkpoint.name!r} appeared while dumping; not replaced"
        ) from None


def delete_checkpoint(bundle: Path, name: str) -> None:
    read_checkpoint(bundle, name)  # NOT_FOUND unless it is a real checkpoint
    target = checkpoints_dir(bundle) / name
    doomed = target.with_name(f".{name}.{uuid.uuid4().hex[:8]}.deleting")
    os.rename(target, doomed)  # atomic: a listing never sees a half-deleted checkpoint
    shutil.rmtree(doomed, ignore_errors=True)


def fresh_criu_work_dir(paths: ContainerPaths) -> Path:
    """CRIU writes its logs here; each operation starts from an empty one so a log tail is its own."""
    shutil.rmtree(paths.criu_work, ignore_errors=True)
    paths.criu_work.mkdir(mode=0o700)
    return paths.criu_work


async def take_checkpoint(
    runtime: ContainerRuntime,
    id: str,
    bundle: Path,
    paths: ContainerPaths,
    request: CreateCheckpoint,
    terminal: bool = False,
) -> Checkpoint:
    """Dump with CRIU into a new checkpoint of ``bundle``; with ``exit``, the container is gone after.

    The container actor waits for this while other containers carry on: a dump of one container
    holds only its own mailbox.
    """
    record = Checkpoint(
        name=request.name,
        tcp=request.tcp,
        unix_sockets=request.unix_sockets,
        shell=request.shell,
        exit=request.exit,
        created=time.time(),
    )
    with new_checkpoint_dir(bundle, request.name) as images:
        # With ``exit`` the dump ends the container: a reconcile that finds it gone knows why.
        intent = _announce_checkpoint_exit(id, bundle, paths, request.name) if request.exit else None
        try:
            await runtime.checkpoint(
                id, images, fresh_criu_work_dir(paths), criu_options(record), leave_running=not request.exit
            )
        except RuncError as exc:
            raise CommandError(ErrorCode.RUNTIME_FAILED, f"checkpoint failed: {exc.message}") from None
        finally:
            if intent is not None:
                complete_intent(intent)
        publish_checkpoint(bundle, images, record, terminal)
    return record


def _announce_checkpoint_exit(id: str, bundle: Path, paths: ContainerPaths, name: str) -> Path | None:
    try:
        return Intent(IntentOp.CHECKPOINT_EXIT, id, str(bundle), checkpoint=name).write(paths)
    except OSError as exc:
        log.warning("container %s: cannot write the intent of its checkpoint: %s", id, exc)
        return None
