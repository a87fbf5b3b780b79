"""A container's cgroups as its actor uses them: stats samples, OOM kills to announce, and the freezer
(runc pause/resume).

The cgroup directories are found once, from the init's ``/proc/PID/cgroup``, on first use; later
samples only read files. OOM kills are counted from the cgroup's own counter, so a notification
that was lost (a full mailbox) is caught up with at the init's exit, and none is announced twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import trio

from containerd_actors.daemon.container.deps import ContainerRuntime
from containerd_actors.daemon.container.messages import ContainerMailbox, OomNotified
from containerd_actors.daemon.mailbox import CommandError
from containerd_actors.host.cgroup_paths import (
    CgroupGone,
    CgroupPaths,
    cgroup_paths_from,
    proc_cgroup_of_dirs,
    read_cgroup_mounts,
    resolve_cgroup_paths,
)
from containerd_actors.host.cgroup_stats import read_cgroup_stats, sample_container
from containerd_actors.host.fds import describe_os_error, is_fd_limit_error
from containerd_actors.host.oom import watch_oom
from containerd_actors.protocol import ContainerStats, ErrorCode
from containerd_actors.runc.driver import RuncError
from containerd_actors.runc.state_file import cgroup_dirs

log = logging.getLogger(__name__)


class ContainerCgroups:
    def __init__(self, container_id: str, init_pid: int, runc_root: Path | None = None) -> None:
        self.container_id = container_id
        self.init_pid = init_pid
        #: Where runc keeps its state of the container: the cgroups of an init that already exited.
        self._runc_root = runc_root
        self._paths: CgroupPaths | None = None
        self._ooms_announced = 0

    def _resolved(self) -> CgroupPaths:
        if self._paths is None:
            try:
                self._paths = resolve_cgroup_paths(self.init_pid)
            except (OSError, ValueError) as exc:
                if isinstance(exc, OSError) and is_fd_limit_error(exc):
                    raise  # out of descriptors: nothing is learnt, and a later look can still work
                self._paths = self._from_runc_state(exc)
        return self._paths

    def _from_runc_state(self, error: Exception) -> CgroupPaths:
        """The cgroups of an init that exited before they were first looked for, from runc's state.

        Without this, an init OOM-killed within milliseconds of its start (a busy host delays the
        actor's first look) had its kill counted in a cgroup nobody found, and no OOM event came.
        """
        if self._runc_root is not None:
            try:
                mounts = read_cgroup_mounts()
                text = proc_cgroup_of_dirs(cgroup_dirs(self._runc_root, self.container_id), mounts)
                return cgroup_paths_from(self.init_pid, text, mounts)
            except (OSError, ValueError):
                pass
        raise CgroupGone(f"cannot find the cgroups of pid {self.init_pid}: {error}") from None

    def sample(self) -> ContainerStats:
        try:
            return sample_container(self.container_id, self._resolved())
        except CgroupGone as exc:
            raise CommandError(
                ErrorCode.NOT_FOUND, f"container {self.container_id!r} has no cgroup: {exc}"
            ) from None
        except OSError as exc:
            if not is_fd_limit_error(exc):
                raise
            raise CommandError(
                ErrorCode.RUNTIME_FAILED,
                f"cannot read the cgroups of container {self.container_id!r}: {describe_os_error(exc)}",
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
        except (CgroupGone, OSError):
            return 0  # the cgroup's counter keeps them: the next call announces them
        kills = stats.memory.oom_kills if stats.memory is not None else 0
        new = max(kills - self._ooms_announced, 0)
        self._ooms_announced += new
        return new


def oom_notifier(mailbox: ContainerMailbox) -> Callable[[], None]:
    """What the OOM watcher calls: it only tells the actor, which counts and announces itself, so
    nothing is reported twice."""

    def notify() -> None:
        try:
            mailbox.send_nowait(OomNotified())
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the init's exit catches up from the cgroup's own counter

    return notify


async def pause_or_resume(runtime: ContainerRuntime, container_id: str, status: str) -> None:
    """runc pause/resume freeze or thaw every process of the container through its freezer cgroup."""
    try:
        if status == "paused":
            await runtime.pause(container_id)
        else:
            await runtime.resume(container_id)
    except RuncError as exc:
        raise CommandError(ErrorCode.RUNTIME_FAILED, f"{exc.command} failed: {exc.message}") from None
