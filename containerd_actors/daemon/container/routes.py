"""Where the API server hands a ``WriteInput`` or ``ResizeTerminal``, and finds the output a
``ReadOutput`` reads, without asking the supervisor.

Every chunk of an attached stdin used to travel API worker -> supervisor -> container actor ->
stdin port, each hop a memory channel and a trio scheduling pass. The port's ``offer`` never waits
and answers the request itself, so once a port is open the two middle hops only find it again.
The supervisor keeps this table (one for the daemon, handed to every container actor in its
``ActorDeps``); each open port is in it under its container id and pid, and the init's also under
pid 0 (a request's "the init process").

The table is a shortcut only, never the authority: whatever it does not hold goes the long way
(unknown ids, exited processes, closed stdin, a container being started or adopted), and the long
way gives every answer it gave before. A port leaves the table as it closes (the process exited,
or a client's EOF), and all of an actor's ports leave it when the actor's run ends, crash or not,
before its successor registers its own ports; so a request never reaches a dead actor's port.

A ReadOutput likewise asked the supervisor for the process's ``OutputView`` every time (a long
poll each few MiB of a stream). Each view a living actor owns is in the table from the moment
the actor owns its process until the actor's run ends; then the supervisor serves the views of
the exited container as before (its own copies, kept until the id is reused).

The owner of a container's init view is its actor's mailbox, where the supervisor would route a
request for that container: an ``AddProcess`` goes there straight (``actor``). The supervisor's
hop was a memory channel and a scheduling pass on every exec's way in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from containerd_actors.daemon.container.stdin import StdinAsk, StdinPort
    from containerd_actors.daemon.container.stdio import OutputView

#: A request's pid for "the container's init process".
INIT = 0


class ProcessRoutes:
    """Open stdin ports and living actors' output views by (container id, pid); see the module
    docstring."""

    def __init__(self) -> None:
        self._ports: dict[tuple[str, int], StdinPort] = {}
        #: Each with the mailbox of the actor that owns its process.
        self._views: dict[tuple[str, int], tuple[OutputView, object]] = {}
        #: The keys each container has in either table: ``forget`` runs at every actor's end, and
        #: a scan of both tables made each exit (and a stop with N containers, N times) cost O(N).
        self._keys: dict[str, set[tuple[str, int]]] = {}

    def _index(self, key: tuple[str, int]) -> None:
        self._keys.setdefault(key[0], set()).add(key)

    def _unindex(self, key: tuple[str, int]) -> None:
        if key in self._ports or key in self._views:
            return
        keys = self._keys.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys[key[0]]

    def add_view(self, container_id: str, view: OutputView, owner: object, *, is_init: bool) -> None:
        """Serve ReadOutput of ``view``'s process from ``view`` while its actor (``owner``) runs."""
        self._views[(container_id, view.pid)] = (view, owner)
        self._index((container_id, view.pid))
        if is_init:
            self._views[(container_id, INIT)] = (view, owner)
            self._index((container_id, INIT))

    def remove_view(self, container_id: str, pid: int) -> None:
        """Stop serving an exited exec'd process's output (its actor dropped it and its logs)."""
        found = self._views.pop((container_id, pid), None)
        self._unindex((container_id, pid))
        if found is not None and self._views.get((container_id, INIT), (None,))[0] is found[0]:
            del self._views[(container_id, INIT)]
            self._unindex((container_id, INIT))

    def actor(self, container_id: str) -> object | None:
        """The mailbox of the living actor that owns the container's init, or None: ask the
        supervisor, which would route to that same mailbox (``AddProcess``)."""
        found = self._views.get((container_id, INIT))
        return None if found is None else found[1]

    def view(self, container_id: str, pid: int) -> OutputView | None:
        """The output of that process, or None: ask the supervisor."""
        found = self._views.get((container_id, pid))
        return None if found is None else found[0]

    def add(self, port: StdinPort, *, is_init: bool) -> None:
        """Route to ``port`` (an open one; a successor's replaces its predecessor's)."""
        if port.closed:
            return
        self._ports[(port.container_id, port.pid)] = port
        self._index((port.container_id, port.pid))
        if is_init:
            self._ports[(port.container_id, INIT)] = port
            self._index((port.container_id, INIT))

    def remove(self, port: StdinPort) -> None:
        """Stop routing to ``port`` (closed); a successor's port under its keys stays."""
        for key in ((port.container_id, port.pid), (port.container_id, INIT)):
            if self._ports.get(key) is port:
                del self._ports[key]
                self._unindex(key)

    def forget(self, container_id: str, owner: object) -> None:
        """Stop routing to the ports and views of the actor whose mailbox is ``owner`` (its run
        has ended)."""
        for key in list(self._keys.get(container_id, ())):
            port = self._ports.get(key)
            if port is not None and port.owner is owner:
                del self._ports[key]
            found = self._views.get(key)
            if found is not None and found[1] is owner:
                del self._views[key]
            self._unindex(key)

    def port(self, container_id: str, pid: int) -> StdinPort | None:
        """The open stdin port of that process, or None: ask the supervisor (``OpenStdin``)."""
        port = self._ports.get((container_id, pid))
        return None if port is None or port.closed else port

    def offer(self, ask: StdinAsk) -> bool:
        """Hand ``ask`` to its process's open port, which answers it; False: send it the long way."""
        port = self._ports.get((ask.request.id, ask.request.pid))
        if port is None or port.closed:
            return False
        return port.offer_routed(ask)

    def __len__(self) -> int:
        """How many (container, pid) pairs are routed, ports and views."""
        return len(self._ports) + len(self._views)
