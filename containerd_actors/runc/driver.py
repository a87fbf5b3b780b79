"""Async wrapper of the runc CLI.

It knows nothing of nng, actors or messages, so it can be tested against runc alone. runc is
started with ``spawn.run`` (posix_spawn, then a pidfd in trio's epoll): ``subprocess`` timeouts
poll and snap to 31/63/113 ms, which would dominate a 40 ms container start, and
``trio.run_process`` pays a worker-thread hand-off on every call.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path

import attrs

from containerd_actors.host.fds import describe_os_error, read_small
from containerd_actors.runc import spawn
from containerd_actors.runc.sealed_binary import named_link, sealed_binary


class RuncError(Exception):
    """runc exited non-zero; ``message`` is runc's own explanation (its error log lines)."""

    def __init__(self, command: str, returncode: int, message: str) -> None:
        super().__init__(f"runc {command} failed (exit {returncode}): {message}")
        self.command = command
        self.returncode = returncode
        self.message = message


class RuncTimeout(RuncError):
    """runc did not finish within the allowed time and was killed."""


class RuncUnavailable(RuncError):
    """runc could not even be started: the server is out of descriptors (EMFILE) or memory.

    A RuncError, so that a pause, a checkpoint or any other request is answered with runc's failure
    instead of crashing its actor (a crashed actor is restarted, but the client gets only "internal
    error", and restarts are limited); nothing was done, so trying again later is safe.
    """


#: A dump writes the container's memory to disk, which can take far longer than a start.
CHECKPOINT_TIMEOUT_S = 300.0
#: How much of CRIU's log an error message carries: the reason is in the last lines.
CRIU_LOG_TAIL_LINES = 8


@attrs.frozen
class CriuOptions:
    """The CRIU switches a checkpoint was taken with; a restore must repeat them."""

    tcp_established: bool = False
    ext_unix_sk: bool = False
    shell_job: bool = False

    def checkpoint_flags(self) -> list[str]:
        flags = []
        if self.tcp_established:
            flags.append("--tcp-established")
        if self.ext_unix_sk:
            flags.append("--ext-unix-sk")
        if self.shell_job:
            flags.append("--shell-job")
        return flags

    def restore_flags(self) -> list[str]:
        """No --shell-job: runc containers run in their own session, and restore -d fails with it."""
        return [flag for flag in self.checkpoint_flags() if flag != "--shell-job"]


def _with_criu_log(message: str, work_path: Path, log_name: str) -> str:
    """runc only says "criu failed"; CRIU's own reason is at the end of its log in the work path."""
    try:
        lines = (work_path / log_name).read_text(errors="replace").splitlines()
    except OSError:
        return message
    errors = [line for line in lines if "Error" in line or "error" in line]
    tail = errors[-CRIU_LOG_TAIL_LINES:] or lines[-CRIU_LOG_TAIL_LINES:]
    return message + "; criu: " + " | ".join(line.strip() for line in tail)


@attrs.frozen
class ListedContainer:
    """One entry of ``runc list``: runc's own view of a container under our root."""

    id: str
    #: ``created``, ``running``, ``paused`` or ``stopped``.
    status: str
    #: The init's pid; 0 once it has stopped.
    pid: int
    bundle: str


#: ``runc list`` reads the root's entries, then each one's state: a container deleted in between
#: (by a concurrent ``runc delete``) fails the whole listing, and the next one no longer sees it.
LIST_ATTEMPTS = 5
#: ``--root`` is looked for among this many first arguments (and bytes) of a command line.
ROOT_SCAN_ARGS = 4
ROOT_SCAN_BYTES = 4096


@attrs.frozen
class Stdio:
    """File descriptors runc hands to the container's init (pass-through mode, no terminal)."""

    stdin: int
    stdout: int
    stderr: int


def _error_lines(log_text: str, command: str) -> str:
    """The error messages of runc's JSON log (or its raw text); empty when it said nothing.

    runc's fatal line repeats what the caller already says (``runc run failed: ...``), so that
    prefix is dropped: the error then reads "runc run failed: <reason>" once, not twice.
    """
    messages = []
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip():
                messages.append(line.strip())
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            messages.append(str(entry.get("msg", "")))
    own_prefix = f"runc {command} failed: "
    text = "; ".join(message.removeprefix(own_prefix) for message in messages) or log_text.strip()
    return text.removeprefix(own_prefix)


