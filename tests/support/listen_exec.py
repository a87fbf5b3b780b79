"""Exec a command the way systemd starts a service with stored fds (this machine has no systemd as pid 1).

Usage: ``python listen_exec.py NAME=FD ... -- COMMAND ...``. The fds (inherited at any number)
move to 3, 4, ... in the order given, and ``$LISTEN_FDS``, ``$LISTEN_FDNAMES`` and ``$LISTEN_PID``
are set; the last must be the pid of the process that reads them, known only after the fork,
so this process sets it to its own pid and then becomes the command (an exec keeps the pid).
"""

from __future__ import annotations

import fcntl
import os
import sys

FIRST = 3


def main(args: list[str]) -> None:
    split = args.index("--")
    pairs = [arg.rsplit("=", 1) for arg in args[:split]]
    command = args[split + 1 :]
    count = len(pairs)
    # Above every target first, so that moving one fd never overwrites another not moved yet.
    high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD_CLOEXEC, FIRST + count) for _name, fd in pairs]
    for _name, fd in pairs:
        os.close(int(fd))
    for index, fd in enumerate(high):
        os.dup2(fd, FIRST + index, inheritable=True)
        os.close(fd)
    environment = dict(os.environ)
    environment.update(
        LISTEN_FDS=str(count),
        LISTEN_PID=str(os.getpid()),
        LISTEN_FDNAMES=":".join(name for name, _fd in pairs),
    )
    os.execvpe(command[0], command, environment)


if __name__ == "__main__":
    main(sys.argv[1:])
