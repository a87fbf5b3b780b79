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

    def add_view(self, container_id: str, view: OutputView, owner: object, *, is_init: bool) -> None:
        """Serve ReadOutput of ``view``'s process from ``view`` while its actor (``owner``) runs."""
        self._views[(container_id, view.pid)] = (view, owner)
        if is_init:
            self._views[(container_id, INIT)] = (view, owner)

    def remove_view(self, container_id: str, pid: int) -> None:
        """Stop serving an exited exec'd process's output (its actor dropped it and its logs)."""
        found = self._views.pop((container_id, pid), None)
        if found is not None and self._views.get((container_id, INIT), (None,))[0] is found[0]:
            del self._views[(container_id, INIT)]

    def view(self, container_id: str, pid: int) -> OutputView | None:
        """The output of that process, or None: ask the supervisor."""
        found = self._views.get((container_id, pid))
        return None if found is None else found[0]

    def add(self, port: StdinPort, *, is_init: bool) -> None:
        """Route to ``port`` (an open one; a successor's replaces its predecessor's)."""
        if port.closed:
            return
        self._ports[(port.container_id, port.pid)] = port
        if is_init:
            self._ports[(port.container_id, INIT)] = port

    def remove(self, port: StdinPort) -> None:
        """Stop routing to ``port`` (closed); a successor's port under its keys stays."""
        for key in ((port.container_id, port.pid), (port.container_id, INIT)):
            if self._ports.get(key) is port:
                del self._ports[key]

    def forget(self, container_id: str, owner: object) -> None:
        """Stop routing to the ports and views of the actor whose mailbox is ``owner`` (its run
        has ended)."""
        for key, port in list(self._ports.items()):
            if key[0] == container_id and port.owner is owner:
                del self._ports[key]
        for key, (_, view_owner) in list(self._views.items()):
            if key[0] == container_id and view_owner is owner:
                del self._views[key]

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
