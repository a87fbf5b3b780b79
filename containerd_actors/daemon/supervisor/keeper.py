"""What a crashed container actor would take with it, kept outside it: pipe ends and seen exits.

A container actor owns its processes' pipe ends: its drains close the output ends when they
stop, and a crash stops them. The reaper holds copies too, but it hands them back only to a new
API server (and with ``--no-reaper`` there is no reaper at all). So the supervisor keeps its
own copy of every end the actors give the reaper: ``PipeKeeper`` stands between the actors and
the real ``ExitWatcher``, duplicates the ends on each ``keep`` and closes them on each ``drop``.
When an actor crashes, its replacement adopts the container with fresh duplicates of these,
exactly as a restarted server adopts it with the reaper's.

It also remembers each exit status an actor was given until the actor acknowledges it (that is,
until the ``exit`` event is published): an actor that crashed after its watcher reaped a process
(``--no-reaper`` reaps with ``waitpid``; the status is then gone from the kernel) would
otherwise leave its replacement with an exit of unknown status.

Holding a pipe's read end costs the container nothing; holding its stdin's write end would keep
the process from seeing EOF, and the actors already drop it (and keep only the outputs) when a
client closes stdin. The cost is three fds per process in the API server, beside the three the
actor uses; the fd limit is raised to the hard limit at start (``wiring.raise_fd_limit``).

Only the trio thread touches it, through the actors' awaits on the exit watcher and the
supervisor's loop; each key's ends are replaced whole.
"""

from __future__ import annotations

import os

from containerd_actors.daemon.container.process import reaper_key
from containerd_actors.host.fds import close_quietly
from containerd_actors.host.reaping import ExitWatcher


def _container_of(key: str) -> str:
    """The container id of a reaper key (``id`` or ``id/pid``; ``/`` never occurs in an id)."""
    return key.partition("/")[0]


class PipeKeeper:
    """An ``ExitWatcher`` that keeps a copy of every pipe end and every unacknowledged exit."""

    def __init__(self, inner: ExitWatcher) -> None:
        self._inner = inner
        #: Container id -> reaper key (``id`` or ``id/pid``) -> this process's copies of the ends.
        self._ends: dict[str, dict[str, list[int]]] = {}
        #: Statuses the watcher returned that are not yet acknowledged, by pid.
        self._exits: dict[int, int | None] = {}

    # ------------------------------------------------------------------ ExitWatcher

    async def wait_for_exit(self, pidfd: int, pid: int, *, started_here: bool = False) -> int | None:
        status = await self._inner.wait_for_exit(pidfd, pid, started_here=started_here)
        self._exits[pid] = status
        return status

    def exited_while_away(self, pid: int) -> int | None:
        status = self._inner.exited_while_away(pid)
        return status if status is not None else self._exits.get(pid)

    async def acknowledge(self, pid: int) -> None:
        self._exits.pop(pid, None)
        await self._inner.acknowledge(pid)

    async def keep(self, key: str, fds: list[int]) -> None:
        self.hold(key, fds)
        await self._inner.keep(key, fds)

    async def drop(self, key: str) -> None:
        container = self._ends.get(_container_of(key))
        if container is not None:
            close_quietly(*container.pop(key, []))
            if not container:
                del self._ends[_container_of(key)]
        await self._inner.drop(key)

    # ------------------------------------------------------------------ for the supervisor

    def hold(self, key: str, fds: list[int]) -> None:
        """Keep duplicates of ``fds`` under ``key`` (replacing what it held), without telling the reaper."""
        copies: list[int] = []
        try:
            for fd in fds:
                if fd >= 0:
                    copies.append(os.dup(fd))  # os.dup's copies are close-on-exec
        except OSError:
            close_quietly(*copies)  # EMFILE: the caller undoes its start or exec; nothing leaks
            raise
        container = self._ends.setdefault(_container_of(key), {})
        close_quietly(*container.pop(key, []))
        container[key] = copies

    def copies_for(self, container_id: str) -> tuple[list[int], dict[str, list[int]]]:
        """Fresh duplicates of a container's ends, for a new actor to own: the init's, and the
        exec'd processes' by key (the shapes ``adopt.Adoption`` takes)."""
        container = self._ends.get(container_id, {})
        init_key = reaper_key(container_id)
        init = [os.dup(fd) for fd in container.get(init_key, [])]
        execs = {key: [os.dup(fd) for fd in fds] for key, fds in container.items() if key != init_key}
        return init, execs

    def forget(self, container_id: str) -> None:
        """Close whatever is still held for a container whose actor has finished."""
        for fds in self._ends.pop(container_id, {}).values():
            close_quietly(*fds)

    def close_all(self) -> None:
        """The supervisor stops: its copies go (the reaper still holds its own for the next server)."""
        for container_id in list(self._ends):
            self.forget(container_id)

    def held(self) -> int:
        """How many ends are held (for tests)."""
        return sum(len(fds) for container in self._ends.values() for fds in container.values())
