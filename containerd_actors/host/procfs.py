"""Readers of /proc, one per file, so that each format is parsed in one place.

``/proc/PID/stat`` needs care: field 2, the command name, is in parentheses and may itself hold
spaces and parentheses, so the fields after it are counted from the last ``)``.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class ProcessStat:
    """One read of ``/proc/PID/stat``; fields are numbered as in proc(5) (1 is the pid)."""

    command: str
    after_command: tuple[str, ...]

    def field(self, number: int) -> str:
        """Field ``number`` (3 or more) as proc(5) numbers it."""
        if number < 3:
            raise ValueError(f"field {number} is not after the command name")
        return self.after_command[number - 3]

    @property
    def state(self) -> str:
        return self.field(3)

    @property
    def parent_pid(self) -> int:
        return int(self.field(4))

    @property
    def start_time(self) -> int:
        """Clock ticks since boot at which the process started."""
        return int(self.field(22))


def read_stat(pid: int) -> ProcessStat | None:
    """``/proc/PID/stat`` parsed; None when the process is gone or the text is not a stat line."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    opening, closing = text.find("("), text.rfind(")")
    if opening < 0 or closing < opening:
        return None
    return ProcessStat(text[opening + 1 : closing], tuple(text[closing + 1 :].split()))


def process_start_time(pid: int) -> int | None:
    """With the pid, the start time names one process for good: a recycled pid gets a new one."""
    stat = read_stat(pid)
    try:
        return stat.start_time if stat is not None else None
    except (IndexError, ValueError):
        return None


def parent_pid(pid: int) -> int | None:
    stat = read_stat(pid)
    try:
        return stat.parent_pid if stat is not None else None
    except (IndexError, ValueError):
        return None


def memory_total_bytes() -> int:
    """The machine's RAM (MemTotal of /proc/meminfo); 0 when it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
