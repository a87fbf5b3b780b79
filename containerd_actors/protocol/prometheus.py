"""A ``MetricsSnapshot`` in the Prometheus text exposition format, version 0.0.4.

It formats a wire type, so both sides need it: the daemon serves it on ``--metrics-address``
and ``actr metrics --prometheus`` prints what a Metrics request returned, with the same names.
"""

from __future__ import annotations

import math
import re

from containerd_actors.protocol.stats import MetricsSnapshot, TimerSnapshot

#: The Content-Type of the exposition format this module writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "containerd_actors_"

_NS_PER_S = 1_000_000_000
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")


def metric_name(name: str, prefix: str = PREFIX) -> str:
    """``container-start-time`` -> ``containerd_actors_container_start_time``."""
    return _INVALID_NAME_CHARS.sub("_", prefix + name)


def timer_quantiles(timer: TimerSnapshot) -> tuple[tuple[float, float], ...]:
    """(quantile, nanoseconds) for each quantile field of the snapshot, smallest first."""
    return ((0.5, timer.median), (0.75, timer.p75), (0.95, timer.p95), (0.99, timer.p99), (0.999, timer.p999))


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _family(lines: list[str], name: str, kind: str, help: str) -> None:
    lines.append(f"# HELP {name} {_help_text(help)}")
    lines.append(f"# TYPE {name} {kind}")


def format_prometheus(snapshot: MetricsSnapshot, prefix: str = PREFIX) -> str:
    """The snapshot as exposition text; empty for a snapshot without metrics.

    Timers become summaries in seconds (Prometheus' base unit), named with a ``_seconds`` suffix;
    their quantiles come from the daemon's decaying sample and ``_sum``/``_count`` from every
    recorded duration. Monotonic counters get the conventional ``_total`` suffix. A counter that
    can fall is exported as a gauge, since Prometheus treats any drop of a counter as a restart.
    """
    lines: list[str] = []
    for t in snapshot.timers:
        name = metric_name(t.name, prefix) + "_seconds"
        _family(lines, name, "summary", t.help or f"Timer {t.name}.")
        for q, value in timer_quantiles(t):
            lines.append(f'{name}{{quantile="{q}"}} {_number(value / _NS_PER_S)}')
        lines.append(f"{name}_sum {_number(t.sum / _NS_PER_S)}")
        lines.append(f"{name}_count {t.count}")
    for c in snapshot.counters:
        if c.monotonic:
            name = metric_name(c.name, prefix) + "_total"
            _family(lines, name, "counter", c.help or f"Counter {c.name}.")
        else:
            name = metric_name(c.name, prefix)
            _family(lines, name, "gauge", c.help or f"Counter {c.name}.")
        lines.append(f"{name} {c.count}")
    for g in snapshot.gauges:
        name = metric_name(g.name, prefix)
        _family(lines, name, "gauge", g.help or f"Gauge {g.name}.")
        lines.append(f"{name} {g.value}")
    return "\n".join(lines) + "\n" if lines else ""
