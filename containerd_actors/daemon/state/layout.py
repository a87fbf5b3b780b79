"""Layout of the state directory, and atomic writes into it.

Every path the daemon uses under its state directory is named here.

``<state-dir>/containers/<id>/`` holds what a restarted daemon needs to find a container again
(``container.json``, one ``exec-<pid>.process.json`` per exec'd process), runc's logs and CRIU's
work directory; it is removed when the container exits.
``<state-dir>/logs/<id>/`` holds the stdout/stderr logs of its init (``stdout.log``) and of each
exec'd process (``exec-<pid>.stdout.log``); they stay readable after the exit, until the id is
reused or the daemon forgets the oldest exited containers. ``<state-dir>/events/`` is the event
journal (see ``journal``), which carries event ``seq`` numbers across restarts. Records are
written to a temp file and renamed, so a crash leaves either the old record or the new one,
never half of one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import attrs

from containerd_actors.daemon.state.space import is_space_error, space_of, state_dir_space


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
            record=directory / "container.json",
            pid_file=directory / "init.pid",
            runc_log=directory / "runc.log",
            stdout_log=logs / "stdout.log",
            stderr_log=logs / "stderr.log",
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

    def exec_records(self) -> list[Path]:
        return sorted(self.directory.glob("exec-*.process.json"))

    def exec_record(self, pid: int) -> Path:
        """What a new server needs to re-track an exec'd process (its ProcessInfo and start time)."""
        return self.directory / f"exec-{pid}.process.json"

    def exec_logs(self, pid: int) -> tuple[Path, Path]:
        return self.logs / f"exec-{pid}.stdout.log", self.logs / f"exec-{pid}.stderr.log"

    def create(self) -> None:
        """Exclusive: an existing directory means the id is taken (possibly by a previous daemon).

        The logs of an earlier container with the same id are removed: the id is being reused.
        """
        self.directory.mkdir(mode=0o700)
        self.remove_logs()
        self.logs.mkdir(mode=0o700, parents=True)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def remove_logs(self) -> None:
        shutil.rmtree(self.logs, ignore_errors=True)


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

    @classmethod
    def parse(cls, raw: Any) -> ContainerRecord:
        """Raises ValueError on anything but a well-formed record."""
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        try:
            record = cls(
                id=str(raw["id"]),
                bundle=str(raw["bundle"]),
                pid=int(raw["pid"]),
                pid_start_time=None if raw.get("pid_start_time") is None else int(raw["pid_start_time"]),
                created=float(raw["created"]),
                terminal=raw.get("terminal") is True,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or mistyped field: {exc}") from None
        if record.pid <= 1:
            raise ValueError(f"implausible pid {record.pid}")
        return record


def write_json_atomically(path: Path, value: Any) -> None:
    """Write-then-rename: a daemon killed mid-write leaves the old record or the new one.

    No fsync: it would only help across a kernel crash or power loss, after which every
    container is gone anyway, and on a disk-backed state directory it would stall the event
    loop for milliseconds on every container start.

    A write that fails or comes up short (a full state directory) removes the temp file and
    raises ``OSError`` naming ``path``, so the caller can refuse cleanly; a space error also marks
    the state directory full (see ``space``).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    data = json.dumps(value, sort_keys=True).encode()
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
        tmp.unlink(missing_ok=True)
        if is_space_error(exc):
            space_of(path.parent).report_failure(exc, f"writing {path}")
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc


CONTAINERS = "containers"
LOGS = "logs"
RUNC_ROOT = "runc"


def container_paths(state_dir: Path, id: str) -> ContainerPaths:
    return ContainerPaths.of(state_dir / CONTAINERS / id, state_dir / LOGS / id)


def prepare_state_dir(state_dir: Path) -> None:
    """Make the directories, and name the state directory whose space every writer below shares."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir_space(state_dir)
    for name in (CONTAINERS, LOGS, RUNC_ROOT):
        (state_dir / name).mkdir(mode=0o700, exist_ok=True)
