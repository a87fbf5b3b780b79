"""Everything ``actr`` writes to stdout: tables, event lines and JSON; the commands only fetch.

The layout (column widths, padding) is computed here with plain string operations; rich only
colours cells when stdout is a terminal. The split is about start-up time: ``actr containers``
with 1000 containers is meant to take about as long as ``runc list``, and the interpreter and the
wire types (attrs, cattrs) already take most of that (scripts/bench_cli.py). A ``rich.table.Table`` needs
~0.3 s to lay out 1000 rows and even printing one multi-line ``rich.text.Text`` costs ~60 ms,
whereas asking rich for the escape codes of the few distinct styled cells (the header, each status,
each event type) costs microseconds. So rich is imported lazily, only when colour is wanted, and
never when output goes to a pipe or a file; the characters are the same either way, so scripts
see exactly what a person sees, minus the colour.

The live views (``containers stats``, ``metrics``) are different: a person watches them, there are
few rows, and rich lays out their tables (``render_live``).

The wire's converter is imported only by the JSON renderings: a table needs none of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console

    from containerd_actors.client import (
        Checkpoint,
        ContainerInfo,
        Event,
    )

CONTAINER_COLUMNS = ("ID", "PATH", "STATUS", "PID1")
EVENT_COLUMNS = ("TYPE", "ID", "PID", "STATUS", "SEQ", "TIME")
#: Fixed widths for a live stream, whose rows cannot be measured in advance ("start-container" is 15).
EVENT_WIDTHS = (16, 24, 8, 7, 8, 23)
#: Space between table columns, like the padding of the original ctr's tabwriter.
COLUMN_GAP = "   "
EVENT_GAP = " "

HEADER_STYLE = "bold"
STATUS_STYLES = {"running": "green", "created": "cyan", "paused": "yellow", "stopped": "red"}
EVENT_STYLES = {"start-container": "green", "start-process": "green", "exit": "yellow"}


# --------------------------------------------------------------------------- styling


def wants_style(stream: TextIO) -> bool:
    """Colour only for a person at a terminal; pipes and files get plain text without importing rich."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def rich_plain(stream: TextIO) -> bool:
    """Whether rich, too, would print plain text to ``stream``: not a terminal, and not told otherwise.

    rich styles a pipe when ``FORCE_COLOR`` is non-empty or ``TTY_COMPATIBLE`` is 1; where either
    is set at all, the caller leaves the decision to rich.
    """
    return not wants_style(stream) and not any(
        os.environ.get(name) is not None for name in ("FORCE_COLOR", "TTY_COMPATIBLE")
    )


def make_console(stream: TextIO) -> Console:
    """A rich Console on ``stream``; it decides the colour system (and honours NO_COLOR, TERM=dumb)."""
    from rich.console import Console

    return Console(file=stream, highlight=False, soft_wrap=True)


def table_console(stream: TextIO) -> Console:
    """A Console for rich tables; a pipe or a file gets a wide page, so that names stay whole for scripts."""
    from rich.console import Console

    return Console(file=stream, highlight=False, width=None if wants_style(stream) else 200)


def json_line(value: Any) -> str:
    """A wire value (attrs instance or list of them) as JSON with the wire's field names."""
    from containerd_actors.client import converter

    return json.dumps(converter.unstructure(value))


class Styler:
    """Writes lines to the console's file, colouring cells through rich once per distinct (text, style).

    Without a console it is a plain writer: ``styler(text, style)`` returns ``text`` unchanged.
    """

    def __init__(self, stream: TextIO, console: Console | None = None) -> None:
        self._console = console
        self._stream: TextIO = console.file if console is not None else stream
        self._cache: dict[tuple[str, str], str] = {}

    @property
    def plain(self) -> bool:
        """Whether this styler writes plain text (no console): then ``styler(text, style)`` is ``text``."""
        return self._console is None

    @classmethod
    def for_stream(cls, stream: TextIO, console: Console | None = None) -> Styler:
        """Use ``console`` if given, else a fresh one when ``stream`` is a terminal, else plain text."""
        if console is None and wants_style(stream):
            console = make_console(stream)
        return cls(stream, console)

    def __call__(self, text: str, style: str) -> str:
        if self._console is None or not style or not text:
            return text
        key = (text, style)
        styled = self._cache.get(key)
        if styled is None:
            from rich.text import Text

            with self._console.capture() as capture:
                self._console.print(Text(text, style=style), end="", soft_wrap=True)
            styled = self._cache[key] = capture.get()
        return styled

    def write_lines(self, lines: Iterable[str]) -> None:
        """Write lines and flush, so a live stream reaches ``| grep`` at once."""
        lines = list(lines)
        self._stream.write("\n".join(lines) + "\n" if lines else "")
        self._stream.flush()


