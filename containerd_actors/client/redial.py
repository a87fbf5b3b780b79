"""A ``BlockingClient`` dialled again when its connection is lost: how ``exec -a``, ``start -a``
and ``logs -f`` ride through a restart of the daemon's API server.

Why: when the API server dies (a crash, a kill -9), the reaper starts a new one within a second
or two and hands it every container, its pipe ends and its exits; the logs hold the output. Only
the client's connection is lost, so a client that dials again and asks again from the offsets it
had loses nothing.

The pace: the first retry after 50 ms, then doubling to 0.5 s, for ``RECONNECT_WINDOW_S`` (30 s)
from the loss. A restart takes 1-2 s (the reaper's own delay grows to 5 s only when servers keep
dying within 5 s of their start, and a new server reconciles and re-adopts every container before
it listens), so 30 s covers several restarts in a row; 0.5 s between tries means a new server is
found at most half a second after it listens, for ~65 failed connects (microseconds each) over
the whole window. Each new connection is checked with a Ping before it is used.

What may be asked again: a request that only reads (ReadOutput, Ping, OpenStdin) or whose repeat
changes nothing (closing stdin) is simply sent again on the new connection (``run``). A request
whose effect is not idempotent (stdin's bytes) is not: the daemon that may have written it is
gone, and the new one does not know what it wrote (``run(..., resend=False)`` raises
``InFlightLost`` instead, and the caller says so).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, TypeVar

from containerd_actors.client.basics import DEFAULT_TIMEOUT_S
from containerd_actors.client.blocking import BlockingClient
from containerd_actors.client.errors import ClientError, DaemonUnreachable

if TYPE_CHECKING:
    from containerd_actors.transport.tls import TlsFiles

#: How long after losing the connection a client keeps trying to get it back.
RECONNECT_WINDOW_S = 30.0
FIRST_RETRY_S = 0.05
LAST_RETRY_S = 0.5
LOST_LINE = b"actr: connection to the daemon lost; reconnecting\n"
BACK_LINE = b"actr: reconnected\n"

_T = TypeVar("_T")


class GaveUp(DaemonUnreachable):
    """The connection did not come back within the window."""


class InFlightLost(ClientError):
    """The connection was lost while a request that is not sent twice was on its way: the old
    server may or may not have carried it out. A connection is dialled again for the next one."""

    def __init__(self, cause: DaemonUnreachable) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Notices:
    """Says once per outage that the connection is lost, and once that it is back, whichever of
    the attach's connections (output, stdin, probe) notices first. Thread-safe."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._down = False
        #: Outages said so far: a connection dialled before the latest one was lost in it.
        self.outages = 0
        #: When the current outage began, and the length of each one that ended (seconds).
        self._since = 0.0
        self.durations: list[float] = []

    def lost(self, dialled_at: int) -> None:
        with self._lock:
            if self._down or dialled_at < self.outages:
                return  # an outage already said
            self._down = True
            self.outages += 1
            self._since = time.monotonic()
            self._write(LOST_LINE)

    def say(self, line: bytes) -> None:
        """Any other line about the connection, in order with these."""
        with self._lock:
            self._write(line)

    def back(self) -> None:
        with self._lock:
            if self._down:
                self._down = False
                self.durations.append(time.monotonic() - self._since)
                self._write(BACK_LINE)


class Redial:
    """One connection at a time to ``address``, dialled again (``RECONNECT_WINDOW_S``) when lost."""

    def __init__(
        self,
        address: str,
        *,
        tls: TlsFiles | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        first: BlockingClient | None = None,
        notices: Notices | None = None,
        window: float = RECONNECT_WINDOW_S,
    ) -> None:
        """``first``: a connection already open (its owner closes it too; closing twice is harmless)."""
        self.address = address
        self.tls = tls
        self._timeout = timeout
        self._client = first
        self._notices = notices
        self._window = window
        self._dialled_at = 0
        #: Whether a connection was lost: a new one is then checked with a Ping before use.
        self._redialling = False
        self._connection: AbstractContextManager[BlockingClient] | None = None

    def __enter__(self) -> Redial:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._drop()

    @property
    def client(self) -> BlockingClient:
        """The connection, dialled first if it was lost (``GaveUp`` past the window)."""
        if self._client is None:
            self._client = self._dial()
        return self._client

    def run(self, request: Callable[[BlockingClient], _T], *, resend: bool = True) -> _T:
        """``request(client)``; when the connection is lost, on a new one (``resend``), or
        ``InFlightLost`` if the request had gone out on a connection that was open."""
        while True:
            client = self.client
            try:
                return request(client)
            except DaemonUnreachable as exc:
                self.lost()
                if not resend:
                    raise InFlightLost(exc) from None

    def lost(self) -> None:
        """The connection failed: say so (once per outage), and dial again at the next request."""
        if self._notices is not None:
            self._notices.lost(self._dialled_at)
        self._drop()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
            self._connection = None
            self._redialling = True

    def _dial(self) -> BlockingClient:
        deadline = time.monotonic() + self._window
        delay = FIRST_RETRY_S
        while True:
            try:
                client = self._connect()
            except DaemonUnreachable as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise GaveUp(
                        self.address, f"{exc.reason}; no connection within {self._window:g} s"
                    ) from None
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, LAST_RETRY_S)
                continue
            if self._notices is not None:
                self._dialled_at = self._notices.outages
                self._notices.back()
            return client

    def _connect(self) -> BlockingClient:
        connection = BlockingClient.connect(self.address, self._timeout, tls=self.tls)
        client = connection.__enter__()
        # Held with the client: a context manager's generator dropped closes its socket.
        self._connection = connection
        if self._redialling:  # the first dial has no Ping: an attach's first request says enough
            try:
                client.ping()
            except BaseException:
                client.close()
                raise
        return client
