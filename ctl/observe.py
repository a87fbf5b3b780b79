"""``actr`` commands that observe and control running containers: stats, pause/resume, metrics,
and checkpoints.

These are interactive views a person watches, so they use rich tables freely; the 400 ms start-up
budget applies to ``actr containers`` (see ``ctl.render``), not to these.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

import trio

from containerd_actors.client import Client, RequestFailed
from containerd_actors.protocol import Checkpoint, ContainerStats, MetricsSnapshot, converter

STATS_INTERVAL_S = 1.0


def _console(stream: TextIO) -> Any:
    """rich sizes a terminal itself; for a pipe or file, a wide page keeps names whole for scripts."""
    from rich.console import Console

    isatty = getattr(stream, "isatty", None)
    return Console(file=stream, highlight=False, width=None if isatty and isatty() else 200)


# --------------------------------------------------------------------------- numbers people read


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


STATS_COLUMNS = ("CONTAINER", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS", "BLOCK I/O")


def stats_row(stats: ContainerStats, earlier: ContainerStats | None) -> tuple[str, ...]:
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


def stats_table(rows: Sequence[tuple[str, ...]]) -> Any:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in STATS_COLUMNS:
        table.add_column(column, justify="right" if column in ("CPU %", "MEM %", "PIDS") else "left")
    for row in rows:
        table.add_row(*row)
    return table


async def _sample_all(client: Client, ids: Sequence[str]) -> dict[str, ContainerStats]:
    """One sample per container, concurrently; a container that exits meanwhile is simply absent."""
    samples: dict[str, ContainerStats] = {}

    async def one(container_id: str) -> None:
        try:
            samples[container_id] = await client.stats(container_id)
        except RequestFailed:
            pass

    async with trio.open_nursery() as nursery:
        for container_id in ids:
            nursery.start_soon(one, container_id)
    return samples


async def stats(
    address: str, id: str | None, *, no_stream: bool, as_json: bool, stream: TextIO | None = None
) -> int:
    """``actr containers stats [ID]``: one container's samples, or a live table of all of them."""
    stream = stream or sys.stdout
    async with Client.connect(address) as client:
        if id is not None and as_json:
            return await _stream_json(client, id, no_stream, stream)
        from rich.live import Live

        console = _console(stream)
        previous: dict[str, ContainerStats] = {}

        async def current_rows() -> list[tuple[str, ...]]:
            ids = [id] if id is not None else sorted(c.id for c in await client.containers())
            samples = await _sample_all(client, ids)
            if id is not None and id not in samples:
                await client.stats(id)  # raises the daemon's own error (not_found, ...)
            rows = [stats_row(samples[i], previous.get(i)) for i in ids if i in samples]
            previous.clear()
            previous.update(samples)
            return rows

        await current_rows()  # CPU % needs two samples
        await trio.sleep(0.5 if no_stream else STATS_INTERVAL_S)
        if no_stream:
            console.print(stats_table(await current_rows()))
            return 0
        with Live(stats_table(await current_rows()), console=console, auto_refresh=False) as live:
            while True:
                await trio.sleep(STATS_INTERVAL_S)
                live.update(stats_table(await current_rows()), refresh=True)


async def _stream_json(client: Client, id: str, no_stream: bool, stream: TextIO) -> int:
    """One structured sample per line, with the wire's field names, about once a second."""
    deadline = trio.current_time()
    while True:
        sample = await client.stats(id)
        stream.write(json.dumps(converter.unstructure(sample), separators=(",", ":")) + "\n")
        stream.flush()
        if no_stream:
            return 0
        deadline += STATS_INTERVAL_S
        await trio.sleep_until(max(deadline, trio.current_time()))


async def pause(address: str, id: str) -> int:
    async with Client.connect(address) as client:
        await client.pause(id)
    return 0


async def resume(address: str, id: str) -> int:
    async with Client.connect(address) as client:
        await client.resume(id)
    return 0


# --------------------------------------------------------------------------- metrics


def metrics_table(snapshot: MetricsSnapshot) -> Any:
    from rich.table import Table

    table = Table(title="containerd-actors metrics", box=None, header_style="bold", pad_edge=False)
    for column in ("METRIC", "TYPE", "COUNT/VALUE", "MIN", "MEDIAN", "P99", "MAX", "1-MIN RATE"):
        table.add_column(column, justify="left" if column in ("METRIC", "TYPE") else "right")
    for timer in snapshot.timers:
        table.add_row(
            timer.name,
            "timer",
            str(timer.count),
            *(f"{v / 1e6:.2f} ms" for v in (timer.min, timer.median, timer.p99, timer.max)),
            f"{timer.rate1:.2f}/s",
        )
    for counter in snapshot.counters:
        table.add_row(counter.name, "counter", str(counter.count), "", "", "", "", "")
    for gauge in snapshot.gauges:
        value = human_bytes(gauge.value) if gauge.name == "memory-used" else str(gauge.value)
        table.add_row(gauge.name, "gauge", value, "", "", "", "", "")
    return table


async def metrics(address: str, *, prometheus: bool, as_json: bool, stream: TextIO | None = None) -> int:
    stream = stream or sys.stdout
    async with Client.connect(address) as client:
        snapshot = await client.metrics()
    if prometheus:
        from containerd_actors.protocol.prometheus import format_prometheus

        stream.write(format_prometheus(snapshot))
    elif as_json:
        stream.write(json.dumps(converter.unstructure(snapshot)) + "\n")
    else:
        _console(stream).print(metrics_table(snapshot))
    return 0


# --------------------------------------------------------------------------- checkpoints

CHECKPOINT_COLUMNS = ("NAME", "TCP", "UNIX SOCKETS", "SHELL", "CREATED")


def checkpoint_row(checkpoint: Checkpoint) -> tuple[str, ...]:
    created = datetime.fromtimestamp(checkpoint.created).isoformat(timespec="seconds")
    flags = (checkpoint.tcp, checkpoint.unix_sockets, checkpoint.shell)
    return (checkpoint.name, *(str(flag).lower() for flag in flags), created)


async def list_checkpoints(address: str, id: str, *, as_json: bool, stream: TextIO | None = None) -> int:
    """``actr checkpoints [list] ID``: NAME TCP UNIX SOCKETS SHELL (the original's columns) plus CREATED."""
    stream = stream or sys.stdout
    async with Client.connect(address) as client:
        checkpoints = await client.list_checkpoints(id)
    if as_json:
        stream.write(json.dumps(converter.unstructure(checkpoints)) + "\n")
        return 0
    rows = [CHECKPOINT_COLUMNS, *(checkpoint_row(c) for c in checkpoints)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(CHECKPOINT_COLUMNS))]
    for row in rows:
        stream.write(
            "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        )
    return 0


async def create_checkpoint(
    address: str, id: str, name: str, *, tcp: bool, unix_sockets: bool, shell: bool, exit: bool, as_json: bool
) -> int:
    started = time.monotonic()
    async with Client.connect(address) as client:
        checkpoint = await client.create_checkpoint(
            id, name, tcp=tcp, unix_sockets=unix_sockets, shell=shell, exit=exit
        )
    if as_json:
        sys.stdout.write(json.dumps(converter.unstructure(checkpoint)) + "\n")
    else:
        sys.stdout.write(f"{checkpoint.name} ({time.monotonic() - started:.2f} s)\n")
    return 0


async def delete_checkpoint(address: str, id: str, name: str) -> int:
    async with Client.connect(address) as client:
        await client.delete_checkpoint(id, name)
    return 0
