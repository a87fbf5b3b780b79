"""The metrics registry against go-metrics' numbers and the original's Telemetry log block.

Time is driven through an injected clock, so rates and decay are checked exactly rather than by sleeping.
"""

from __future__ import annotations

import json
import math
import random
import re

import jsonschema
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from containerd_actors.daemon.metrics import registry as metrics
from containerd_actors.daemon.metrics.registry import (
    EWMA,
    NS_PER_S,
    ExpDecayReservoir,
    Registry,
    daemon_registry,
    format_log_lines,
    percentiles,
    snapshot_log_lines,
)
from containerd_actors.protocol.codec import converter
from containerd_actors.protocol.prometheus import format_prometheus, timer_quantiles
from containerd_actors.protocol.schema import class_schema
from containerd_actors.protocol.stats import (
    CounterSnapshot,
    GaugeSnapshot,
    MetricsSnapshot,
    TimerSnapshot,
)

# The Telemetry block of the original README, without the logger's "[containerd] 2015/12/16 11:48:28 "
# prefix, and with our "tasks" in place of its "goroutines". The README squeezes go-metrics' column
# padding out of each line, which is what compact=True reproduces.
README_BLOCK = """\
timer container-start-time
count: 22
min: 25425883
max: 113077691
mean: 68386923.27
stddev: 20928453.26
median: 65489003.50
75%: 82393210.50
95%: 112267814.75
99%: 113077691.00
99.9%: 113077691.00
1-min rate: 0.00
5-min rate: 0.01
15-min rate: 0.01
mean rate: 0.03
counter containers
count: 1
counter events
count: 87
counter events-subscribers
count: 2
gauge tasks
value: 38
gauge fds
value: 18"""

README_SNAPSHOT = MetricsSnapshot(
    timestamp=0.0,
    timers=[
        TimerSnapshot(
            name="container-start-time",
            count=22,
            min=25425883,
            max=113077691,
            mean=68386923.27,
            stddev=20928453.26,
            median=65489003.5,
            p75=82393210.5,
            p95=112267814.75,
            p99=113077691.0,
            p999=113077691.0,
            rate1=0.0012,
            rate5=0.0071,
            rate15=0.0085,
            mean_rate=0.0312,
        )
    ],
    counters=[
        CounterSnapshot("containers", count=1, monotonic=False),
        CounterSnapshot("events", count=87),
        CounterSnapshot("events-subscribers", count=2, monotonic=False),
    ],
    gauges=[GaugeSnapshot("tasks", value=38), GaugeSnapshot("fds", value=18)],
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * NS_PER_S)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --------------------------------------------------------------------------- timer statistics


def test_timer_statistics_of_known_data(clock: FakeClock) -> None:
    timer = Registry(clock).timer("t")
    values = list(range(1, 11))
    random.Random(1).shuffle(values)
    for value in values:
        timer.update(value)
    snap = timer.snapshot()
    assert (snap.count, snap.sum, snap.min, snap.max) == (10, 55, 1, 10)
    assert snap.mean == 5.5
    assert snap.stddev == pytest.approx(math.sqrt(8.25))  # population, as go-metrics
    # go-metrics interpolates at q * (n + 1): 5.5 -> halfway between the 5th and 6th value.
    assert (snap.median, snap.p75, snap.p95, snap.p99, snap.p999) == (5.5, 8.25, 10.0, 10.0, 10.0)


def test_percentile_interpolation_and_clamping() -> None:
    values = list(range(1, 101))
    assert percentiles(values, (0.5, 0.95, 0.99, 0.999)) == pytest.approx([50.5, 95.95, 99.99, 100.0])
    assert percentiles([7], (0.001, 0.5, 0.999)) == [7.0, 7.0, 7.0]
    assert percentiles([], (0.5,)) == [0.0]
    # Below position 1 the smallest value is used, not an extrapolation.
    assert percentiles([10, 20, 30], (0.1,)) == [10.0]


def test_empty_timer_is_all_zeros(clock: FakeClock) -> None:
    snap = Registry(clock).timer("t").snapshot()
    assert (snap.count, snap.min, snap.max, snap.mean, snap.stddev, snap.median, snap.mean_rate) == (
        0,
        0,
        0,
        0.0,
        0.0,
        0.0,
        0.0,
    )


