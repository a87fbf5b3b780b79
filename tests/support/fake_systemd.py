"""Plays systemd's service manager for a daemon under test: its notify socket and its fd store.

This machine has no systemd as pid 1, so a test binds the unix datagram socket that
``$NOTIFY_SOCKET`` names, receives every notification with its fds (SCM_RIGHTS), keeps the
``FDSTORE=1`` ones by their ``FDNAME`` (one copy of the same open file, as systemd keeps),
closes the ``FDSTOREREMOVE=1`` ones, and on the next start passes the kept fds as fds 3, 4, ...
with ``$LISTEN_FDS``, ``$LISTEN_PID`` and ``$LISTEN_FDNAMES`` (``listen_exec.py``).

Like systemd, it reads its socket at once, in a thread of its own: a notification left unread in
the reaper's queue at a kill -9 would be lost, and a test must not depend on reading in time.
"""

from __future__ import annotations

import array
import os
import select
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import trio

from containerd_actors.host.fds import close_quietly
from containerd_actors.host.sd_notify import parse
from containerd_actors.reaper.fdstore import identity

LISTEN_EXEC = Path(__file__).with_name("listen_exec.py")
_FD_SIZE = array.array("i").itemsize


class FakeSystemd:
    def __init__(self, path: Path, store_max: int | None = None, *, reading: bool = True) -> None:
        """``store_max``: the unit's FileDescriptorStoreMax, told as ``$FDSTORE`` (systemd 254 and
        later); None plays an older systemd, which does not tell it. Without ``reading``, nothing
        is received until the test calls ``receive`` (a manager too busy to read)."""
        self.path = path
        self.store_max = store_max
        kind = socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        self.sock = socket.socket(socket.AF_UNIX, kind)
        self.sock.bind(str(path))
        #: (name, fd), in the order stored: what the next start gets.
        self.store: list[tuple[str, int]] = []
        #: Every notification received, as its fields.
        self.messages: list[dict[str, str]] = []
        self._lock = threading.RLock()
        self._stop_read, self._stop_write = os.pipe()
        self._reader = threading.Thread(target=self._read_until_closed, name="fake-systemd", daemon=True)
        if reading:
            self._reader.start()

    def _read_until_closed(self) -> None:
        while True:
            ready, _, _ = select.select([self.sock, self._stop_read], [], [])
            if self._stop_read in ready:
                return
            self.receive()

    @property
    def environment(self) -> dict[str, str]:
        told = {} if self.store_max is None else {"FDSTORE": str(self.store_max)}
        return {"NOTIFY_SOCKET": str(self.path), **told}

    def names(self) -> list[str]:
        with self._lock:
            return [name for name, _fd in self.store]

    def receive(self) -> None:
        """Every notification waiting on the socket, applied to the store."""
        with self._lock:
            self._receive()

    def _receive(self) -> None:
        while True:
            try:
                data, ancillary, _flags, _address = self.sock.recvmsg(
                    65536, socket.CMSG_SPACE(64 * _FD_SIZE), socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return
            fds = array.array("i")
            for level, kind, payload in ancillary:
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                    fds.frombytes(payload[: len(payload) - len(payload) % _FD_SIZE])
            fields = parse(data)
            self.messages.append(fields)
            if fields.get("FDSTORE") == "1":
                self._store(fields.get("FDNAME", "stored"), list(fds))
            else:
                close_quietly(*fds)
            if fields.get("FDSTOREREMOVE") == "1":
                name = fields.get("FDNAME")
                close_quietly(*(fd for stored, fd in self.store if stored == name))
                self.store = [(stored, fd) for stored, fd in self.store if stored != name]

    def _store(self, name: str, fds: list[int]) -> None:
        held = {identity(fd) for _name, fd in self.store}
        for fd in fds:
            if identity(fd) in held:
                os.close(fd)  # systemd keeps one copy of the same open file, under its first name
            else:
                self.store.append((name, fd))

    async def wait_for(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        with trio.fail_after(timeout):
            while True:
                with self._lock:
                    if done():
                        return
                await trio.sleep(0.01)  # the reader thread applies what arrives

    def ready_count(self) -> int:
        with self._lock:
            return sum(1 for fields in self.messages if fields.get("READY") == "1")

    def start_command(self, argv: list[str]) -> tuple[list[str], list[int]]:
        """The command line that starts ``argv`` with the store's fds, and the fds to pass to it."""
        self.receive()
        if not self.store:
            return argv, []
        pairs = [f"{name}={fd}" for name, fd in self.store]
        return [sys.executable, str(LISTEN_EXEC), *pairs, "--", *argv], [fd for _name, fd in self.store]

    def close(self) -> None:
        os.write(self._stop_write, b"x")
        if self._reader.is_alive():
            self._reader.join()
        close_quietly(self._stop_read, self._stop_write)
        close_quietly(*(fd for _name, fd in self.store))
        self.store = []
        self.sock.close()
        self.path.unlink(missing_ok=True)
