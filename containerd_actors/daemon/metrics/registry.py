"""The daemon's own metrics: timers, counters and gauges, kept as the original containerd kept them.

The statistics follow go-metrics so that numbers compare with the original's:

- a timer keeps a forward-decaying reservoir of 1028 durations (alpha 0.015, which weights the last five
  minutes or so) for min, max, mean, stddev and percentiles, with go-metrics' percentile interpolation;
- its rates are exponentially weighted moving averages over 1, 5 and 15 minutes that tick every 5 s,
  plus a mean rate since creation.

Nothing here runs in the background. Ticks that fell due since the last update are applied when the timer
is next touched, which gives the same numbers as a ticking goroutine without a task per timer, and lets
tests drive time through an injected clock (integer nanoseconds, like ``time.monotonic_ns``).

``format_log_lines`` reproduces go-metrics' ``Log`` output, which the original flushed every
``--metrics-interval``. The Prometheus format is ``protocol.prometheus``: it formats the wire's
``MetricsSnapshot``, which ``actr`` formats too.
"""

from __future__ import annotations

import errno
import heapq
import math
import os
import random
import resource
import time
from collections.abc import Callable

import trio

from containerd_actors.protocol.stats import CounterSnapshot, GaugeSnapshot, MetricsSnapshot, TimerSnapshot

Clock = Callable[[], int]

NS_PER_S = 1_000_000_000
TICK_NS = 5 * NS_PER_S
RESERVOIR_SIZE = 1028
DECAY_ALPHA = 0.015
#: Priorities grow as exp(alpha * age); rescaling hourly keeps them far from overflow.
RESCALE_NS = 3600 * NS_PER_S
#: The quantiles of the log and of the snapshot, in this order.
QUANTILES = (0.5, 0.75, 0.95, 0.99, 0.999)


# --------------------------------------------------------------------------- statistics


class EWMA:
    """An exponentially weighted moving average of an event rate, ticked every 5 seconds."""

    def __init__(self, minutes: float) -> None:
        self._alpha = 1.0 - math.exp(-TICK_NS / NS_PER_S / 60.0 / minutes)
        self._uncounted = 0
        self._rate = 0.0  # events per second
        self._initialised = False

    def update(self, n: int) -> None:
        self._uncounted += n

    def tick(self, ticks: int = 1) -> None:
        """Apply `ticks` ticks at once; all but the first see no events, since updates come between."""
        if ticks <= 0:
            return
        instant = self._uncounted / (TICK_NS / NS_PER_S)
        self._uncounted = 0
        if self._initialised:
            self._rate += self._alpha * (instant - self._rate)
        else:
            # go-metrics starts from the first tick's rate rather than from zero.
            self._rate = instant
            self._initialised = True
        if ticks > 1:
            self._rate *= (1.0 - self._alpha) ** (ticks - 1)

    @property
    def rate(self) -> float:
        """Events per second."""
        return self._rate


class Meter:
    """Counts events and their 1, 5 and 15-minute and mean rates."""

    def __init__(self, now: int) -> None:
        self._start = now
        self._last_tick = now
        self.count = 0
        self._ewmas = (EWMA(1), EWMA(5), EWMA(15))

    def _catch_up(self, now: int) -> None:
        ticks = (now - self._last_tick) // TICK_NS
        if ticks > 0:
            for ewma in self._ewmas:
                ewma.tick(ticks)
            self._last_tick += ticks * TICK_NS

    def mark(self, now: int, n: int = 1) -> None:
        self._catch_up(now)
        self.count += n
        for ewma in self._ewmas:
            ewma.update(n)

    def rates(self, now: int) -> tuple[float, float, float, float]:
        """(1-minute, 5-minute, 15-minute, mean) events per second."""
        self._catch_up(now)
        elapsed = (now - self._start) / NS_PER_S
        mean = self.count / elapsed if elapsed > 0 else 0.0
        one, five, fifteen = (ewma.rate for ewma in self._ewmas)
        return one, five, fifteen, mean


