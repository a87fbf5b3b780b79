"""The API server's end of the reaper socket: exit statuses in, pipe ends out, both kept safe.

With a reaper, container processes are the reaper's children, not ours: their exit statuses
arrive as messages. The link keeps them until an actor claims one, and an actor acknowledges the
exit once its event is published, so an exit is never lost between the two processes.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import trio

from containerd_actors.host.procfs import parent_pid
from containerd_actors.host.reaping import EXIT_REPORT_GRACE_S
from containerd_actors.reaper import wire

log = logging.getLogger(__name__)


class ReaperLink:
    """ExitWatcher backed by the reaper process; also its fd store."""

    def __init__(self, sock: socket.socket) -> None:
        # Inherited from the reaper; runc is spawned without closing fds, so it must not leak there.
        os.set_inheritable(sock.fileno(), False)
        sock.setblocking(False)
        self._plain = sock
        self._sock = trio.socket.from_stdlib_socket(sock)
        #: Sends waiting for room in the socket, one at a time in order; later ones queue behind.
        self._sends_waiting = 0
        self._waiting_turn = trio.Lock()
        self._reaper_pid = os.getppid()
        self._exits: dict[int, int] = {}
        self._exit_arrived: dict[int, trio.Event] = {}
        #: Pipe ends the reaper held for each container when this server started.
        self.kept: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ the socket

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Receive until the reaper goes away; started once the reaper's replay is complete."""
        started = False
        while True:
            message, fds = await self._receive()
            op = message.get("op")
            if op == "kept":
                self.kept[str(message["key"])] = fds
            elif op == "exit":
                pid = int(message["pid"])
                self._exits[pid] = int(message["status"])
                self._exit_arrived.setdefault(pid, trio.Event()).set()
            elif op == "ready" and not started:
                started = True
                task_status.started()
            else:
                log.warning("reaper link: unexpected message %r", message)

    async def _receive(self) -> tuple[wire.Message, list[int]]:
        data, ancillary, _flags, _address = await self._sock.recvmsg(
            wire.MAX_MESSAGE, wire.ANCILLARY_SPACE, wire.RECEIVE_FLAGS
        )
        received = wire.unpack(data, ancillary)
        if received is None:
            raise RuntimeError("the reaper closed its socket: it has exited")
        return received

    async def _send(self, message: wire.Message, fds: list[int] | None = None) -> None:
        """Sent at once when the socket has room, without giving up the turn.

        A start hands the reaper its pipe ends while it holds a --concurrency slot, just before
        runc; trio's ``sendmsg`` always ends with a scheduling pass, which under a burst of starts
        kept the slot idle for 13 ms on average (a tenth of a start) before runc was spawned.
        """
        packed = wire.pack(message, fds)
        if not self._sends_waiting:
            try:
                self._plain.sendmsg(*packed)
                return
            except BlockingIOError:
                pass
        self._sends_waiting += 1
        try:
            async with self._waiting_turn:
                await self._sock.sendmsg(*packed)
        finally:
            self._sends_waiting -= 1

    # ------------------------------------------------------------------ ExitWatcher

    async def wait_for_exit(self, pidfd: int, pid: int, *, started_here: bool = False) -> int | None:
        """The real status when the reaper is (or was) the parent; None when nobody could see it.

        A process this server started was orphaned to the reaper, which reports every exit of
        its children: no /proc look-up of its parent (one read of /proc/PID/stat per start)."""
        if pid not in self._exits:
            parent = self._reaper_pid if started_here else parent_pid(pid)
            if parent is not None and parent != self._reaper_pid:
                # Adopted from a reaper that died: the status goes to whoever the parent is now.
                if pidfd >= 0:
                    await trio.lowlevel.wait_readable(pidfd)
                return None
            event = self._exit_arrived.setdefault(pid, trio.Event())
            if parent is None:
                with trio.move_on_after(EXIT_REPORT_GRACE_S):
                    await event.wait()
                if pid not in self._exits:
                    return None
            else:
                await event.wait()
        return self._exits[pid]

    def recorded_exits(self) -> list[int]:
        """The pids whose exits the reaper holds for us (replayed at start, or arrived since)."""
        return list(self._exits)

    def exited_while_away(self, pid: int) -> int | None:
        """The status the reaper recorded for ``pid`` while no server was running, if any."""
        return self._exits.get(pid)

    async def acknowledge(self, pid: int) -> None:
        self._exits.pop(pid, None)
        self._exit_arrived.pop(pid, None)
        await self._send({"op": "ack", "pids": [pid]})

    async def keep(self, key: str, fds: list[int]) -> None:
        await self._send({"op": "keep", "key": key}, fds)

    async def announce_serving(self) -> None:
        await self._send({"op": "serving"})

    async def drop(self, key: str) -> None:
        await self._send({"op": "drop", "key": key})
