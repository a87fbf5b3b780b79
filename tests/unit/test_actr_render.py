"""Everything ``actr`` prints, rendered without a daemon: tables, event lines, JSON, colours."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime

import pytest
from rich.console import Console
from support.containers import make_container

from containerd_actors.protocol import Checkpoint, ContainerInfo, Event
from containerd_actors.protocol.stats import (
    BlkioEntry,
    BlkioStats,
    CgroupStats,
    ContainerStats,
    CounterSnapshot,
    CpuStats,
    CpuUsage,
    GaugeSnapshot,
    MemoryData,
    MemoryStats,
    MetricsSnapshot,
    PidsStats,
    TimerSnapshot,
)
from ctl import render, render_live

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_containers_table_in_a_rich_console() -> None:
    console = Console(file=io.StringIO(), width=120)
    containers = [make_container(1), make_container(22, "paused"), make_container(333, "stopped")]
    render.print_containers(containers, io.StringIO(), console=console)
    lines = console.file.getvalue().splitlines()
    assert lines[0].split() == ["ID", "PATH", "STATUS", "PID1"]
    assert [line.split() for line in lines[1:]] == [
        ["redis-1", "/containers/redis-1", "running", "14001"],
        ["redis-22", "/containers/redis-22", "paused", "14022"],
        ["redis-333", "/containers/redis-333", "stopped", "14333"],
    ]
    # Columns are aligned: each header word starts where its values start.
    for column in ("PATH", "STATUS", "PID1"):
        start = lines[0].index(column)
        assert all(line[start - 1] == " " and line[start] != " " for line in lines[1:])


def test_colours_do_not_disturb_alignment() -> None:
    containers = [make_container(1), make_container(22, "paused"), make_container(4, "weird")]
    plain = render.containers_lines(containers)
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system="standard")
    render.print_containers(containers, io.StringIO(), console=console)
    coloured = console.file.getvalue()
    assert "\x1b[32mrunning" in coloured
    assert ANSI.sub("", coloured).splitlines() == plain


def test_empty_table_has_only_the_header() -> None:
    stream = io.StringIO()
    render.print_containers([], stream)
    assert stream.getvalue() == "ID   PATH   STATUS   PID1\n"


def test_containers_json_uses_wire_field_names() -> None:
    data = json.loads(render.containers_json([make_container(1), make_container(2)]))
    assert isinstance(data, list)
    assert set(data[0]) == {"id", "bundle", "status", "pid", "processes"}
    assert data[1]["id"] == "redis-2"
    assert data[1]["bundle"] == "/containers/redis-2"
    assert data[1]["pid"] == 14002
    assert data[1]["processes"][0]["args"] == ["redis-server"]
    assert json.loads(render.containers_json([])) == []


def test_event_line_lines_up_with_header() -> None:
    event = Event(seq=7, timestamp=1_700_000_000.25, type="exit", id="redis", pid=4242, status=137)
    header, line = render.event_header_line(), render.event_line(event)
    assert header.split() == ["TYPE", "ID", "PID", "STATUS", "SEQ", "TIME"]
    when = datetime.fromtimestamp(1_700_000_000.25).isoformat(timespec="milliseconds")
    assert line.split() == ["exit", "redis", "4242", "137", "7", when]
    for column, value in zip(header.split(), line.split(), strict=True):
        assert line.index(value, header.index(column)) == header.index(column)


def test_event_without_status_shows_dash() -> None:
    event = Event(seq=1, timestamp=0.0, type="start-container", id="redis", pid=1, status=None)
    assert render.event_line(event).split()[3] == "-"


def test_timestamp_is_local_iso_with_milliseconds() -> None:
    text = render.format_timestamp(1_700_000_000.123456)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", text)
    assert text == datetime.fromtimestamp(1_700_000_000.123456).isoformat(timespec="milliseconds")


def test_event_printer_modes() -> None:
    event = Event(seq=3, timestamp=1.5, type="exit", id="redis", pid=9, status=0)
    plain = io.StringIO()
    printer = render.EventPrinter(plain, as_json=False)
    printer.header()
    printer.print(event)
    assert plain.getvalue().splitlines() == [render.event_header_line(), render.event_line(event)]

    as_json = io.StringIO()
    printer = render.EventPrinter(as_json, as_json=True)
    printer.header()
    printer.print(event)
    printer.print(event)
    lines = as_json.getvalue().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == {
        "seq": 3,
        "timestamp": 1.5,
        "type": "exit",
        "id": "redis",
        "pid": 9,
        "status": 0,
        "reason": None,
    }


def _sample(at: float, cpu_ns: int, *, memory: bool = True) -> ContainerStats:
    return ContainerStats(
        id="redis",
        timestamp=at,
        cgroup=CgroupStats(
            cpu=CpuStats(usage=CpuUsage(total=cpu_ns)),
            memory=MemoryStats(usage=MemoryData(usage=512 << 20, limit=1 << 30)) if memory else None,
            blkio=BlkioStats(
                io_service_bytes_recursive=[
                    BlkioEntry(8, 0, "Read", 1024),
                    BlkioEntry(8, 16, "read", 1024),
                    BlkioEntry(8, 0, "Write", 2048),
                    BlkioEntry(8, 0, "Total", 4096),
                ]
            ),
            pids=PidsStats(current=3),
        ),
    )


def test_stats_row_takes_cpu_from_two_samples() -> None:
    earlier, later = _sample(100.0, 1_000_000_000), _sample(101.0, 1_500_000_000)
    assert render_live.stats_row(later, earlier) == (
        "redis",
        "50.00%",
        "512.0MiB / 1.0GiB",
        "50.00%",
        "3",
        "2.0KiB / 2.0KiB",
    )
    first = render_live.stats_row(_sample(100.0, 0, memory=False), None)
    assert first[1:4] == ("-", "-", "-")


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0B"), (1023, "1023B"), (1536, "1.5KiB"), (3 << 30, "3.0GiB"), (5 << 50, "5120.0TiB")],
)
def test_human_bytes(value: int, text: str) -> None:
    assert render_live.human_bytes(value) == text


def test_checkpoints_table_has_the_original_columns_and_lines_up() -> None:
    created = 1_700_000_000.0
    lines = render.checkpoints_lines(
        [
            Checkpoint("cp1", True, False, False, False, created),
            Checkpoint("nightly", False, True, True, True, created),
        ]
    )
    assert lines[0] == "NAME      TCP     UNIX SOCKETS   SHELL   CREATED"
    when = datetime.fromtimestamp(created).isoformat(timespec="seconds")
    assert lines[1] == f"cp1       true    false          false   {when}"
    assert lines[2] == f"nightly   false   true           true    {when}"


def test_metrics_table_shows_timers_in_milliseconds() -> None:
    snapshot = MetricsSnapshot(
        timestamp=0.0,
        timers=[
            TimerSnapshot(
                "container-start-time", count=2, min=1_000_000, median=2_500_000, p99=4e6, max=4_000_000
            )
        ],
        counters=[CounterSnapshot("events", count=87)],
        gauges=[GaugeSnapshot("memory-used", value=3 << 20)],
    )
    console = Console(file=io.StringIO(), width=200)
    console.print(render_live.metrics_table(snapshot))
    rows = {line.split()[0]: line.split()[1:] for line in console.file.getvalue().splitlines()[2:]}
    assert rows["container-start-time"] == [
        "timer",
        "2",
        "1.00",
        "ms",
        "2.50",
        "ms",
        "4.00",
        "ms",
        "4.00",
        "ms",
        "0.00/s",
    ]
    assert rows["events"] == ["counter", "87"]
    assert rows["memory-used"] == ["gauge", "3.0MiB"]


@pytest.mark.parametrize(
    "names",
    [
        ["container-start-time", "events", "memory-used"],
        ["t", "c", "g"],  # names shorter than the header: the header sets the first column
        ["a-metric-with-a-rather-long-name-" * 2, "x", "y"],
        ["a-timer-of-21-chars-x", "c", "g"],  # an odd margin around the title: rich puts more right
    ],
)
def test_the_plain_metrics_page_is_what_rich_prints_to_a_pipe(names: list[str]) -> None:
    """``actr metrics | ...`` skips rich (its import costs more than the command): same characters."""
    timer, counter, gauge = names
    snapshot = MetricsSnapshot(
        timestamp=0.0,
        timers=[
            TimerSnapshot(timer, count=12345, min=10**6, median=2.5e6, p99=4e8, max=4 * 10**9, rate1=0.25)
        ],
        counters=[CounterSnapshot(counter, count=87), CounterSnapshot("events-subscribers", count=0)],
        gauges=[GaugeSnapshot(gauge, value=3 << 20), GaugeSnapshot("memory-used", value=123456789)],
    )
    stream = io.StringIO()
    render.table_console(stream).print(render_live.metrics_table(snapshot))
    assert render_live.metrics_page(snapshot) == stream.getvalue()


def test_the_plain_metrics_page_leaves_what_it_cannot_match_to_rich() -> None:
    wide = MetricsSnapshot(timestamp=0.0, counters=[CounterSnapshot("x" * 250, count=1)])
    markup = MetricsSnapshot(timestamp=0.0, counters=[CounterSnapshot("[bold]x", count=1)])
    assert render_live.metrics_page(wide) is None
    assert render_live.metrics_page(markup) is None


def test_rich_decides_when_it_is_told_to_style_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    assert render.rich_plain(io.StringIO())
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert not render.rich_plain(io.StringIO())


def _table_row_by_row(titles: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """The containers table as ``layout_row`` lays it out one row at a time (what
    ``render.plain_table`` must give, faster)."""
    widths = render.column_widths([titles, *rows])
    return [render.layout_row(row, widths, render.COLUMN_GAP) for row in (titles, *rows)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_hosts", [False, True])
def test_the_plain_containers_table_is_laid_out_as_row_by_row(seed: int, with_hosts: bool) -> None:
    """Unicode and wide cells, empty ones, cells wider than their titles and narrower, no rows."""
    import random

    rng = random.Random(seed)
    pieces = ("a", "容器", "é", "e\u0301", "🐳", " ", "", "long-" * 8, "\t")

    def text() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randrange(4)))

    containers = [
        render_container(
            text(), text(), rng.choice(("running", "paused", "", "stopped")), rng.randrange(10**7)
        )
        for _ in range(rng.choice((0, 1, 2, 30)))
    ]
    hosts = [text() for _ in containers] if with_hosts else None
    rows = [(c.id, c.bundle, c.status, str(c.pid)) for c in containers]
    titles = render.CONTAINER_COLUMNS
    if hosts is not None:
        titles = ("HOST", *titles)
        rows = [(host, *row) for host, row in zip(hosts, rows, strict=True)]
    assert render.containers_lines(containers, hosts=hosts) == _table_row_by_row(titles, rows)
    stream = io.StringIO()
    render.print_containers(containers, stream, hosts=hosts)
    assert stream.getvalue() == "".join(line + "\n" for line in _table_row_by_row(titles, rows))


def render_container(id: str, bundle: str, status: str, pid: int) -> ContainerInfo:
    return ContainerInfo(id=id, bundle=bundle, status=status, pid=pid)
