"""The reaper: a small, long-lived parent that keeps containers safe while the API server restarts.

``containerd-actors`` starts as this process. It becomes the child subreaper, so every container
init that ``runc run -d`` orphans is re-parented here, and it runs the API server as its child.
When the server dies (a bug, an OOM kill, ``kill -9``), the reaper:

- keeps reaping: each container exit is recorded with its real status, in memory and in
  ``<state-dir>/reaper-exits.jsonl``, until a server acknowledges that it published the event;
- keeps every container's stdio pipe ends (sent to it with SCM_RIGHTS), so that no container gets
  SIGPIPE and no output pipe loses its reader;
- starts a new server and hands it the held pipe ends and the unacknowledged exits.

Under systemd it also stores every kept pipe end in the service manager's fd store, and takes them
back at its next start, so that even a kill of the whole tree keeps them (``reaper/fdstore.py``);
it is the one that tells systemd READY=1 and its status, so the unit needs only ``NotifyAccess=main``.

An upgrade (SIGUSR2, or ``containerd-actors upgrade``) goes one step further: the reaper stops the
server, then re-executes itself with the installed code, keeping its pid, its children, the state
directory's lock and every held pipe end (``reaper/handover.py``). The new reaper starts a new
server, which adopts the containers with their pipes, so their output flows on with no gap.

That is one process for all containers, instead of one shim per container. It is plain blocking
Python around ``select``: no trio, no nng, nothing that could fail in interesting ways. It uses
``waitpid(-1)``, which is safe here because its only children are the server and the orphans.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from containerd_actors import __version__
from containerd_actors.host.fd_limit import raise_soft_limit, restore_in_forked_child
from containerd_actors.host.fds import close_quietly
from containerd_actors.host.reaping import become_child_subreaper, exit_status_from_wait
from containerd_actors.host.sd_notify import NOTIFY_SOCKET_ENV, Notifier
from containerd_actors.reaper import wire
from containerd_actors.reaper.fdstore import FdStore, store_limit
from containerd_actors.reaper.handover import HANDOVER_ENV, Handover, undo_handover, write_handover

log = logging.getLogger("containerd_actors.reaper")

EXITS_FILE = "reaper-exits.jsonl"
#: What the reaper is now (pid, version, since when, its server and whether it serves): read by
#: ``containerd-actors upgrade`` to see the new version come up.
STATUS_FILE = "reaper.json"
#: A server that dies sooner than this after its start is restarted with a growing delay.
CRASH_WINDOW_S = 5.0
MAX_RESTART_DELAY_S = 5.0
HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)


class Reaper:
    def __init__(
        self,
        server_argv: list[str],
        state_dir: Path,
        *,
        daemon_argv: list[str],
        lock_fd: int,
        handover: Handover | None = None,
        notifier: Notifier | None = None,
        restored: list[tuple[str, int]] | None = None,
    ) -> None:
        self.server_argv = server_argv
        self.daemon_argv = daemon_argv
        self.lock_fd = lock_fd
        self.exits_path = state_dir / EXITS_FILE
        self.status_path = state_dir / STATUS_FILE
        self.image_started = time.time()
        self.upgraded_from = handover.from_version if handover is not None else None
        self.kept: dict[str, list[int]] = dict(handover.kept) if handover is not None else {}
        #: systemd's notify socket (None when not under systemd) and its fd store.
        self.notifier = notifier
        self.fdstore = FdStore(notifier, store_limit(os.environ))
        if handover is not None:
            for key, fds in self.kept.items():
                self.fdstore.mark_stored(key, fds, handover.stored.get(key, []))
            self.fdstore.store_unstored(self.kept)
        if restored:
            self.kept.update(self.fdstore.restore(restored))
        self.pending: dict[int, dict[str, Any]] = self._load_pending()
        #: Set while exits could not be written to ``exits_path`` (a full state dir).
        self.exits_unwritten = False
        self.server_pid = 0
        self.server_started = 0.0
        self.server_sock: socket.socket | None = None
        self.outbox: collections.deque[tuple[dict[str, Any], list[int]]] = collections.deque()
        self.stopping = False
        self.restart_delay = 0.0
        self.restart_at: float | None = 0.0  # start at once
        self.server_status = 0
        self.restart_requested = False
        self.upgrade_requested = False
        self.upgrade_due = False
        #: Set once a server has reported that it serves: a server that dies before that (a bad
        #: flag, an address in use) would die again, so the reaper gives up instead of looping.
        self.ever_served = False

    # ------------------------------------------------------------------ durable exits

    def _load_pending(self) -> dict[int, dict[str, Any]]:
        pending: dict[int, dict[str, Any]] = {}
        try:
            lines = self.exits_path.read_text().splitlines()
        except FileNotFoundError:
            return pending
        for line in lines:
            try:
                record = json.loads(line)
                pending[int(record["pid"])] = record
            except (ValueError, KeyError, TypeError):
                log.warning("reaper: skipping a corrupt line in %s: %r", self.exits_path, line[:200])
        return pending

    def _append_exit(self, record: dict[str, Any]) -> None:
        try:
            with open(self.exits_path, "a") as exits:
                exits.write(json.dumps(record) + "\n")
        except OSError as exc:
            self._not_written(exc)

    def _rewrite_pending(self) -> None:
        tmp = self.exits_path.with_name(f".{EXITS_FILE}.tmp")
        try:
            tmp.write_text("".join(json.dumps(record) + "\n" for record in self.pending.values()))
            os.replace(tmp, self.exits_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._not_written(exc)
        else:
            self.exits_unwritten = False

    def _not_written(self, exc: OSError) -> None:
        """A full state dir must not kill the reaper: the exit stays in memory and is sent on;
        only its copy on disk is missing until the next rewrite succeeds. Logged once."""
        if not self.exits_unwritten:
            self.exits_unwritten = True
            log.error("reaper: cannot write %s (%s); exits are kept in memory", self.exits_path, exc)

    # ------------------------------------------------------------------ the server

    def _start_server(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # child: the server gets its end as fd 3, everything else closes on exec
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                restore_in_forked_child()  # the server raises its own, and records the original
                os.dup2(theirs.fileno(), wire.SERVER_FD, inheritable=True)
                os.execv(sys.executable, [sys.executable, *self.server_argv])
            finally:
                os._exit(127)
        theirs.close()
        # Never block on a server that does not read: reaping must go on. What cannot be sent yet
        # waits in the outbox until the socket is writable again.
        ours.setblocking(False)
        self.server_pid = pid
        self.server_started = time.monotonic()
        self.server_sock = ours
        log.info("reaper %d: started the API server as pid %d", os.getpid(), pid)
        self._write_status(serving=False)
        self._notify(STATUS=f"starting the API server (pid {pid})")
        for key, fds in self.kept.items():
            self._send({"op": "kept", "key": key}, fds)
        for record in self.pending.values():
            self._send({"op": "exit", **record})
        self._send({"op": "ready"})

    def _write_status(self, *, serving: bool) -> None:
        status = {
            "pid": os.getpid(),
            "version": __version__,
            "image_started": self.image_started,
            "upgraded_from": self.upgraded_from,
            "server_pid": self.server_pid,
            "serving": serving,
        }
        tmp = self.status_path.with_name(f".{STATUS_FILE}.tmp")
        try:
            tmp.write_text(json.dumps(status) + "\n")
            os.replace(tmp, self.status_path)
        except OSError as exc:  # a full state dir must not stop the reaper; the file is advisory
            log.warning("reaper: cannot write %s: %s", self.status_path, exc)

    def _notify(self, **fields: str) -> None:
        if self.notifier is not None:
            self.notifier.send(fields)

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        """Queue a message; its fds are duplicated, so a later "drop" cannot close them before sending."""
        if self.server_sock is None:
            return
        self.outbox.append((message, [os.dup(fd) for fd in fds or []]))
        self._flush()

    def _flush(self) -> None:
        while self.server_sock is not None and self.outbox:
            message, fds = self.outbox[0]
            try:
                wire.send(self.server_sock, message, fds)
            except BlockingIOError:
                return  # select() says when the server reads again
            except OSError as exc:
                log.warning("reaper: cannot reach the server (%s); it will get this on restart", exc)
                self._disconnect()
                return
            self.outbox.popleft()
            close_quietly(*fds)

    def _disconnect(self) -> None:
        if self.server_sock is not None:
            self.server_sock.close()
            self.server_sock = None
        # Undelivered messages are replayed from `kept` and `pending` to the next server.
        while self.outbox:
            close_quietly(*self.outbox.popleft()[1])

    def _server_exited(self, status: int) -> None:
        code = exit_status_from_wait(status)
        self.server_pid = 0
        self._disconnect()
        if self.upgrade_requested:
            self.upgrade_requested = False
            self.upgrade_due = True
            return
        if self.restart_requested:
            self.restart_requested = False
            self.restart_at = time.monotonic()
            return
        if self.stopping or code == 0 or not self.ever_served:
            if not self.ever_served and not self.stopping:
                log.error("reaper: the API server failed to start (status %d); not restarting it", code)
            self.stopping = True
            self.server_status = code
            return
        lived = time.monotonic() - self.server_started
        self.restart_delay = (
            min(MAX_RESTART_DELAY_S, max(0.2, self.restart_delay * 2)) if lived < CRASH_WINDOW_S else 0.0
        )
        log.error(
            "reaper: the API server died with status %d; restarting in %.1f s", code, self.restart_delay
        )
        self._notify(STATUS=f"the API server died (status {code}); restarting in {self.restart_delay:.1f} s")
        self.restart_at = time.monotonic() + self.restart_delay

    # ------------------------------------------------------------------ events

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.server_pid:
                self._server_exited(status)
                continue
            record = {"pid": pid, "status": exit_status_from_wait(status), "time": time.time()}
            self.pending[pid] = record
            self._append_exit(record)
            self._send({"op": "exit", **record})

    def _on_server_message(self) -> None:
        assert self.server_sock is not None
        try:
            received = wire.receive(self.server_sock)
        except BlockingIOError:
            return
        except OSError:
            received = None
        if received is None:
            self._disconnect()
            return
        message, fds = received
        op = message.get("op")
        if op == "keep":
            close_quietly(*self.kept.pop(str(message["key"]), []))
            self.kept[str(message["key"])] = fds
            self.fdstore.keep(str(message["key"]), fds)
        elif op == "drop":
            self.fdstore.drop(str(message["key"]))
            close_quietly(*self.kept.pop(str(message["key"]), []), *fds)
        elif op == "serving":
            self.ever_served = True
            self._write_status(serving=True)
            # Type=notify: the service is up once the server serves, which only the reaper may say.
            status = f"serving (API server pid {self.server_pid}, {len(self.kept)} pipe keys kept)"
            self._notify(READY="1", STATUS=status)
        elif op == "ack":
            for pid in message.get("pids", []):
                self.pending.pop(int(pid), None)
            self._rewrite_pending()
        else:
            log.warning("reaper: unknown message %r", message)
            close_quietly(*fds)

    def run(self) -> int:
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, lambda *_: None)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)  # blocked across an upgrade's exec
        while True:
            if self.stopping and self.server_pid == 0:
                log.info("reaper: stopped; containers keep running")
                return self.server_status
            if self.upgrade_due:
                self.upgrade_due = False
                self._upgrade()  # returns only if the exec failed; the old code then serves on
            due = self.restart_at is not None and time.monotonic() >= self.restart_at
            if not self.stopping and self.server_pid == 0 and due:
                self.restart_at = None
                self._start_server()
            readers = [wake_read] + ([self.server_sock] if self.server_sock is not None else [])
            writers: list[Any] = [self.server_sock] if self.server_sock is not None and self.outbox else []
            if self.notifier is not None and self.notifier.waiting:
                writers.append(self.notifier)
            timeout = None if self.restart_at is None else max(0.0, self.restart_at - time.monotonic())
            try:
                ready, writable, _ = select.select(readers, writers, [], timeout)
            except InterruptedError:
                ready, writable = [], []
            if self.server_sock is not None and self.server_sock in writable:
                self._flush()
            if self.notifier is not None and self.notifier in writable:
                self.notifier.flush()
            if wake_read in ready:
                self._on_signals(os.read(wake_read, 256))
            if self.server_sock is not None and self.server_sock in ready:
                self._on_server_message()
            self._reap()

    def _on_signals(self, numbers: bytes) -> None:
        for signum in numbers:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
                self._notify(STOPPING="1", STATUS="stopping; containers keep running")
                if self.server_pid:
                    os.kill(self.server_pid, signal.SIGTERM)
            elif signum == signal.SIGHUP and self.server_pid and not self.stopping:
                # Restart the server (an upgrade, a config reload) without losing anything.
                self.restart_requested = True
                os.kill(self.server_pid, signal.SIGTERM)
            elif signum == signal.SIGUSR2 and not self.stopping:
                log.info("reaper %d: upgrade requested: stopping the API server", os.getpid())
                self.upgrade_requested = True
                if self.server_pid:
                    os.kill(self.server_pid, signal.SIGTERM)
                else:
                    self.upgrade_due = True

    def _upgrade(self) -> None:
        """Re-execute the installed code in this process, handing over the lock and the pipe ends.

        The server is already gone, so nothing else holds state that the new image must know:
        the exits seen so far are on disk (``reaper-exits.jsonl``) and the pipe ends go across the
        exec. If the exec fails (the interpreter vanished mid-upgrade, say), the old code starts a
        new server and goes on, so a failed upgrade costs a server restart and nothing more.
        """
        self._reap()
        self._rewrite_pending()
        handover = Handover(
            lock_fd=self.lock_fd, kept=self.kept, from_version=__version__, stored=self.fdstore.stored_names()
        )
        memfd = write_handover(handover)
        environment = {**os.environ, HANDOVER_ENV: str(memfd)}
        if self.notifier is not None:
            self._notify(STATUS=f"upgrading from {__version__}")
            self.notifier.flush_blocking(timeout=1.0)  # the store must hold what the handover says
            environment[NOTIFY_SOCKET_ENV] = self.notifier.address
        argv = [sys.executable, "-m", "containerd_actors.daemon.main", *self.daemon_argv]
        log.info("reaper %d: re-executing for an upgrade, holding %d pipe keys", os.getpid(), len(self.kept))
        for handler in logging.getLogger().handlers:
            handler.flush()
        # A signal that lands between the exec and the new image's handlers would find its
        # default action (for SIGUSR2 and SIGHUP: terminate), so they wait, blocked, until then.
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            os.execve(sys.executable, argv, environment)
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            undo_handover(handover, memfd)
            log.error("reaper: the upgrade's exec failed (%s); restarting the old API server", exc)
            self.restart_at = time.monotonic()


def run_reaper(
    server_argv: list[str],
    state_dir: Path,
    *,
    daemon_argv: list[str],
    lock_fd: int,
    handover: Handover | None = None,
    notifier: Notifier | None = None,
    restored: list[tuple[str, int]] | None = None,
) -> int:
    """Run the reaper until it stops; ``notifier`` is systemd's notify socket (taken from the
    environment by the caller, so that no child inherits it) and ``restored`` the fds systemd
    passed back from its fd store."""
    become_child_subreaper()
    raise_soft_limit()  # it holds copies of every container's pipe ends (see ``host.fd_limit``)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if handover is not None:
        log.info(
            "reaper %d: upgraded from %s to %s; %d pipe keys handed over",
            os.getpid(),
            handover.from_version,
            __version__,
            len(handover.kept),
        )
    reaper = Reaper(
        server_argv,
        state_dir,
        daemon_argv=daemon_argv,
        lock_fd=lock_fd,
        handover=handover,
        notifier=notifier,
        restored=restored,
    )
    return reaper.run()
