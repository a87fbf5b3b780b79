"""Which pids may have an exec'd process's files in a container's logs directory.

Before its logs are made, every exec removes whatever a recycled pid's older process left there
(its logs, their rotations, its exited record: seven names). The new pid usually has none, and
seven unlinks failing with ENOENT were ~0.1 ms of each AddProcess's wall time.

Files are made there only for the processes the container's actor owns (their logs with their
first byte, their exited records), and each of those pids is in the actor's outputs until it is
forgotten, its files with it. Anything older (an earlier server's, a crashed actor's) was on
disk when the directory was first listed, which happens at the first question, once per actor.
So a pid neither owned nor listed has no files. A listing that fails answers "may" for every
pid, as before.
"""

from __future__ import annotations

from collections.abc import Container

from containerd_actors.daemon.state.layout import ContainerPaths


class ExecFilePids:
    """One per container actor; ``removed`` after each ``forget_exec_files``."""

    def __init__(self, paths: ContainerPaths) -> None:
        self._paths = paths
        #: Pids with files when the directory was listed, less those removed since (None: not listed).
        self._listed: set[int] | None = None

    def may_exist(self, pid: int, owned: Container[int]) -> bool:
        """Whether ``pid`` may have files; ``owned``: the pids whose outputs the actor holds."""
        if pid in owned:
            return True
        if self._listed is None:
            try:
                self._listed = self._paths.exec_file_pids()
            except OSError:
                return True
        return pid in self._listed

    def removed(self, pid: int) -> None:
        if self._listed is not None:
            self._listed.discard(pid)