class ExpDecayReservoir:
    """A bounded sample that favours recent values (forward decay, Cormode et al. 2009).

    Each value gets the priority exp(alpha * age of the reservoir) / u, with u uniform in (0, 1]; the
    reservoir keeps the highest priorities, so an old value survives only by a lucky draw.
    """

    def __init__(self, now: int, size: int = RESERVOIR_SIZE, alpha: float = DECAY_ALPHA) -> None:
        self._size = size
        self._alpha = alpha
        self._start = now
        self._next_rescale = now + RESCALE_NS
        self._heap: list[tuple[float, int, int]] = []  # (priority, sequence, value)
        self._sequence = 0

    def update(self, value: int, now: int) -> None:
        if now >= self._next_rescale:
            self._rescale(now)
        weight = math.exp(self._alpha * (now - self._start) / NS_PER_S)
        priority = weight / (1.0 - random.random())
        self._sequence += 1
        item = (priority, self._sequence, value)
        if len(self._heap) < self._size:
            heapq.heappush(self._heap, item)
        elif priority > self._heap[0][0]:
            heapq.heapreplace(self._heap, item)

    def _rescale(self, now: int) -> None:
        factor = math.exp(-self._alpha * (now - self._start) / NS_PER_S)
        self._heap = [(priority * factor, seq, value) for priority, seq, value in self._heap]
        heapq.heapify(self._heap)
        self._start = now
        self._next_rescale = now + RESCALE_NS

    def values(self) -> list[int]:
        return [value for _, _, value in self._heap]


def percentiles(sorted_values: list[int], quantiles: tuple[float, ...] = QUANTILES) -> list[float]:
    """go-metrics' SamplePercentiles: linear interpolation at position q * (n + 1), clamped at both ends."""
    size = len(sorted_values)
    if size == 0:
        return [0.0] * len(quantiles)
    result = []
    for q in quantiles:
        position = q * (size + 1)
        if position < 1.0:
            result.append(float(sorted_values[0]))
        elif position >= size:
            result.append(float(sorted_values[-1]))
        else:
            lower = float(sorted_values[int(position) - 1])
            upper = float(sorted_values[int(position)])
            result.append(lower + (position - math.floor(position)) * (upper - lower))
    return result


def mean_and_stddev(values: list[int]) -> tuple[float, float]:
    """Mean and population standard deviation, as go-metrics computes them (dividing by n, not n-1)."""
    if not values:
        return 0.0, 0.0
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    return mean, math.sqrt(variance)


# --------------------------------------------------------------------------- metrics


class Timer:
    """Durations of one operation, in nanoseconds, with their rate."""

    def __init__(self, name: str, help: str, clock: Clock) -> None:
        self.name = name
        self.help = help
        self._clock = clock
        now = clock()
        self._reservoir = ExpDecayReservoir(now)
        self._meter = Meter(now)
        self._sum = 0

    def update(self, duration_ns: int, now: int | None = None) -> None:
        """Record one operation that took `duration_ns` and finished at `now` (the registry's clock)."""
        if now is None:
            now = self._clock()
        self._reservoir.update(duration_ns, now)
        self._meter.mark(now)
        self._sum += duration_ns

    @property
    def count(self) -> int:
        return self._meter.count

    def snapshot(self, now: int | None = None) -> TimerSnapshot:
        if now is None:
            now = self._clock()
        values = sorted(self._reservoir.values())
        mean, stddev = mean_and_stddev(values)
        median, p75, p95, p99, p999 = percentiles(values)
        rate1, rate5, rate15, mean_rate = self._meter.rates(now)
        return TimerSnapshot(
            name=self.name,
            help=self.help,
            count=self._meter.count,
            sum=self._sum,
            min=values[0] if values else 0,
            max=values[-1] if values else 0,
            mean=mean,
            stddev=stddev,
            median=median,
            p75=p75,
            p95=p95,
            p99=p99,
            p999=p999,
            rate1=rate1,
            rate5=rate5,
            rate15=rate15,
            mean_rate=mean_rate,
        )


