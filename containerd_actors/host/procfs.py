"""Readers of /proc, one per file, so that each format is parsed in one place.

``/proc/PID/stat`` needs care: field 2, the command name, is in parentheses and may itself hold
spaces and parentheses, so the fields after it are counted from the last ``)``.
"""

from __future__ import annotations

import attrs

from containerd_actors.host.fds import read_small


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

    def int_field(self, number: int) -> int:
        return int(self.field(number))


#: Field numbers of proc(5) that this code reads.
PARENT_PID = 4
USER_TIME, SYSTEM_TIME, CHILDREN_USER_TIME, CHILDREN_SYSTEM_TIME = 14, 15, 16, 17
START_TIME = 22
#: States of a process that has exited: a zombie, or one being torn down.
EXITED_STATES = frozenset({"Z", "X"})


def read_stat(pid: int) -> ProcessStat | None:
    """``/proc/PID/stat`` parsed; None when the process is gone or the text is not a stat line."""
    try:
        text = read_small(f"/proc/{pid}/stat").decode(errors="replace")
    except OSError:
        return None
    opening, closing = text.find("("), text.rfind(")")
    if opening < 0 or closing < opening:
        return None
    return ProcessStat(text[opening + 1 : closing], tuple(text[closing + 1 :].split()))


def _int_field(pid: int, number: int) -> int | None:
    stat = read_stat(pid)
    try:
        return stat.int_field(number) if stat is not None else None
    except (IndexError, ValueError):
        return None


def process_start_time(pid: int) -> int | None:
    """Clock ticks since boot at the process's start: with the pid, it names one process for good."""
    return _int_field(pid, START_TIME)


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid``; None when it is gone, or being reaped at that moment.

    A stat read while the parent reaps the process reports parent 0 (measured: about 1 read in
    20,000 of a child reaped by another thread). Taken as a parent, that 0 made a container process's
    exit look adopted from a dead reaper, and its status was reported as unknown.
    Only pid 1 and kernel threads truly have parent 0, and no caller asks about those.
    """
    parent = _int_field(pid, PARENT_PID)
    return parent or None


def process_argv(pid: int) -> list[str] | None:
    """The command line of ``pid`` (empty for a kernel thread or a zombie); None when it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            raw = cmdline.read()
    except OSError:
        return None
    return [arg.decode(errors="replace") for arg in raw.split(b"\0")[:-1]]


def process_ids(pid: int) -> tuple[int, int] | None:
    """The real uid and gid of ``pid``, as the host sees them; None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])
    except (OSError, KeyError, ValueError, IndexError):
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