def layout_row(
    cells: Sequence[str],
    widths: Sequence[int],
    gap: str,
    styles: Sequence[str] = (),
    styler: Styler | None = None,
) -> str:
    """Left-align ``cells`` to ``widths``; the last cell is not padded (no trailing blanks).

    Padding is computed on the plain text, so colour escape codes never disturb alignment. A cell
    wider than its column pushes the rest of the row right instead of being cut.
    """
    last = len(cells) - 1
    parts = []
    for i, cell in enumerate(cells):
        style = styles[i] if i < len(styles) else ""
        text = styler(cell, style) if styler is not None and style else cell
        if i != last and len(cell) < widths[i]:
            text += " " * (widths[i] - len(cell))
        parts.append(text)
    return gap.join(parts)


# --------------------------------------------------------------------------- containers


def column_widths(rows: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]


def container_columns(containers: Sequence[ContainerInfo]) -> list[list[str]]:
    """The table's cells, column by column: the original's ``ID PATH STATUS PID1`` (PATH is the
    bundle, PID1 the init pid)."""
    return [
        [c.id for c in containers],
        [c.bundle for c in containers],
        [c.status for c in containers],
        [str(c.pid) for c in containers],
    ]


def plain_table(titles: Sequence[str], columns: Sequence[Sequence[str]], gap: str) -> list[str]:
    """The lines ``layout_row`` makes of the header and rows (``columns``, column by column: the
    cells of row i are ``columns[j][i]``), without colour: each column's cells padded at once
    (``str.ljust`` pads by code points, as ``len`` counts them), then joined row by row.

    Why not ``layout_row`` per row: ``actr containers`` with 1,000 containers spent ~1 ms in it,
    and this takes a third of that."""
    widths = [
        max(len(title), max(map(len, cells), default=0)) for title, cells in zip(titles, columns, strict=True)
    ]
    padded = [
        [cell.ljust(width) for cell in cells] for cells, width in zip(columns[:-1], widths[:-1], strict=True)
    ]
    header = layout_row(titles, widths, gap)
    return [header, *map(gap.join, zip(*padded, columns[-1], strict=True))]


def containers_lines(
    containers: Iterable[ContainerInfo], styler: Styler | None = None, hosts: Sequence[str] | None = None
) -> list[str]:
    """The containers table as lines, header first; coloured only if ``styler`` has a console.

    With ``hosts`` (one per container: the daemons of several ``--address``), a HOST column leads.
    """
    containers = list(containers)
    titles: tuple[str, ...] = CONTAINER_COLUMNS
    columns = container_columns(containers)
    if hosts is not None:
        if len(hosts) != len(containers):
            raise ValueError(f"{len(hosts)} hosts for {len(containers)} containers")
        titles = ("HOST", *CONTAINER_COLUMNS)
        columns = [list(hosts), *columns]
    if styler is None or styler.plain:
        return plain_table(titles, columns, COLUMN_GAP)
    rows = list(zip(*columns, strict=True))
    widths = column_widths([titles, *rows])
    lines = [styler(layout_row(titles, widths, COLUMN_GAP), HEADER_STYLE)]
    status_at = titles.index("STATUS")
    styles = [""] * len(titles)
    for row in rows:
        styles[status_at] = STATUS_STYLES.get(row[status_at], "")
        lines.append(layout_row(row, widths, COLUMN_GAP, styles, styler))
    return lines


def print_containers(
    containers: Sequence[ContainerInfo],
    stream: TextIO,
    console: Console | None = None,
    hosts: Sequence[str] | None = None,
) -> None:
    """Write the containers table to ``console`` if given, else to ``stream`` (coloured on a terminal)."""
    styler = Styler.for_stream(stream, console)
    styler.write_lines(containers_lines(containers, styler, hosts))


PROCESS_COLUMNS = ("PID", "ROLE", "TTY", "UID", "GID", "CWD", "COMMAND")


def print_processes(container: ContainerInfo, stream: TextIO) -> None:
    """``actr containers state ID``: one line about the container, then a table of its processes."""
    styler = Styler.for_stream(stream)
    rows = [
        (
            str(process.pid),
            "init" if process.pid == container.pid else "exec",
            "yes" if process.terminal else "no",
            str(process.user.uid),
            str(process.user.gid),
            process.cwd,
            " ".join(process.args),
        )
        for process in container.processes
    ]
    widths = column_widths([PROCESS_COLUMNS, *rows])
    header = layout_row(PROCESS_COLUMNS, widths, COLUMN_GAP)
    lines = [
        COLUMN_GAP.join(
            (
                container.id,
                styler(container.status, STATUS_STYLES.get(container.status, "")),
                container.bundle,
            )
        ),
        styler(header, HEADER_STYLE),
        *(layout_row(row, widths, COLUMN_GAP) for row in rows),
    ]
    styler.write_lines(lines)


