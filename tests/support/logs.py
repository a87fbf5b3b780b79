"""Reading a container's RotatingLog to its end, as the output tests check it byte for byte."""

from __future__ import annotations

from containerd_actors.daemon.container.logs import RotatingLog

#: Bytes asked for per read; a read may return fewer (it stops at a rotated file's end).
READ_BYTES = 1 << 20


def read_to_end(log: RotatingLog, offset: int = 0) -> tuple[int, bytes]:
    """(where the data starts, every byte from ``offset`` on). The start is later than ``offset``
    when the bytes there were rotated away; reads continue until one returns nothing."""
    first, data = log.read(offset, READ_BYTES)
    out, position = data, first + len(data)
    while data:
        _, data = log.read(position, READ_BYTES)
        out += data
        position += len(data)
    return first, out
