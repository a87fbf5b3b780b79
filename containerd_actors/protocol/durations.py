"""The one grammar for durations typed by people: ``1h30m``, ``500ms``, ``1.5s``, ``2d``.

The daemon's flags (``--metrics-interval``, ``--start-timeout``) take Go's spelling, as the
original containerd's did, and ``actr events --since`` takes the same spelling back from now. A
duration is one or more ``<number><unit>`` parts written together; each command decides what a
bare number means (seconds for the daemon, a Unix timestamp for ``--since``) and words its own
error, so this module only answers "is it a duration, and how long".
"""

from __future__ import annotations

import re

#: Seconds per unit: Go's units (``µs`` with the micro sign, as ``time.Duration`` prints it), and days.
UNIT_SECONDS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
# Longest units first, so that "ms" is never read as "m" followed by a stray "s".
_PART = re.compile(
    r"(\d+(?:\.\d+)?)(" + "|".join(sorted(map(re.escape, UNIT_SECONDS), key=len, reverse=True)) + ")"
)


def parse_duration(text: str) -> float | None:
    """``text`` in seconds, or None if it is not a duration (a bare number is not one)."""
    parts = _PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * UNIT_SECONDS[unit] for number, unit in parts)
