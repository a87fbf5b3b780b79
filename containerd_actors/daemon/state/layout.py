"""Layout of the state directory, and atomic writes into it.

Every path the daemon uses under its state directory is named here.

``<state-dir>/containers/<id>/`` holds what a restarted daemon needs to find a container again
(``container.json``, one ``exec-<pid>.process.json`` per exec'd process), runc's logs, CRIU's
work directory and the intent records of the steps in flight (``intent-*.json``, see ``Intent``);
it is removed when the container exits.
``<state-dir>/logs/<id>/`` holds the stdout/stderr logs of its init (``stdout.log``) and of each
exec'd process (``exec-<pid>.stdout.log``), each with its rotated generation (``<log>.1``) and,
once it has rotated, the offset it carries on from (``<log>.base``, see ``log_rotation_record``);
they stay readable after the exit, until the id is reused or the daemon forgets the oldest exited
containers. An exited container's ``exited.json`` lies with its logs (see ``ExitedRecord``), so a
restarted daemon serves them as before and goes on pruning them; so does an exited exec'd
process's ``exec-<pid>.exited.json`` while its container runs on. ``<state-dir>/events/`` is the event
journal (see ``journal``), which carries event ``seq`` numbers across restarts. Records are
written to a temp file and renamed, so a crash leaves either the old record or the new one,
never half of one.

Why one module of ~500 lines: it is the state directory's one map, every name and every record's
format that start-up recovery reads back; kept together, a change to one record is checked against
the names and the write rule the others follow. The code that acts on the records (recovery,
reconcile, the exited containers' pruning) lives in modules of its own.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from containerd_actors.daemon.state.space import is_space_error, space_of, state_dir_space

log = logging.getLogger(__name__)


def json_object(raw: Any, what: str = "") -> dict[str, Any]:
    """``raw`` if it is a JSON object, else ValueError (naming ``what`` inside a record)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{what} is not a JSON object" if what else "not a JSON object")
    return raw


@attrs.frozen
class ContainerPaths:
    """``directory`` lives as long as the container; ``logs`` outlives it (until the id is reused).

    The file paths a start uses are computed once here: a start reads them several times, and
    building a ``Path`` each time was a few percent of the daemon's CPU per start.
    """

    directory: Path
    logs: Path
    record: Path
    pid_file: Path
    runc_log: Path
    stdout_log: Path
    stderr_log: Path

    @classmethod
    def of(cls, directory: Path, logs: Path) -> ContainerPaths:
        return cls(
            directory,
            logs,
            record=child_path(directory, "container.json"),
            pid_file=child_path(directory, "init.pid"),
            runc_log=child_path(directory, "runc.log"),
            stdout_log=child_path(logs, "stdout.log"),
            stderr_log=child_path(logs, "stderr.log"),
        )

    @property
    def runc_bundle(self) -> Path:
        """A copy of the bundle's config with the terminal the client asked for (``start -t/-T``)."""
        return self.directory / "bundle"

    @property
    def criu_work(self) -> Path:
        """Where CRIU writes its logs during a dump or a restore."""
        return self.directory / "criu-work"

    def exec_files(self, number: int) -> tuple[Path, Path, Path]:
        """The process spec, pid file and runc log of the ``number``-th ``runc exec`` (gone after it)."""
        stem = f"exec-{number}"
        return (
            self.directory / f"{stem}.json",
            self.directory / f"{stem}.pid",
            self.directory / f"{stem}.runc.log",
        )

    def intent(self, op: str, number: int | None = None) -> Path:
        """Where the intent of ``op`` lives while the step runs (an exec's carries its number)."""
        suffix = "" if number is None else f"-{number}"
        return self.directory / f"intent-{op}{suffix}.json"

    def intents(self) -> list[Path]:
        return sorted(self.directory.glob("intent-*.json"))

    def exec_records(self) -> list[Path]:
        return sorted(self.directory.glob("exec-*.process.json"))

    def exec_record(self, pid: int) -> Path:
        """What a new server needs to re-track an exec'd process (its ProcessInfo and start time)."""
        return self.directory / f"exec-{pid}.process.json"

    def exec_logs(self, pid: int) -> tuple[Path, Path]:
        return self.logs / f"exec-{pid}.stdout.log", self.logs / f"exec-{pid}.stderr.log"

    def exec_exited_record(self, pid: int) -> Path:
        """An exited exec'd process's ``ExitedProcess``, so its logs stay readable after a restart
        while its container runs on (its ``exec_record`` is gone with the process)."""
        return self.logs / f"exec-{pid}.exited.json"

    def exec_file_pids(self) -> set[int]:
        """The pids that have any file in ``logs`` (logs, rotated logs, exited records); none
        when the directory does not exist."""
        try:
            names = os.listdir(self.logs)
        except FileNotFoundError:
            return set()
        pids = set()
        for name in names:
            if name.startswith("exec-"):
                number = name[5:].partition(".")[0]
                if number.isdigit():
                    pids.add(int(number))
        return pids

    def exec_exited_records(self) -> list[Path]:
        return sorted(self.logs.glob("exec-*.exited.json"))

    @property
    def exited_record(self) -> Path:
        """Beside the logs, not in ``directory``: it lives exactly as long as they do."""
        return self.logs / EXITED_RECORD

    def create(self) -> None:
        """Exclusive: an existing directory means the id is taken (possibly by a previous daemon).

        The logs of an earlier container with the same id are removed: the id is being reused.
        """
        os.mkdir(self.directory, 0o700)
        try:
            os.mkdir(self.logs, 0o700)
        except FileExistsError:  # the id is reused: its earlier logs go (rare; a mkdir is the usual case)
            self.remove_logs()
            self.logs.mkdir(mode=0o700, parents=True)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def remove_logs(self) -> None:
        shutil.rmtree(self.logs, ignore_errors=True)

    @property
    def state_dir(self) -> Path:
        return self.directory.parent.parent


