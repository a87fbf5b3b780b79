"""Out-of-memory notification for a container's memory cgroup, inside the daemon and without a helper process.

`runc events` would do this too, but it is a 9 MiB process per container. Here a watcher is one task and
one file descriptor (v1) or one task and a read per interval (v2).

cgroup v1: an eventfd is registered with the kernel by writing "<eventfd> <fd of memory.oom_control>" into
the cgroup's ``cgroup.event_control``. The kernel then increments the eventfd each time the cgroup enters
an OOM condition, and once more when the cgroup is removed, so a wake-up alone does not say which happened:
the directory does. A removed cgroup has left the file system by the time the kernel sends its farewell
signal, so "directory still there (same inode)" means OOM, and "gone" means the end. The one case this
cannot tell apart is an OOM whose cgroup is removed before the watcher runs, with the farewell signal not
yet sent (count 1, directory gone); it is reported as the end. The daemon deletes a container only after
reaping its init, which leaves the watcher far more time than it needs to wake.

cgroup v2: the kernel counts OOM kills in ``memory.events`` and signals changes to inotify and poll.
inotify is not in the standard library, and through ctypes each watcher would need its own inotify
instance (``fs.inotify.max_user_instances`` is 128 by default, far below 1000 containers) or one shared
instance with a dispatching task that the daemon would have to own. ``poll()`` on the file is no option
for trio, whose epoll waits for readability, which kernfs always reports. So the v2 watcher reads the
``oom_kill`` counter every ``interval`` seconds: one small read, a few microseconds, per container and
interval, and a notification at most one interval late.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import trio

from containerd_actors.host.cgroup_paths import CgroupGone, CgroupPaths

#: Called, or sent None, once per OOM the watcher notices.
OnOom = Callable[[], object] | trio.MemorySendChannel[None]


async def _notify(on_oom: OnOom) -> bool:
    """Deliver one notification; False when the receiving end is gone, so the watcher can stop."""
    if isinstance(on_oom, trio.MemorySendChannel):
        try:
            await on_oom.send(None)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
    else:
        on_oom()
    return True


def _identity(directory: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _register_v1(memory_dir: Path, eventfd: int) -> None:
    try:
        control = os.open(memory_dir / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CgroupGone(str(memory_dir)) from None
    try:
        registration = os.open(memory_dir / "cgroup.event_control", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(registration, f"{eventfd} {control}".encode())
        finally:
            os.close(registration)
    finally:
        # The kernel keeps its own reference to the eventfd only; memory.oom_control is needed just to
        # register, so a watcher costs one descriptor.
        os.close(control)


async def watch_oom_v1(
    memory_dir: Path,
    on_oom: OnOom,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Notify `on_oom` each time the v1 memory cgroup `memory_dir` hits OOM; return once it is removed.

    Reports started (for ``nursery.start``) once the kernel has the registration, so that a caller can
    arm the watcher before the container starts allocating. Raises CgroupGone if the cgroup is already
    gone. Several OOMs between two wake-ups make one notification: the kernel may signal a few times for
    a single kill, as the allocation that failed is retried.
    """
    identity = _identity(memory_dir)
    if identity is None:
        raise CgroupGone(str(memory_dir))
    eventfd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        _register_v1(memory_dir, eventfd)
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(eventfd)
            try:
                signals = os.eventfd_read(eventfd)
            except BlockingIOError:
                continue
            if _identity(memory_dir) == identity:
                if not await _notify(on_oom):
                    return
                continue
            # Gone: one signal is the farewell; more means OOMs came first.
            if signals > 1:
                await _notify(on_oom)
            return
    finally:
        trio.lowlevel.notify_closing(eventfd)
        os.close(eventfd)


def _oom_kills_v2(events_file: Path) -> int | None:
    """The oom_kill counter of memory.events, or None if the cgroup is gone."""
    try:
        with open(events_file, "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        # kernfs answers ENODEV for a file of a cgroup removed while open.
        return None if not events_file.parent.is_dir() else 0
    for line in data.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key == b"oom_kill":
            return int(value)
    return 0


async def watch_oom_v2(
    cgroup_dir: Path,
    on_oom: OnOom,
    *,
    interval: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Notify `on_oom` when the v2 cgroup's OOM kill counter rises; return once the cgroup is removed.

    Reports started once the baseline count is read, so kills before that are not reported. One
    notification per interval in which the counter rose, however many processes were killed in it.
    """
    events_file = cgroup_dir / "memory.events"
    last = _oom_kills_v2(events_file)
    if last is None:
        raise CgroupGone(str(cgroup_dir))
    task_status.started()
    while True:
        await trio.sleep(interval)
        kills = _oom_kills_v2(events_file)
        if kills is None:
            return
        if kills > last and not await _notify(on_oom):
            return
        last = kills


async def watch_oom(
    paths: CgroupPaths,
    on_oom: OnOom,
    *,
    v2_interval: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Watch a container's memory cgroup with whichever mechanism its hierarchy supports.

    Raises LookupError when the container's cgroup has no memory controller, since no OOM can then be
    attributed to it.
    """
    if paths.memory is None:
        raise LookupError(f"pid {paths.pid} has no memory cgroup")
    if paths.memory.version == 1:
        await watch_oom_v1(paths.v1_dirs["memory"], on_oom, task_status=task_status)
    else:
        assert paths.unified is not None
        await watch_oom_v2(paths.unified, on_oom, interval=v2_interval, task_status=task_status)
