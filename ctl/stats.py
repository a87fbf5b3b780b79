"""``actr containers stats [ID]``: one container's samples, or a live table of every container.

CPU % is the difference of two samples, so the view takes one sample before it shows anything.
A container that exits while the table is live just drops out of it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import TextIO

import trio

from containerd_actors.client import Client, ContainerStats, RequestFailed
from ctl import render, render_live
from ctl.arguments import tls_files

STATS_INTERVAL_S = 1.0


async def show_stats(args: argparse.Namespace) -> int:
    id: str | None = args.id
    if id is None and args.addresses and len(args.addresses) > 1:
        return await _show_several(args)
    stream = sys.stdout
    async with Client.connect(args.address, tls=tls_files(args)) as client:
        if id is not None and args.json:
            return await _stream_json(client, id, args.no_stream, stream)
        from rich.live import Live

        console = render.table_console(stream)
        previous: dict[str, ContainerStats] = {}

        async def current_rows() -> list[tuple[str, ...]]:
            ids = [id] if id is not None else sorted(c.id for c in await client.containers())
            samples = await _sample_all(client, ids)
            if id is not None and id not in samples:
                await client.stats(id)  # raises the daemon's own error (not_found, ...)
            rows = [render_live.stats_row(samples[i], previous.get(i)) for i in ids if i in samples]
            previous.clear()
            previous.update(samples)
            return rows

        await current_rows()  # CPU % needs two samples
        await trio.sleep(0.5 if args.no_stream else STATS_INTERVAL_S)
        if args.no_stream:
            console.print(render_live.stats_table(await current_rows()))
            return 0
        with Live(render_live.stats_table(await current_rows()), console=console, auto_refresh=False) as live:
            while True:
                await trio.sleep(STATS_INTERVAL_S)
                live.update(render_live.stats_table(await current_rows()), refresh=True)


async def _show_several(args: argparse.Namespace) -> int:
    """Every container of several daemons in one table, its HOST column each daemon's id."""
    from rich.live import Live

    console = render.table_console(sys.stdout)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(Client.connect(address, tls=tls_files(args)))
            for address in args.addresses
        ]
        hosts = [(await client.ping()).daemon_id for client in clients]
        previous: dict[tuple[str, str], ContainerStats] = {}

        async def current_rows() -> list[tuple[str, ...]]:
            rows = []
            for host, client in zip(hosts, clients, strict=True):
                ids = sorted(c.id for c in await client.containers())
                samples = await _sample_all(client, ids)
                for i in ids:
                    if i in samples:
                        rows.append((host, *render_live.stats_row(samples[i], previous.get((host, i)))))
                        previous[(host, i)] = samples[i]
            return rows

        await current_rows()  # CPU % needs two samples
        await trio.sleep(0.5 if args.no_stream else STATS_INTERVAL_S)
        if args.no_stream:
            console.print(render_live.stats_table(await current_rows(), hosts=True))
            return 0
        with Live(
            render_live.stats_table(await current_rows(), hosts=True), console=console, auto_refresh=False
        ) as live:
            while True:
                await trio.sleep(STATS_INTERVAL_S)
                live.update(render_live.stats_table(await current_rows(), hosts=True), refresh=True)
    return 0


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


async def _stream_json(client: Client, id: str, no_stream: bool, stream: TextIO) -> int:
    """One structured sample per line, with the wire's field names, about once a second."""
    deadline = trio.current_time()
    while True:
        sample = await client.stats(id)
        stream.write(render_live.stats_json_line(sample) + "\n")
        stream.flush()
        if no_stream:
            return 0
        deadline += STATS_INTERVAL_S
        await trio.sleep_until(max(deadline, trio.current_time()))
