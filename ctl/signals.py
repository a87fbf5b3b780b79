"""Signal name/number parsing for ``actr containers kill -s``.

The signal is delivered by runc on the daemon's (Linux) host, not on the machine running
``actr``, so names are resolved against the Linux numbering rather than the local ``signal``
module (which would give other numbers on, say, macOS talking to a daemon over tcp://).
"""

from __future__ import annotations

#: Linux signal numbers (x86/ARM/generic layout) by name without the ``SIG`` prefix, aliases included.
LINUX_SIGNALS: dict[str, int] = {
    "HUP": 1,
    "INT": 2,
    "QUIT": 3,
    "ILL": 4,
    "TRAP": 5,
    "ABRT": 6,
    "IOT": 6,
    "BUS": 7,
    "FPE": 8,
    "KILL": 9,
    "USR1": 10,
    "SEGV": 11,
    "USR2": 12,
    "PIPE": 13,
    "ALRM": 14,
    "TERM": 15,
    "STKFLT": 16,
    "CHLD": 17,
    "CLD": 17,
    "CONT": 18,
    "STOP": 19,
    "TSTP": 20,
    "TTIN": 21,
    "TTOU": 22,
    "URG": 23,
    "XCPU": 24,
    "XFSZ": 25,
    "VTALRM": 26,
    "PROF": 27,
    "WINCH": 28,
    "IO": 29,
    "POLL": 29,
    "PWR": 30,
    "SYS": 31,
}
#: glibc's SIGRTMIN/SIGRTMAX, as kill(1) reports them (32 and 33 are reserved by the C library).
RTMIN = 34
RTMAX = 64
#: The range the wire protocol's Signal message accepts.
MIN_SIGNAL = 1
MAX_SIGNAL = 64


class UnknownSignal(ValueError):
    """The text is neither a known signal name nor a number the daemon would accept."""


def _parse_realtime(name: str) -> int | None:
    """``RTMIN``, ``RTMIN+3``, ``RTMAX-2`` as kill(1) spells real-time signals; None if not one."""
    for base_name, base, sign in (("RTMIN", RTMIN, 1), ("RTMAX", RTMAX, -1)):
        if not name.startswith(base_name):
            continue
        rest = name[len(base_name) :]
        if not rest:
            return base
        op = "+" if sign > 0 else "-"
        if rest[0] == op and rest[1:].isdigit():
            number = base + sign * int(rest[1:])
            if RTMIN <= number <= RTMAX:
                return number
    return None


def parse_signal(text: str) -> int:
    """Turn ``KILL``, ``SIGKILL``, ``kill``, ``sigkill`` or ``9`` into a signal number.

    Raises ``UnknownSignal`` with a message meant for the user.
    """
    raw = text.strip()
    if raw.isdigit():
        number = int(raw)
        if MIN_SIGNAL <= number <= MAX_SIGNAL:
            return number
        raise UnknownSignal(f"signal number {number} is out of range {MIN_SIGNAL}-{MAX_SIGNAL}")
    name = raw.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name in LINUX_SIGNALS:
        return LINUX_SIGNALS[name]
    realtime = _parse_realtime(name)
    if realtime is not None:
        return realtime
    raise UnknownSignal(
        f"unknown signal {text!r}: use a name such as TERM, KILL or SIGHUP,"
        f" or a number {MIN_SIGNAL}-{MAX_SIGNAL}"
    )