class Counter:
    """A count; `monotonic` ones only rise, others (such as live containers) also fall."""

    def __init__(self, name: str, help: str, monotonic: bool) -> None:
        self.name = name
        self.help = help
        self.monotonic = monotonic
        self.count = 0

    def inc(self, n: int = 1) -> None:
        if n < 0 and self.monotonic:
            raise ValueError(f"counter {self.name} only rises; register it with monotonic=False")
        self.count += n

    def dec(self, n: int = 1) -> None:
        self.inc(-n)

    def snapshot(self) -> CounterSnapshot:
        return CounterSnapshot(name=self.name, help=self.help, count=self.count, monotonic=self.monotonic)


class Gauge:
    """A value that is either set, or read from a function at snapshot time (such as the open fds)."""

    def __init__(self, name: str, help: str, read: Callable[[], int] | None) -> None:
        self.name = name
        self.help = help
        self._read = read
        self._value = 0

    def set(self, value: int) -> None:
        if self._read is not None:
            raise TypeError(f"gauge {self.name} is read from a function and cannot be set")
        self._value = value

    @property
    def value(self) -> int:
        return int(self._read()) if self._read is not None else self._value

    def snapshot(self) -> GaugeSnapshot:
        return GaugeSnapshot(name=self.name, help=self.help, value=self.value)


class Registry:
    """Named metrics, created on first use and listed in registration order (timers, counters, gauges)."""

    def __init__(self, clock: Clock = time.monotonic_ns, wall_clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._wall_clock = wall_clock
        self._timers: dict[str, Timer] = {}
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}

    def _check_free(self, name: str) -> None:
        """One name, one metric: the log and Prometheus would otherwise show two series under it."""
        if name in self._timers or name in self._counters or name in self._gauges:
            raise ValueError(f"metric {name!r} is already registered as another kind")

    def timer(self, name: str, help: str = "") -> Timer:
        if name not in self._timers:
            self._check_free(name)
            self._timers[name] = Timer(name, help, self.clock)
        return self._timers[name]

    def counter(self, name: str, help: str = "", *, monotonic: bool = True) -> Counter:
        if name not in self._counters:
            self._check_free(name)
            self._counters[name] = Counter(name, help, monotonic)
        return self._counters[name]

    def gauge(self, name: str, help: str = "", read: Callable[[], int] | None = None) -> Gauge:
        if name not in self._gauges:
            self._check_free(name)
            self._gauges[name] = Gauge(name, help, read)
        return self._gauges[name]

    def snapshot(self, now: int | None = None) -> MetricsSnapshot:
        """Every metric at `now` (the registry's clock; defaults to the present)."""
        if now is None:
            now = self.clock()
        return MetricsSnapshot(
            timestamp=self._wall_clock(),
            timers=[t.snapshot(now) for t in self._timers.values()],
            counters=[c.snapshot() for c in self._counters.values()],
            gauges=[g.snapshot() for g in self._gauges.values()],
        )


# --------------------------------------------------------------------------- the daemon's metrics

CONTAINER_START_TIME = "container-start-time"
CONTAINER_DELETE_TIME = "container-delete-time"
EXEC_PROCESS_TIME = "exec-process-time"
CONTAINERS = "containers"
EVENTS = "events"
EVENTS_SUBSCRIBERS = "events-subscribers"
ACTOR_RESTARTS = "actor-restarts"
TASKS = "tasks"
FDS = "fds"
MEMORY_USED = "memory-used"


def trio_task_count() -> int:
    """Tasks alive in the current trio run (the counterpart of the original's goroutines); 0 outside trio."""
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        return 0
    if root is None:
        return 0
    count = 0
    pending = [root]
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


