"""A container's cgroups as its actor uses them: stats samples, and OOM kills to announce.

The cgroup directories are found once, from the init's ``/proc/PID/cgroup``, on first use; later
samples only read files. OOM kills are counted from the cgroup's own counter, so a notification
that was lost (a full mailbox) is caught up with at the init's exit, and none is announced twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from containerd_actors.daemon.mailbox import CommandError
from containerd_actors.host.cgroup_paths import CgroupGone, CgroupPaths, resolve_cgroup_paths
from containerd_actors.host.cgroup_stats import read_cgroup_stats, sample_container
from containerd_actors.host.oom import watch_oom
from containerd_actors.protocol import ContainerStats, ErrorCode

log = logging.getLogger(__name__)


class ContainerCgroups:
    def __init__(self, container_id: str, init_pid: int) -> None:
        self.container_id = container_id
        self.init_pid = init_pid
        self._paths: CgroupPaths | None = None
        self._ooms_announced = 0

    def _resolved(self) -> CgroupPaths:
        if self._paths is None:
            try:
                self._paths = resolve_cgroup_paths(self.init_pid)
            except (OSError, ValueError) as exc:
                raise CgroupGone(f"cannot find the cgroups of pid {self.init_pid}: {exc}") from None
        return self._paths

    def sample(self) -> ContainerStats:
        try:
            return sample_container(self.container_id, self._resolved())
        except CgroupGone as exc:
            raise CommandError(
                ErrorCode.NOT_FOUND, f"container {self.container_id!r} has no cgroup: {exc}"
            ) from None

    async def watch_ooms(self, nursery: trio.Nursery, notify: Callable[[], None]) -> None:
        """Call ``notify`` on every OOM kill, from a task in ``nursery``; a warning if impossible."""
        try:
            await nursery.start(watch_oom, self._resolved(), notify)
        except (CgroupGone, LookupError, OSError) as exc:
            log.warning("container %s: OOM notifications unavailable: %s", self.container_id, exc)

    def unannounced_oom_kills(self) -> int:
        """OOM kills the cgroup has counted since the last call; the caller announces them."""
        try:
            stats = read_cgroup_stats(self._resolved())
        except CgroupGone:
            return 0
        kills = stats.memory.oom_kills if stats.memory is not None else 0
        new = max(kills - self._ooms_announced, 0)
        self._ooms_announced += new
        return new