def _how_it_ended(returncode: int) -> str:
    """What the daemon knows of a runc that gave no reason: its exit status, or the signal."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"runc was killed by {name}"
    return f"runc exited with status {returncode}"


class Runc:
    """One runc binary bound to one ``--root`` (a directory only this daemon uses)."""

    def __init__(
        self, root: Path, binary: str = "runc", timeout: float = 15.0, exe_link: Path | None = None
    ) -> None:
        self.root = root
        self.binary = binary
        self.timeout = timeout
        self._sealed = sealed_binary(binary)
        #: A symlink named like the binary, through which the sealed copy is executed (None: the
        #: copy's own /proc path), and the copy it points at now.
        self._exe_link = exe_link
        self._linked: tuple[str, str | None] | None = None

    def _executable(self) -> str | None:
        """What to execute for runc: the sealed copy, through ``exe_link`` when one is given."""
        copy = self._sealed.executable()
        if copy is None or self._exe_link is None:
            return copy
        if self._linked is None or self._linked[0] != copy:
            linked = named_link(self._exe_link, copy)
            self._linked = (copy, str(self._exe_link) if linked else None)
        return self._linked[1] or copy

    def _argv(self, *args: str, log_file: Path | None = None) -> list[str]:
        argv = [self.binary, "--root", str(self.root)]
        if log_file is not None:
            argv += ["--log", str(log_file), "--log-format", "json"]
        argv += args
        return argv

    async def _run_captured(self, command: str, args: Sequence[str], timeout: float | None = None) -> bytes:
        """Run a runc command whose stdout/stderr are ours to read (not a container's)."""
        argv = self._argv(command, *args)
        timeout = timeout or self.timeout
        try:
            result = await spawn.run(argv, capture=True, timeout=timeout, executable=self._executable())
        except spawn.SpawnTimeout:
            raise RuncTimeout(command, -9, f"no answer within {timeout:g} s") from None
        except OSError as exc:
            reason = f"runc could not be started: {describe_os_error(exc)}"
            raise RuncUnavailable(command, -1, reason) from None
        if result.returncode != 0:
            message = _error_lines(result.stderr.decode(errors="replace"), command)
            raise RuncError(
                command,
                result.returncode,
                message or f"{_how_it_ended(result.returncode)} and printed nothing",
            )
        return result.stdout

    async def run_detached(
        self,
        id: str,
        bundle: Path,
        pid_file: Path,
        log_file: Path,
        stdio: Stdio,
        console_socket: Path | None = None,
    ) -> int:
        """``runc run -d``: returns the init pid once runc has exec'd the container process.

        The container inherits ``stdio`` and so does runc itself, which is why runc's errors are
        read from ``log_file`` and never from the container's stderr. A bundle whose process asks
        for a terminal needs ``console_socket``: runc sends the pty master there, and ``stdio``
        then only serves runc itself.
        """
        args = ["run", "--detach", "--pid-file", str(pid_file), "--bundle", str(bundle)]
        args += _console_args(console_socket)
        argv = self._argv(*args, id, log_file=log_file)
        return await self._run_detached_command("run", argv, stdio, pid_file, log_file)

    async def _run_detached_command(
        self,
        command: str,
        argv: list[str],
        stdio: Stdio,
        pid_file: Path,
        log_file: Path,
        criu_log: Path | None = None,
    ) -> int:
        """Run a runc command that leaves a process behind, and return that process's pid.

        The process inherits ``stdio``; runc's own errors come from its JSON log file.
        """
        try:
            result = await spawn.run(
                argv,
                stdin=stdio.stdin,
                stdout=stdio.stdout,
                stderr=stdio.stderr,
                timeout=self.timeout,
                executable=self._executable(),
            )
        except spawn.SpawnTimeout:
            raise RuncTimeout(
                command, -9, f"runc {command} did not finish within {self.timeout:g} s"
            ) from None
        if result.returncode != 0:
            message = _read_log(log_file, command, result.returncode)
            if criu_log is not None:
                message = _with_criu_log(message, criu_log.parent, criu_log.name)
            raise RuncError(command, result.returncode, message)
        return int(read_small(pid_file))

    async def restore_detached(
        self,
        id: str,
        bundle: Path,
        image_path: Path,
        work_path: Path,
        pid_file: Path,
        log_file: Path,
        stdio: Stdio,
        options: CriuOptions,
        console_socket: Path | None = None,
    ) -> int:
        """``runc restore -d``: CRIU maps the recorded stdio pipes onto runc's own fds 0-2.

        A container dumped with a terminal is restored with ``console_socket``: CRIU hands runc
        a new pty master for the restored slave, and runc sends it there.
        """
        argv = self._argv(
            "restore",
            "--detach",
            "--image-path",
            str(image_path),
            "--work-path",
            str(work_path),
            "--pid-file",
            str(pid_file),
            "--bundle",
            str(bundle),
            *options.restore_flags(),
            *_console_args(console_socket),
            id,
            log_file=log_file,
        )
        return await self._run_detached_command(
            "restore", argv, stdio, pid_file, log_file, criu_log=work_path / "restore.log"
        )

    async def exec_detached(
        self,
        id: str,
        process_file: Path,
        pid_file: Path,
        log_file: Path,
        stdio: Stdio,
        console_socket: Path | None = None,
    ) -> int:
        """``runc exec -d --process FILE``: returns the new process's pid once runc has started it.

        As with ``run -d`` the process inherits ``stdio`` (pass-through), unless the process spec
        asks for a terminal: then runc sends the pty master over ``console_socket`` and ``stdio``
        only serves runc itself. When runc exits, the process is re-parented to the nearest child
        subreaper (the daemon), which can then wait for it like for a container's init.
        """
        args = ["exec", "--detach", "--process", str(process_file), "--pid-file", str(pid_file)]
        args += _console_args(console_socket)
        argv = self._argv(*args, id, log_file=log_file)
        return await self._run_detached_command("exec", argv, stdio, pid_file, log_file)

    async def checkpoint(
        self,
        id: str,
        image_path: Path,
        work_path: Path,
        options: CriuOptions,
        leave_running: bool,
        page_server: str | None = None,
    ) -> None:
        """``runc checkpoint``; on failure the message ends with the tail of CRIU's dump log.

        With ``page_server`` (``ADDRESS:PORT``) CRIU sends the memory pages there instead of
        writing them into ``image_path``."""
        args = ["--image-path", str(image_path), "--work-path", str(work_path), *options.checkpoint_flags()]
        if leave_running:
            args.append("--leave-running")
        if page_server is not None:
            args += ["--page-server", page_server]
        try:
            await self._run_captured("checkpoint", [*args, id], timeout=CHECKPOINT_TIMEOUT_S)
        except RuncTimeout:
            raise
        except RuncError as exc:
            raise RuncError(
                "checkpoint", exc.returncode, _with_criu_log(exc.message, work_path, "dump.log")
            ) from None

    async def pause(self, id: str) -> None:
        await self._run_captured("pause", [id])

    async def resume(self, id: str) -> None:
        await self._run_captured("resume", [id])

    async def delete(self, id: str, force: bool = False) -> None:
        await self._run_captured("delete", ["--force", id] if force else [id])

    async def list(self) -> list[ListedContainer]:
        """Every container runc knows under our root (entries without a readable state are skipped)."""
        for attempt in range(LIST_ATTEMPTS):
            try:
                raw = await self._run_captured("list", ["--format", "json"])
                break
            except RuncError as exc:
                if attempt + 1 == LIST_ATTEMPTS or "no such file or directory" not in exc.message:
                    raise
        try:
            entries = json.loads(raw or b"null") or []
            return [
                ListedContainer(
                    str(entry["id"]), str(entry["status"]), int(entry.get("pid") or 0), str(entry["bundle"])
                )
                for entry in entries
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RuncError("list", 0, f"unreadable output ({exc!r}): {raw[:200]!r}") from None

    async def ps(self, id: str) -> list[int]:
        """The host pids of every process in the container's cgroup (the init's children too)."""
        raw = await self._run_captured("ps", ["--format", "json", id])
        try:
            return [int(pid) for pid in json.loads(raw or b"null") or []]
        except (ValueError, TypeError) as exc:
            raise RuncError("ps", 0, f"unreadable output ({exc!r}): {raw[:200]!r}") from None

    def working_processes(self) -> list[int]:
        """The runc commands still running under our root, whoever started them.

        A server killed while ``runc run`` or ``runc exec`` works leaves that runc running (it
        finishes, or is killed when its timeout would have been); its result must be awaited
        before anyone decides from ``runc list`` what exists. A command is recognised by
        ``--root <our root>`` among its first arguments, so a wrapper script given as the runtime
        (``/bin/sh wrapper --root ...``) is found as well as runc itself.
        """
        root = str(self.root).encode()
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                    argv = cmdline.read(ROOT_SCAN_BYTES + len(root)).split(b"\0")[:ROOT_SCAN_ARGS]
            except OSError:
                continue  # gone, or not ours to read
            if any(argv[i] == b"--root" and argv[i + 1] == root for i in range(len(argv) - 1)):
                found.append(int(entry.name))
        return found


def _console_args(console_socket: Path | None) -> list[str]:
    return [] if console_socket is None else ["--console-socket", str(console_socket)]


def _read_log(log_file: Path, command: str, returncode: int) -> str:
    """runc's reason from its log file, or what is known when it wrote none."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError as exc:
        return f"{_how_it_ended(returncode)} and left no log at {log_file} ({exc.strerror})"
    return _error_lines(text, command) or f"{_how_it_ended(returncode)} and wrote nothing to {log_file}"