def open_fd_count() -> int:
    """Open file descriptors of this process, not counting the one that lists them.

    Out of descriptors (EMFILE), the listing cannot be opened, which is when the gauge matters
    most: then every number below the soft limit is in use, so the count is the limit itself.
    """
    try:
        return len(os.listdir("/proc/self/fd")) - 1
    except OSError as exc:
        if exc.errno != errno.EMFILE:
            raise
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_last_resident_bytes = 0


def resident_memory_bytes() -> int:
    """Resident set size of this process; out of descriptors, the last size read (never an error:
    a snapshot is asked for exactly when something is wrong)."""
    global _last_resident_bytes
    try:
        with open("/proc/self/statm", "rb") as f:
            _last_resident_bytes = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            raise
    return _last_resident_bytes


def daemon_registry(
    clock: Clock = time.monotonic_ns, wall_clock: Callable[[], float] = time.time
) -> Registry:
    """A registry holding the metrics the original containerd reported, in its order."""
    registry = Registry(clock, wall_clock)
    registry.timer(CONTAINER_START_TIME, "Time to start a container, from request to running.")
    registry.timer(CONTAINER_DELETE_TIME, "Time to delete a container.")
    registry.timer(EXEC_PROCESS_TIME, "Time to start an additional process in a container.")
    registry.counter(CONTAINERS, "Containers the daemon manages.", monotonic=False)
    registry.counter(EVENTS, "Events published.")
    registry.counter(EVENTS_SUBSCRIBERS, "Connected event subscribers.", monotonic=False)
    registry.counter(ACTOR_RESTARTS, "Actors restarted after a crash (container, events, metrics).")
    registry.gauge(TASKS, "Trio tasks in the daemon.", trio_task_count)
    registry.gauge(FDS, "Open file descriptors of the daemon.", open_fd_count)
    registry.gauge(MEMORY_USED, "Resident memory of the daemon, in bytes.", resident_memory_bytes)
    return registry


# --------------------------------------------------------------------------- the log format


def snapshot_log_lines(snapshot: MetricsSnapshot, *, compact: bool = False) -> list[str]:
    """go-metrics' Log lines for a snapshot, one string per log line, without the logger's prefix.

    go-metrics pads each value into a column ("  count:       %9d", "  mean:        %12.2f"). The
    original README shows the same lines with the padding squeezed out ("count: 22"); `compact` gives
    that form.
    """
    lines: list[str] = []
    for t in snapshot.timers:
        lines.append(f"timer {t.name}")
        lines.append(f"  count:       {t.count:9d}")
        lines.append(f"  min:         {t.min:9d}")
        lines.append(f"  max:         {t.max:9d}")
        for label, value in (
            ("mean:       ", t.mean),
            ("stddev:     ", t.stddev),
            ("median:     ", t.median),
            ("75%:        ", t.p75),
            ("95%:        ", t.p95),
            ("99%:        ", t.p99),
            ("99.9%:      ", t.p999),
            ("1-min rate: ", t.rate1),
            ("5-min rate: ", t.rate5),
            ("15-min rate:", t.rate15),
            ("mean rate:  ", t.mean_rate),
        ):
            lines.append(f"  {label} {value:12.2f}")
    for c in snapshot.counters:
        lines.append(f"counter {c.name}")
        lines.append(f"  count:       {c.count:9d}")
    for g in snapshot.gauges:
        lines.append(f"gauge {g.name}")
        lines.append(f"  value:       {g.value:9d}")
    if compact:
        lines = [" ".join(line.split()) for line in lines]
    return lines


def format_log_lines(registry: Registry, now: int | None = None, *, compact: bool = False) -> list[str]:
    """The Telemetry block the daemon logs every --metrics-interval, as of `now` on the registry's clock."""
    return snapshot_log_lines(registry.snapshot(now), compact=compact)