@attrs.frozen
class ContainerRecord:
    """What ``container.json`` holds: enough for a new server to find the container again.

    ``pid_start_time`` pins the pid: after a reboot or a long outage the same pid may be another
    process, and a record must never adopt a stranger.
    """

    id: str
    bundle: str
    pid: int
    pid_start_time: int | None
    created: float
    #: The init has a pty (its master is the one end the reaper keeps); absent in older records.
    terminal: bool = False
    #: The ``request_id`` of the CreateContainer that made it: the same request repeated (a
    #: client that lost the reply) is answered with this container's pid, not ``already_exists``.
    #: None in records of older daemons and of containers adopted from runc alone.
    request_id: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> ContainerRecord:
        """Raises ValueError on anything but a well-formed record."""
        raw = json_object(raw)
        try:
            record = cls(
                id=str(raw["id"]),
                bundle=str(raw["bundle"]),
                pid=int(raw["pid"]),
                pid_start_time=None if raw.get("pid_start_time") is None else int(raw["pid_start_time"]),
                created=float(raw["created"]),
                terminal=raw.get("terminal") is True,
                request_id=None if raw.get("request_id") is None else str(raw["request_id"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or mistyped field: {exc}") from None
        if record.pid <= 1:
            raise ValueError(f"implausible pid {record.pid}")
        return record

    def write(self, paths: ContainerPaths) -> None:
        write_json_atomically(paths.record, attrs.asdict(self))


def log_rotation_record(log_path: Path) -> Path:
    """Where a rotating log says at which logical offset its files start, so a restarted daemon
    (or a reader of an exited container) counts offsets on from there instead of from 0."""
    return log_path.with_name(log_path.name + ".base")


#: What each file of one rotating log adds to its name: the current one, the rotated
#: generation, the rotation record (``log_rotation_record``).
LOG_FILE_SUFFIXES = ("", ".1", ".base")


def log_files(log_path: Path) -> tuple[Path, Path, Path]:
    """Every file of one rotating log: the current one, the rotated generation, the rotation record."""
    return log_path, log_path.with_name(log_path.name + ".1"), log_rotation_record(log_path)


@attrs.frozen
class LogRange:
    """A finished log's logical offsets: ``base`` is the first byte of its current file."""

    base: int
    end: int

    @classmethod
    def parse(cls, raw: Any) -> LogRange:
        raw = json_object(raw, "a log range")
        log_range = cls(base=int(raw["base"]), end=int(raw["end"]))
        if not 0 <= log_range.base <= log_range.end:
            raise ValueError(f"implausible log range {log_range}")
        return log_range


@attrs.frozen
class ExitedProcess:
    """One process of an exited container whose output stays readable (its logs' ranges)."""

    pid: int
    init: bool
    terminal: bool
    #: None: the exit could not be observed (see the ``exit`` event's reason), or it never came.
    status: int | None
    stdout: LogRange
    stderr: LogRange

    @classmethod
    def parse(cls, raw: Any) -> ExitedProcess:
        raw = json_object(raw, "a process")
        status = raw.get("status")
        return cls(
            pid=int(raw["pid"]),
            init=raw.get("init") is True,
            terminal=raw.get("terminal") is True,
            status=None if status is None else int(status),
            stdout=LogRange.parse(raw["stdout"]),
            stderr=LogRange.parse(raw["stderr"]),
        )

    def write(self, path: Path) -> None:
        write_json_atomically(path, attrs.asdict(self))


@attrs.frozen
class ExitedRecord:
    """What ``logs/<id>/exited.json`` holds: what is left of an exited container.

    Enough to serve its logs, byte for byte, and list its checkpoints (through its bundle) after
    a restart, and to prune the oldest exited containers in the order they exited.
    """

    id: str
    bundle: str
    init_pid: int
    status: int | None
    exited: float
    processes: tuple[ExitedProcess, ...]

    @classmethod
    def parse(cls, raw: Any) -> ExitedRecord:
        """Raises ValueError on anything but a well-formed record."""
        raw = json_object(raw)
        try:
            status = raw.get("status")
            record = cls(
                id=str(raw["id"]),
                bundle=str(raw["bundle"]),
                init_pid=int(raw["init_pid"]),
                status=None if status is None else int(status),
                exited=float(raw["exited"]),
                processes=tuple(ExitedProcess.parse(p) for p in raw["processes"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or mistyped field: {exc}") from None
        if not any(p.init and p.pid == record.init_pid for p in record.processes):
            raise ValueError("the init is not among the processes")
        return record

    def write(self, paths: ContainerPaths) -> None:
        write_json_atomically(paths.exited_record, attrs.asdict(self))


def read_exited_records(state_dir: Path) -> list[ExitedRecord]:
    """Every exited container's record, oldest exit first; an unreadable one is logged and skipped
    (its logs are left alone: nothing would serve them, but they may matter to an operator)."""
    records = []
    for path in (state_dir / LOGS).glob(f"*/{EXITED_RECORD}"):
        try:
            record = ExitedRecord.parse(json.loads(path.read_bytes()))
        except (OSError, ValueError) as exc:
            log.warning("state: ignoring unreadable %s: %s", path, exc)
            continue
        if record.id != path.parent.name:
            log.warning("state: ignoring %s, which names container %r", path, record.id)
            continue
        records.append(record)
    records.sort(key=lambda record: record.exited)
    return records


def unrecorded_log_dirs(state_dir: Path) -> list[tuple[float, str]]:
    """``(mtime, id)`` of the log directories of containers that are neither recorded as running
    nor as exited: left by a daemon that recorded no exits, or by an exit whose record could not
    be written. Nothing serves them, but they count towards the exited containers kept, so the
    log directories stay bounded."""
    found = []
    try:
        entries = list(os.scandir(state_dir / LOGS))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        logs = Path(entry.path)
        if (logs / EXITED_RECORD).exists() or (state_dir / CONTAINERS / entry.name).exists():
            continue
        try:
            found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
        except OSError:
            continue
    return sorted(found)


class IntentOp:
    """The steps that create or destroy something outside the daemon, each announced by an intent."""

    START = "start"
    RESTORE = "restore"
    EXEC = "exec"
    CHECKPOINT_EXIT = "checkpoint-exit"
    DELETE = "delete"

    ALL = (START, RESTORE, EXEC, CHECKPOINT_EXIT, DELETE)


@attrs.frozen
class Intent:
    """A step in flight: written (atomically) before runc is run, removed once the step is over.

    A server killed in between leaves it behind, and the next server's reconcile (``recovery``)
    learns from it what runc may have done that no other record says: a container that runs
    with no ``container.json`` yet (and which request made it), an exec'd process whose pid
    only runc's pid file knows, a delete or a checkpoint that may have removed the container.
    """

    op: str
    id: str
    bundle: str
    request_id: str | None = None
    #: An exec's number: its process spec, pid file and runc log are ``ContainerPaths.exec_files(number)``.
    number: int | None = None
    #: The checkpoint a restore starts from or a checkpoint with ``exit`` writes.
    checkpoint: str | None = None
    #: The key under which the reaper holds the pipe ends of the process being started, if any.
    kept_key: str | None = None
    created: float = attrs.field(factory=time.time)

    @classmethod
    def parse(cls, raw: Any) -> Intent:
        """Raises ValueError on anything but a well-formed intent."""
        raw = json_object(raw)

        def optional(key: str, kind: type) -> Any:
            return None if raw.get(key) is None else kind(raw[key])

        try:
            intent = cls(
                op=str(raw["op"]),
                id=str(raw["id"]),
                bundle=str(raw["bundle"]),
                request_id=optional("request_id", str),
                number=optional("number", int),
                checkpoint=optional("checkpoint", str),
                kept_key=optional("kept_key", str),
                created=float(raw["created"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or mistyped field: {exc}") from None
        if intent.op not in IntentOp.ALL:
            raise ValueError(f"unknown operation {intent.op!r}")
        if (intent.op == IntentOp.EXEC) != (intent.number is not None):
            raise ValueError("an exec intent, and only one, carries a number")
        return intent

    def write(self, paths: ContainerPaths) -> Path:
        """Announce the step; returns the path to ``complete`` once it is over."""
        path = paths.intent(self.op, self.number)
        write_json_atomically(path, attrs.asdict(self))
        return path


def complete_intent(path: Path) -> None:
    """The step is over (done or undone): nothing is left for a reconcile to find out."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_intent(path: Path) -> Intent:
    """Raises ValueError (or OSError) when the file is not a well-formed intent."""
    return Intent.parse(json.loads(path.read_bytes()))


#: ``json.dumps`` with any option builds an encoder per call; two records per start share this one.
_RECORD_ENCODER = json.JSONEncoder(sort_keys=True)


def write_json_atomically(path: Path, value: Any) -> None:
    """Write-then-rename: a daemon killed mid-write leaves the old record or the new one.

    No fsync: it would only help across a kernel crash or power loss, after which every
    container is gone anyway, and on a disk-backed state directory it would stall the event
    loop for milliseconds on every container start.

    A write that fails or comes up short (a full state directory) removes the temp file and
    raises ``OSError`` naming ``path``, so the caller can refuse cleanly; a space error also marks
    the state directory full (see ``space``).
    """
    directory, name = os.path.split(path)  # strings: no Path made on every start's two writes
    tmp = os.path.join(directory, f".{name}.tmp")
    data = _RECORD_ENCODER.encode(value).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_space_error(exc):
            space_of(Path(directory)).report_failure(exc, f"writing {path}")
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc


CONTAINERS = "containers"
LOGS = "logs"
EXITED_RECORD = "exited.json"
RUNC_ROOT = "runc"
#: Notes of exits on their way to the journal (``state/exit_notes.py``).
EXITS = "exits"
#: What a migration in progress has received, one directory per migration (its token); emptied at
#: start-up, since a migration does not outlive the server that received it.
INCOMING = "incoming"
#: The bundles of containers that arrived by migration (``<id>.<token>/``: config.json, and the
#: rootfs when it was copied).
MIGRATED = "migrated"


def incoming_dir(state_dir: Path, token: str) -> Path:
    return state_dir / INCOMING / token


def migrated_bundle(state_dir: Path, id: str, token: str) -> Path:
    return state_dir / MIGRATED / f"{id}.{token}"


def container_paths(state_dir: Path, id: str) -> ContainerPaths:
    containers, logs = _parent_dirs(state_dir)
    return ContainerPaths.of(child_path(containers, id), child_path(logs, id))


def _join(parent: Path, name: str) -> Path:
    return parent / name


#: ``parent / name`` for a plain name (no separator, not ``..``), without parsing ``name`` again:
#: pathlib's own way of making a directory's entries (3.11: about 0.3 us, against 1.3 us for
#: ``/``). A start makes nine such paths. Falls back to ``/`` where pathlib has no such method.
child_path: Callable[[Path, str], Path] = getattr(Path, "_make_child_relpath", _join)


@functools.lru_cache(maxsize=8)
def _parent_dirs(state_dir: Path) -> tuple[Path, Path]:
    """``containers/`` and ``logs/`` of a state directory, joined once (every start needs both)."""
    return state_dir / CONTAINERS, state_dir / LOGS


def prepare_state_dir(state_dir: Path) -> None:
    """Make the directories, and name the state directory whose space every writer below shares."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir_space(state_dir)
    for name in (CONTAINERS, LOGS, RUNC_ROOT, MIGRATED):
        (state_dir / name).mkdir(mode=0o700, exist_ok=True)
    # A migration's parts outlive only a server killed while receiving them: nobody will finish it.
    shutil.rmtree(state_dir / INCOMING, ignore_errors=True)
    (state_dir / INCOMING).mkdir(mode=0o700)
