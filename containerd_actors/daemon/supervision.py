"""Restarting crashed actors one for one, Erlang's way, with a limit on restarts per minute.

An actor that raises has a bug; its mailbox, and whatever state others built up in it by
messages (the journal and its ``seq``, the metrics' running totals), outlive the crash, and a
new incarnation of its loop takes over from them. A bug that crashes an actor again and again
is not fixed by restarting it forever: past ``RESTARTS_PER_MINUTE`` restarts of one actor within
a minute, ``RestartLimitExceeded`` leaves the actor tree, the API server exits with
``EXIT_RESTART_LIMIT``, and the reaper starts a fresh server, which re-adopts every container
from the state directory (with ``--no-reaper``, the service manager restarts the daemon).

``supervise`` runs the events and metrics actors this way (``wiring``); the supervisor applies
the same ``RestartWindow`` to each of its container actors.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger(__name__)

#: Restarts of one actor allowed within ``RESTART_WINDOW_S``; one more makes the server exit.
RESTARTS_PER_MINUTE = 5
RESTART_WINDOW_S = 60.0
#: The API server's exit status when an actor crashed past its limit (EX_SOFTWARE): non-zero,
#: so the reaper restarts it.
EXIT_RESTART_LIMIT = 70


class RestartLimitExceeded(Exception):
    """An actor crashed more often than its limit allows: the API server must exit."""

    def __init__(self, actor: str, restarts: int, window_s: float) -> None:
        super().__init__(f"{actor} crashed {restarts} times within {window_s:g} s")
        self.actor = actor


class RestartWindow:
    """The restarts of one actor within the last ``window_s`` seconds of trio's clock."""

    def __init__(self, limit: int = RESTARTS_PER_MINUTE, window_s: float = RESTART_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def record(self, actor: str) -> int:
        """Count one crash; returns the restarts within the window, or raises past the limit."""
        now = trio.current_time()
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        if len(self._times) > self.limit:
            raise RestartLimitExceeded(actor, len(self._times), self.window_s)
        return len(self._times)


#: Told of each restart: the actor's name, the exception that crashed it (see ``root_cause``),
#: and the restarts within the window so far. It publishes the ``actor-restart`` event and counts it.
OnRestart = Callable[[str, BaseException, int], None]


def root_cause(error: BaseException) -> BaseException:
    """The exception inside the nurseries' groups it travelled through (the first, if several)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def crash_summary(error: BaseException) -> str:
    """``Type: message`` of what crashed an actor, for an event's reason."""
    cause = root_cause(error)
    return f"{type(cause).__name__}: {cause}"


class _Readiness:
    """Passes the first incarnation's ``started()`` on; later incarnations are started silently."""

    def __init__(self, task_status: Any) -> None:
        self._task_status = task_status
        self.ready = False

    def started(self, value: Any = None) -> None:
        if not self.ready:
            self.ready = True
            self._task_status.started(value)


async def supervise(
    name: str,
    run: Callable[..., Awaitable[None]],
    on_restart: OnRestart,
    window: RestartWindow | None = None,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``run(task_status=...)`` and run it again whenever it raises.

    A crash before the first incarnation is ready is a start-up failure (an address in use, a
    bad flag) that a restart would only repeat, so it propagates. Cancellation is a stop, not a
    crash.
    """
    window = window or RestartWindow()
    readiness = _Readiness(task_status)
    while True:
        try:
            await run(task_status=readiness)
            return
        except Exception as error:
            if not readiness.ready:
                raise
            try:
                restarts = window.record(name)
            except RestartLimitExceeded as exceeded:
                log.error(
                    "%s actor crashed; past its restart limit (%s): the API server exits",
                    name,
                    exceeded,
                    exc_info=error,
                )
                raise exceeded from error
            log.error(
                "%s actor crashed; restarting it (%d of %d restarts allowed within %g s)",
                name,
                restarts,
                window.limit,
                window.window_s,
                exc_info=error,
            )
            on_restart(name, root_cause(error), restarts)
