"""The tables a person watches: ``actr containers stats`` (refreshed in place) and ``actr metrics``.

Apart from ``render`` because rich lays these out (few rows, a live display), where ``render``
computes every other table itself to keep one-shot commands fast; ``metrics_page`` is the one
exception, the metrics table as rich would print it to a pipe, without importing rich.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ctl.render import column_widths

if TYPE_CHECKING:
    from rich.table import Table

    from containerd_actors.client import ContainerStats, MetricsSnapshot


STATS_COLUMNS = ("CONTAINER", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS", "BLOCK I/O")


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def cpu_percent(earlier: ContainerStats | None, later: ContainerStats) -> float | None:
    """CPU time used between two samples over the wall time between them; 100 % is one full core."""
    if earlier is None or earlier.cgroup.cpu is None or later.cgroup.cpu is None:
        return None
    elapsed_ns = (later.timestamp - earlier.timestamp) * 1e9
    if elapsed_ns <= 0:
        return None
    used = later.cgroup.cpu.usage.total - earlier.cgroup.cpu.usage.total
    return max(0.0, used / elapsed_ns * 100)


def block_io(stats: ContainerStats) -> tuple[int, int]:
    """Bytes read and written, summed over devices (the recursive service-bytes counters)."""
    if stats.cgroup.blkio is None:
        return 0, 0
    read = write = 0
    for entry in stats.cgroup.blkio.io_service_bytes_recursive:
        if entry.op.lower() == "read":
            read += entry.value
        elif entry.op.lower() == "write":
            write += entry.value
    return read, write


def stats_row(stats: ContainerStats, earlier: ContainerStats | None) -> tuple[str, ...]:
    """One row under ``STATS_COLUMNS``; CPU % needs the ``earlier`` sample of the same container."""
    cpu = cpu_percent(earlier, stats)
    memory = stats.cgroup.memory
    if memory is not None:
        usage, limit = memory.usage.usage, memory.usage.limit
        mem = f"{human_bytes(usage)} / {human_bytes(limit) if limit else 'unlimited'}"
        mem_pct = f"{usage / limit * 100:.2f}%" if limit else "-"
    else:
        mem, mem_pct = "-", "-"
    pids = str(stats.cgroup.pids.current) if stats.cgroup.pids is not None else "-"
    read, write = block_io(stats)
    return (
        stats.id,
        "-" if cpu is None else f"{cpu:.2f}%",
        mem,
        mem_pct,
        pids,
        f"{human_bytes(read)} / {human_bytes(write)}",
    )


def stats_table(rows: Sequence[tuple[str, ...]], *, hosts: bool = False) -> Table:
    """The stats table; with ``hosts`` each row starts with its daemon's id (several ``--address``)."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("HOST", *STATS_COLUMNS) if hosts else STATS_COLUMNS:
        table.add_column(column, justify="right" if column in ("CPU %", "MEM %", "PIDS") else "left")
    for row in rows:
        table.add_row(*row)
    return table


def stats_json_line(sample: ContainerStats) -> str:
    """One structured sample, compact, with the wire's field names."""
    from containerd_actors.client import converter

    return json.dumps(converter.unstructure(sample), separators=(",", ":"))


METRICS_TITLE = "containerd-actors metrics"
METRICS_COLUMNS = ("METRIC", "TYPE", "COUNT/VALUE", "MIN", "MEDIAN", "P99", "MAX", "1-MIN RATE")
METRICS_LEFT = ("METRIC", "TYPE")
#: The page width ``table_console`` gives rich for a pipe or a file.
PAGE_WIDTH = 200
#: rich's space between two columns (one cell of padding on each side; none at the edges).
RICH_GAP = "  "


def metrics_rows(snapshot: MetricsSnapshot) -> list[tuple[str, ...]]:
    """The rows under ``METRICS_COLUMNS``: timers, then counters, then gauges."""
    rows: list[tuple[str, ...]] = []
    for timer in snapshot.timers:
        rows.append(
            (
                timer.name,
                "timer",
                str(timer.count),
                *(f"{v / 1e6:.2f} ms" for v in (timer.min, timer.median, timer.p99, timer.max)),
                f"{timer.rate1:.2f}/s",
            )
        )
    for counter in snapshot.counters:
        rows.append((counter.name, "counter", str(counter.count), "", "", "", "", ""))
    for gauge in snapshot.gauges:
        value = human_bytes(gauge.value) if gauge.name == "memory-used" else str(gauge.value)
        rows.append((gauge.name, "gauge", value, "", "", "", "", ""))
    return rows


def metrics_table(snapshot: MetricsSnapshot) -> Table:
    from rich.table import Table

    table = Table(title=METRICS_TITLE, box=None, header_style="bold", pad_edge=False)
    for column in METRICS_COLUMNS:
        table.add_column(column, justify="left" if column in METRICS_LEFT else "right")
    for row in metrics_rows(snapshot):
        table.add_row(*row)
    return table


def metrics_page(snapshot: MetricsSnapshot) -> str | None:
    """``metrics_table`` as rich prints it to a pipe or a file, character for character, without rich.

    Importing rich and laying the table out takes longer than the rest of ``actr metrics``, and a
    pipe gets no colour anyway. Where rich would do more than pad and align (a table wider than the
    page, a title wider than the table, cells rich would read as markup or measure otherwise),
    this returns None and the caller asks rich.
    """
    rows = metrics_rows(snapshot)
    cells = [METRICS_COLUMNS, *rows]
    if any(not cell.isascii() or "[" in cell or "\n" in cell for row in cells for cell in row):
        return None
    widths = column_widths(cells)
    width = sum(widths) + len(RICH_GAP) * (len(widths) - 1)
    if width > PAGE_WIDTH or len(METRICS_TITLE) > width:
        return None
    left = (width - len(METRICS_TITLE)) // 2
    lines = [" " * left + METRICS_TITLE + " " * (width - len(METRICS_TITLE) - left)]
    for row in cells:
        lines.append(
            RICH_GAP.join(
                cell.ljust(widths[i]) if column in METRICS_LEFT else cell.rjust(widths[i])
                for i, (column, cell) in enumerate(zip(METRICS_COLUMNS, row, strict=True))
            )
        )
    return "".join(line + "\n" for line in lines)
