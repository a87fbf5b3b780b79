"""Fault injection for tests: make one actor raise on one kind of message, to exercise supervision.

Supervision (``daemon.supervision``, the supervisor's restarts of container actors) only matters
when an actor has a bug, and a test needs a bug on demand, in a real daemon, at a chosen moment.
Nothing on the wire can reach this: the daemon reads two environment variables once, at start,
and only a process that starts the daemon can set them.

- ``CONTAINERD_ACTORS_TEST_FAULTS=1`` enables the hook. Without it, a fault list is ignored (with a
  warning), so a stray variable in a production environment never crashes an actor.
- ``CONTAINERD_ACTORS_FAULTS`` lists faults, comma-separated, each ``ACTOR:MESSAGE[:TIMES]``:

  - ``ACTOR`` is ``container=<id>`` (that container's actor), ``events`` or ``metrics``;
  - ``MESSAGE`` is the class name of the message the actor takes from its mailbox; for an ``Ask``,
    the name of the request it carries (``Stats``, ``Signal``, ``Events``, ``Metrics``), else the
    internal message's (``EventDraft``, ``InitExited``, ``AddToCounter``);
  - ``TIMES`` is how many such messages raise (every one when it is left out).

  For example ``container=web:Stats`` makes every ``Stats`` request crash the actor of ``web``
  (so a test can also drive it past its restart limit), and ``events:EventDraft:1`` crashes the
  events actor once, on the next event it is told.

The actor raises ``InjectedFault`` from its loop, just before it would handle the message,
exactly where a bug in its handling would surface.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import attrs

log = logging.getLogger(__name__)

ENABLE_VARIABLE = "CONTAINERD_ACTORS_TEST_FAULTS"
FAULTS_VARIABLE = "CONTAINERD_ACTORS_FAULTS"


class InjectedFault(RuntimeError):
    """The exception a fault raises: a stand-in for any bug in an actor."""


@attrs.frozen
class Fault:
    actor: str
    message: str
    #: None: every matching message raises.
    times: int | None = None

    @classmethod
    def parse(cls, text: str) -> Fault:
        parts = text.strip().split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise ValueError(f"a fault is ACTOR:MESSAGE[:TIMES], got {text!r}")
        times = int(parts[2]) if len(parts) == 3 else None
        if times is not None and times < 1:
            raise ValueError(f"a fault's TIMES must be at least 1, got {text!r}")
        return cls(parts[0], parts[1], times)


def message_name(message: object) -> str:
    """The name a fault matches: the request's class for an ``Ask``, else the message's own."""
    request = getattr(message, "request", None)
    return type(request if request is not None else message).__name__


class FaultHook:
    """The faults still to fire; checked by each actor's loop before every message it handles."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self._remaining: dict[tuple[str, str], int | None] = {}
        for fault in faults or []:
            self._remaining[(fault.actor, fault.message)] = fault.times

    def __bool__(self) -> bool:
        return bool(self._remaining)

    def check(self, actor: str, message: object) -> None:
        """Raise ``InjectedFault`` if a fault names this actor and this message."""
        if not self._remaining:
            return
        key = (actor, message_name(message))
        if key not in self._remaining:
            return
        times = self._remaining[key]
        if times is not None:
            if times <= 1:
                del self._remaining[key]
            else:
                self._remaining[key] = times - 1
        raise InjectedFault(f"fault injected for tests: {actor} on {key[1]}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> FaultHook:
        listed = environ.get(FAULTS_VARIABLE, "").strip()
        if not listed:
            return cls()
        if environ.get(ENABLE_VARIABLE) != "1":
            log.warning(
                "ignoring %s: fault injection needs %s=1 (tests only)", FAULTS_VARIABLE, ENABLE_VARIABLE
            )
            return cls()
        faults = [Fault.parse(text) for text in listed.split(",") if text.strip()]
        log.warning(
            "fault injection for tests is on: %s", ", ".join(f"{f.actor}:{f.message}" for f in faults)
        )
        return cls(faults)


#: The hook of a daemon without faults (and of every actor a test builds without one).
NO_FAULTS = FaultHook()