def containers_json(containers: Sequence[ContainerInfo]) -> str:
    """A JSON array of objects with the wire ``ContainerInfo`` fields: id, bundle, status, pid, processes.

    One object per line: readable and ``grep``-able, and unlike ``indent=`` (which makes the json
    module fall back to its pure-Python encoder, ~50 ms for 1000 containers) it keeps the C encoder.
    """
    from containerd_actors.client import ContainerInfo, converter

    objects = converter.unstructure(list(containers), list[ContainerInfo])
    if not objects:
        return "[]"
    return "[\n" + ",\n".join(json.dumps(obj) for obj in objects) + "\n]"


# --------------------------------------------------------------------------- events


def format_timestamp(timestamp: float, timespec: str = "milliseconds") -> str:
    """Seconds since the epoch as local ISO time to ``timespec``, e.g. ``2026-01-02T15:04:05.123``.

    datetime is imported here, not with the module: the container table, which most commands
    print, has no time in it (~1 ms of every ``actr containers``)."""
    from datetime import datetime

    return datetime.fromtimestamp(timestamp).isoformat(timespec=timespec)


def event_cells(event: Event) -> tuple[str, ...]:
    """``TYPE ID PID STATUS SEQ TIME``; STATUS is ``-`` where it does not apply, so columns stay countable."""
    status = "-" if event.status is None else str(event.status)
    return (event.type, event.id, str(event.pid), status, str(event.seq), format_timestamp(event.timestamp))


def event_header_line() -> str:
    return layout_row(EVENT_COLUMNS, EVENT_WIDTHS, EVENT_GAP)


def event_line(event: Event, styler: Styler | None = None) -> str:
    """One event as a fixed-width line aligned under ``event_header_line``."""
    return layout_row(
        event_cells(event), EVENT_WIDTHS, EVENT_GAP, (EVENT_STYLES.get(event.type, ""),), styler
    )


def event_json(event: Event) -> str:
    """One compact JSON object with the wire ``Event`` fields: seq, timestamp, type, id, pid, status."""
    from containerd_actors.client import Event, converter

    return json.dumps(converter.unstructure(event, Event), separators=(",", ":"))


#: The HOST column of tables that merge several daemons (``actr --address A --address B``).
HOST_WIDTH = 16


class EventPrinter:
    """Writes a live event stream one flushed line per event, so ``| head``/``| grep`` see each at once.

    With ``hosts``, events of several daemons are merged: a HOST column leads (``host`` in JSON).
    """

    def __init__(
        self, stream: TextIO, *, as_json: bool, console: Console | None = None, hosts: bool = False
    ) -> None:
        self._as_json = as_json
        self._hosts = hosts
        self._styler = Styler(stream) if as_json else Styler.for_stream(stream, console)

    def header(self) -> None:
        """The column header; none in JSON mode, where every line must be one JSON object."""
        if not self._as_json:
            line = event_header_line()
            if self._hosts:
                line = layout_row(("HOST", line), (HOST_WIDTH, 0), EVENT_GAP)
            self._styler.write_lines([self._styler(line, HEADER_STYLE)])

    def print(self, event: Event, host: str | None = None) -> None:
        if self._as_json:
            line = event_json(event)
            if self._hosts:
                line = json.dumps({"host": host, **json.loads(line)}, separators=(",", ":"))
        else:
            line = event_line(event, self._styler)
            if self._hosts:
                line = layout_row((host or "", line), (HOST_WIDTH, 0), EVENT_GAP)
        self._styler.write_lines([line])


# --------------------------------------------------------------------------- checkpoints

CHECKPOINT_COLUMNS = ("NAME", "TCP", "UNIX SOCKETS", "SHELL", "CREATED")


def checkpoint_row(checkpoint: Checkpoint) -> tuple[str, ...]:
    created = format_timestamp(checkpoint.created, timespec="seconds")
    flags = (checkpoint.tcp, checkpoint.unix_sockets, checkpoint.shell)
    return (checkpoint.name, *(str(flag).lower() for flag in flags), created)


def checkpoints_lines(checkpoints: Iterable[Checkpoint]) -> list[str]:
    """The original's ``NAME TCP UNIX SOCKETS SHELL`` columns, plus CREATED; header first."""
    rows = [CHECKPOINT_COLUMNS, *(checkpoint_row(c) for c in checkpoints)]
    widths = column_widths(rows)
    return [layout_row(row, widths, COLUMN_GAP) for row in rows]
