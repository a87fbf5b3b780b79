"""Renewed TLS certificates are served without a restart: on SIGHUP to the API server, or when the
files change (checked every ``--tls-reload-interval``).

Certificates are short-lived where mutual TLS is taken seriously, so renewal is routine and must not
cost a restart: running containers and local clients are untouched (only the tls+tcp listeners are
opened again). A reload that fails (a file caught half-written, a key that does not match) is
logged and the old listeners serve on; the next SIGHUP or check tries again.
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Callable

import trio

from containerd_actors.daemon.events.messages import EventsMailbox, ReloadTls
from containerd_actors.daemon.mailbox import ask
from containerd_actors.transport.tls import TlsFiles

log = logging.getLogger(__name__)


async def reload_tls_when_asked(
    files: TlsFiles,
    interval: float,
    reload_api: Callable[[], None],
    events: EventsMailbox,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    stamp = files.stamp()
    with trio.open_signal_receiver(signal.SIGHUP) as hangups:
        task_status.started()
        while True:
            hangup = False
            with trio.move_on_after(interval if interval > 0 else math.inf):
                await hangups.__anext__()
                hangup = True
            current = files.stamp()
            if not hangup and current == stamp:
                continue
            if await _reload_everywhere(reload_api, events):
                stamp = current
                log.info("TLS certificates reloaded (%s)", "SIGHUP" if hangup else "the files changed")


async def _reload_everywhere(reload_api: Callable[[], None], events: EventsMailbox) -> bool:
    try:
        reload_api()
    except Exception as exc:
        log.error("TLS reload failed for the API listeners, which keep the old certificates: %s", exc)
        return False
    problem = await ask(events, ReloadTls)
    if problem is not None:
        log.error("TLS reload failed for the event streams, which keep the old certificates: %s", problem)
        return False
    return True
