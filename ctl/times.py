"""Time arguments for ``actr events --since``: absolute, Unix, or relative to now.

The daemon stamps events with its wall clock in seconds since the Unix epoch, so everything is
turned into that. Relative times (``10m``) are taken from this machine's clock, which is the
daemon's clock whenever ``actr`` runs on the same host.
"""

from __future__ import annotations

import time
from datetime import datetime

from containerd_actors.client import parse_duration


class BadTime(ValueError):
    """The text is none of the accepted forms; the message lists them."""


def parse_since(text: str, now: float | None = None) -> float:
    """Seconds since the epoch for ``--since``.

    Accepts a duration back from now (``10m``, ``1h30m``; see ``protocol.durations``), a Unix
    timestamp (``1700000000`` or with a fraction), or ISO 8601 / RFC 3339
    (``2026-01-02T15:04:05Z``, ``2026-01-02 15:04``; without an offset it is local time). A bare
    number is a timestamp, never a duration.
    """
    text = text.strip()
    duration = parse_duration(text)
    if duration is not None:
        return (time.time() if now is None else now) - duration
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise BadTime(
            f"invalid time {text!r}: use a duration back from now (10m, 1h30m), "
            "a Unix timestamp, or ISO 8601 (2026-01-02T15:04:05Z)"
        ) from None