def test_timer_records_a_duration_at_the_registry_clock(clock: FakeClock) -> None:
    timer = Registry(clock).timer("t")
    clock.advance(60)
    timer.update(NS_PER_S // 4)
    snap = timer.snapshot()
    assert (snap.count, snap.min, snap.max, snap.sum) == (1, NS_PER_S // 4, NS_PER_S // 4, NS_PER_S // 4)
    assert snap.mean_rate == pytest.approx(1 / 60)


def test_reservoir_is_bounded_and_favours_recent_values(clock: FakeClock) -> None:
    random.seed(7)
    reservoir = ExpDecayReservoir(clock.now)
    for _ in range(2000):
        reservoir.update(0, clock.now)
    clock.advance(600)  # ten minutes later: weight exp(0.015 * 600) = e**9 per new value
    for _ in range(2000):
        reservoir.update(1, clock.now)
    values = reservoir.values()
    assert len(values) == metrics.RESERVOIR_SIZE
    assert sum(values) / len(values) > 0.99


def test_reservoir_rescales_without_losing_values(clock: FakeClock) -> None:
    random.seed(3)
    reservoir = ExpDecayReservoir(clock.now, size=50)
    for hour in range(30):  # exp(0.015 * 30 h) would overflow a float without rescaling
        for _ in range(20):
            reservoir.update(hour, clock.now)
            clock.advance(180)
    values = reservoir.values()
    assert len(values) == 50
    assert all(math.isfinite(v) for v in values)
    assert min(values) >= 27  # only the last few hours survive


# --------------------------------------------------------------------------- rates


@pytest.mark.parametrize(
    ("minutes", "after_one_minute", "after_two_minutes"),
    # 0.6 * exp(-t / window): the expectations of go-metrics' ewma_test.go.
    [
        (1, 0.22072766470286553, 0.08120116994196772),
        (5, 0.49123845184678905, 0.4021920276213837),
        (15, 0.5613041910189706, 0.5251039914257685),
    ],
)
def test_ewma_matches_go_metrics(minutes: int, after_one_minute: float, after_two_minutes: float) -> None:
    ewma = EWMA(minutes)
    ewma.update(3)
    ewma.tick()
    assert ewma.rate == pytest.approx(0.6)
    for _ in range(12):
        ewma.tick()
    assert ewma.rate == pytest.approx(after_one_minute, rel=1e-12)
    ewma.tick(12)  # catching up a minute at once equals twelve ticks
    assert ewma.rate == pytest.approx(after_two_minutes, rel=1e-12)


def test_timer_rates_tick_every_five_seconds_and_decay(clock: FakeClock) -> None:
    timer = Registry(clock).timer("t")
    clock.advance(1)
    for _ in range(3):
        timer.update(1000)
    assert timer.snapshot().rate1 == 0.0  # no tick yet
    clock.advance(4)  # 5 s after creation: first tick, 3 events / 5 s
    snap = timer.snapshot()
    assert (snap.rate1, snap.rate5, snap.rate15) == pytest.approx((0.6, 0.6, 0.6))
    assert snap.mean_rate == pytest.approx(3 / 5)
    clock.advance(60)
    snap = timer.snapshot()
    assert snap.rate1 == pytest.approx(0.22072766470286553)
    assert snap.rate5 == pytest.approx(0.49123845184678905)
    assert snap.mean_rate == pytest.approx(3 / 65)
    clock.advance(3600)
    snap = timer.snapshot()
    minutes = (3600 + 60) / 60  # since the first tick
    assert snap.rate1 == pytest.approx(0.6 * math.exp(-minutes))
    assert snap.rate15 == pytest.approx(0.6 * math.exp(-minutes / 15))
    assert snap.count == 3  # decay forgets rates, never the count


def test_events_between_ticks_count_in_the_next_tick(clock: FakeClock) -> None:
    timer = Registry(clock).timer("t")
    clock.advance(4.9)
    timer.update(1)
    clock.advance(0.1)  # tick at 5 s sees it
    timer.update(1)  # belongs to the tick at 10 s
    assert timer.snapshot().rate1 == pytest.approx(0.2)
    clock.advance(5)  # the second tick sees one event again: the average stays at 0.2
    assert timer.snapshot().rate1 == pytest.approx(0.2)
    clock.advance(5)  # a tick without events: 0.2 decays by one step
    assert timer.snapshot().rate1 == pytest.approx(0.2 * math.exp(-5 / 60))


# --------------------------------------------------------------------------- counters, gauges, registry


def test_counters_and_gauges(clock: FakeClock) -> None:
    registry = Registry(clock)
    events = registry.counter("events")
    containers = registry.counter("containers", monotonic=False)
    events.inc()
    events.inc(4)
    containers.inc(2)
    containers.dec()
    with pytest.raises(ValueError, match="only rises"):
        events.dec()
    set_gauge = registry.gauge("set")
    set_gauge.set(12)
    read_gauge = registry.gauge("read", read=lambda: 41)
    with pytest.raises(TypeError):
        read_gauge.set(1)
    snap = registry.snapshot()
    assert [(c.name, c.count, c.monotonic) for c in snap.counters] == [
        ("events", 5, True),
        ("containers", 1, False),
    ]
    assert [(g.name, g.value) for g in snap.gauges] == [("set", 12), ("read", 41)]
    assert registry.counter("events") is events  # get-or-create
    with pytest.raises(ValueError, match="another kind"):
        registry.timer("events")


async def test_daemon_registry_gauges_read_the_live_process() -> None:
    registry = daemon_registry()
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(trio.sleep_forever)
        await trio.testing.wait_all_tasks_blocked()
        gauges = {g.name: g.value for g in registry.snapshot().gauges}
        nursery.cancel_scope.cancel()
    assert gauges["tasks"] >= 4  # the three sleepers and this test, at least
    assert gauges["fds"] >= 3
    assert gauges["memory-used"] > 1 << 20
    snap = registry.snapshot()
    assert [t.name for t in snap.timers] == [
        "container-start-time",
        "container-delete-time",
        "exec-process-time",
    ]
    assert [c.name for c in snap.counters] == ["containers", "events", "events-subscribers", "actor-restarts"]


def test_task_gauge_outside_trio_is_zero() -> None:
    assert metrics.trio_task_count() == 0


# --------------------------------------------------------------------------- the log block

_INT = r" *\d+"
_FIXED = r" *-?\d+\.\d{2}"
TIMER_LINE_SHAPES = [
    r"timer \S+",
    r"  count:       " + _INT,
    r"  min:         " + _INT,
    r"  max:         " + _INT,
    r"  mean:        " + _FIXED,
    r"  stddev:      " + _FIXED,
    r"  median:      " + _FIXED,
    r"  75%:         " + _FIXED,
    r"  95%:         " + _FIXED,
    r"  99%:         " + _FIXED,
    r"  99.9%:       " + _FIXED,
    r"  1-min rate:  " + _FIXED,
    r"  5-min rate:  " + _FIXED,
    r"  15-min rate: " + _FIXED,
    r"  mean rate:   " + _FIXED,
]


def test_log_block_compact_form_is_the_readme_block() -> None:
    assert snapshot_log_lines(README_SNAPSHOT, compact=True) == README_BLOCK.splitlines()


def test_log_lines_have_go_metrics_columns(clock: FakeClock) -> None:
    registry = daemon_registry(clock)
    start = registry.timer("container-start-time")
    for duration in (25425883, 113077691, 65489003, 70000000):
        clock.advance(2)
        start.update(duration)
    registry.counter("containers", monotonic=False).inc()
    registry.counter("events").inc(87)
    registry.gauge("padding-check", read=lambda: 7)
    clock.advance(30)
    snapshot = registry.snapshot()  # one reading: memory-used and fds are live gauges
    lines = snapshot_log_lines(snapshot)

    timer_block = lines[: len(TIMER_LINE_SHAPES)]
    for line, shape in zip(timer_block, TIMER_LINE_SHAPES, strict=True):
        assert re.fullmatch(shape, line), (line, shape)
    assert timer_block[0] == "timer container-start-time"
    assert timer_block[1] == "  count:               4"  # %9d
    assert timer_block[2] == "  min:          25425883"
    assert timer_block[4] == "  mean:         68498144.25"  # %12.2f
    assert "counter containers" in lines
    assert lines[lines.index("counter events") + 1] == "  count:              87"
    assert lines[-2:] == ["gauge padding-check", "  value:               7"]
    # Every line squeezes to the README's shape.
    compact = snapshot_log_lines(snapshot, compact=True)
    assert compact == [" ".join(line.split()) for line in lines]
    assert compact[4] == "mean: 68498144.25"


def test_log_kinds_come_in_readme_order(clock: FakeClock) -> None:
    kinds = [line.split()[0] for line in format_log_lines(daemon_registry(clock)) if not line.startswith(" ")]
    assert kinds == ["timer"] * 3 + ["counter"] * 4 + ["gauge"] * 3


# --------------------------------------------------------------------------- Prometheus


def _families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_prometheus_exposition_parses(clock: FakeClock) -> None:
    registry = daemon_registry(clock)
    start = registry.timer("container-start-time")
    for ms in (10, 20, 30, 40):
        start.update(ms * 1_000_000)
    registry.counter("events").inc(87)
    registry.counter("containers", monotonic=False).inc(2)
    clock.advance(10)
    text = format_prometheus(registry.snapshot())
    assert text.endswith("\n")
    families = _families(text)

    summary = families["containerd_actors_container_start_time_seconds"]
    assert summary.type == "summary"
    samples = {(s.name, s.labels.get("quantile")): s.value for s in summary.samples}
    assert samples[("containerd_actors_container_start_time_seconds", "0.5")] == pytest.approx(0.025)
    assert samples[("containerd_actors_container_start_time_seconds", "0.999")] == pytest.approx(0.04)
    assert samples[("containerd_actors_container_start_time_seconds_sum", None)] == pytest.approx(0.1)
    assert samples[("containerd_actors_container_start_time_seconds_count", None)] == 4
    assert {s.labels.get("quantile") for s in summary.samples} >= {"0.5", "0.75", "0.95", "0.99", "0.999"}

    events = families["containerd_actors_events"]  # the parser drops the _total suffix from the family
    assert events.type == "counter"
    assert [(s.name, s.value) for s in events.samples] == [("containerd_actors_events_total", 87)]
    containers = families["containerd_actors_containers"]
    assert containers.type == "gauge"  # it falls as containers are deleted
    assert containers.samples[0].value == 2
    assert families["containerd_actors_memory_used"].type == "gauge"
    assert families["containerd_actors_events_subscribers"].type == "gauge"
    assert "# TYPE containerd_actors_events_total counter" in text.splitlines()


def test_prometheus_quantiles_are_the_snapshot_quantiles() -> None:
    """The labels name the quantiles the registry computes into the snapshot's fields, in order."""
    snap = TimerSnapshot("t", median=1.0, p75=2.0, p95=3.0, p99=4.0, p999=5.0)
    assert timer_quantiles(snap) == tuple(zip(metrics.QUANTILES, (1.0, 2.0, 3.0, 4.0, 5.0), strict=True))


def test_prometheus_escapes_help_text() -> None:
    snapshot = MetricsSnapshot(
        timestamp=0.0, gauges=[GaugeSnapshot("odd-name.x", help='back\\slash\nnew "line"', value=3)]
    )
    text = format_prometheus(snapshot)
    assert '# HELP containerd_actors_odd_name_x back\\\\slash\\nnew "line"\n' in text
    family = _families(text)["containerd_actors_odd_name_x"]
    assert family.documentation == 'back\\slash\nnew "line"'
    assert format_prometheus(MetricsSnapshot(timestamp=0.0)) == ""


# --------------------------------------------------------------------------- the wire


def test_snapshot_round_trips_the_wire_and_matches_its_schema(clock: FakeClock) -> None:
    registry = daemon_registry(clock)
    registry.timer("exec-process-time").update(123456)
    clock.advance(7)
    snapshot = registry.snapshot()
    wire = json.loads(json.dumps(converter.unstructure(snapshot)))
    assert converter.structure(wire, MetricsSnapshot) == snapshot
    jsonschema.validate(wire, class_schema(MetricsSnapshot, tagged=False))
    assert converter.structure(
        json.loads(json.dumps(converter.unstructure(README_SNAPSHOT))), MetricsSnapshot
    )
