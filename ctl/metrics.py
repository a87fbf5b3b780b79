"""``actr metrics``: the daemon's timers, counters and gauges, as a table, JSON or Prometheus text."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ctl.arguments import connect

if TYPE_CHECKING:
    from ctl.arguments import Commands


def add_commands(commands: Commands, json_after: argparse.ArgumentParser) -> None:
    metrics = commands.add_parser("metrics", parents=[json_after], help="the daemon's telemetry")
    metrics.add_argument("--prometheus", action="store_true", help="Prometheus text exposition format")
    metrics.set_defaults(handler=show_metrics)


def show_metrics(args: argparse.Namespace) -> int:
    from containerd_actors.client import format_prometheus
    from ctl import render, render_live

    with connect(args) as client:
        snapshot = client.metrics()
    if args.prometheus:
        sys.stdout.write(format_prometheus(snapshot))
    elif args.json:
        sys.stdout.write(render.json_line(snapshot) + "\n")
    else:
        page = render_live.metrics_page(snapshot) if render.rich_plain(sys.stdout) else None
        if page is not None:
            sys.stdout.write(page)
        else:
            render.table_console(sys.stdout).print(render_live.metrics_table(snapshot))
    return 0
