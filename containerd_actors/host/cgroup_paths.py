"""Where a container's cgroups are: each controller's directory and the files it offers.

``resolve_cgroup_paths`` runs once per container, so that a stats sample (``cgroup_stats``) or an
OOM watcher (``oom``) only opens files. It maps each controller to its directory using
``/proc/<pid>/cgroup`` and the mount table rather than assuming ``/sys/fs/cgroup/<controller>``: on a
hybrid host a controller may sit on the v1 or on the v2 mount, the daemon itself may run inside a
nested cgroup, and runc places a container without ``cgroupsPath`` relative to runc's own cgroup. It
also notes which optional files exist, since that does not change during a cgroup's life.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from containerd_actors.host.procfs import EXITED_STATES, read_stat

_HUGETLB_V1 = re.compile(r"hugetlb\.([^.]+)\.usage_in_bytes")
_HUGETLB_V2 = re.compile(r"hugetlb\.([^.]+)\.current")


class CgroupGone(Exception):
    """The container's cgroup directory no longer exists: the container was deleted."""


@attrs.frozen
class CgroupMount:
    """One cgroupfs mount: which hierarchy it shows, and from which point of that hierarchy."""

    mount_point: Path
    #: The hierarchy path shown at the mount point; "/" unless a subtree was bind-mounted.
    root: str
    version: int
    #: v1 only: the mount's options, which include its controllers (and "name=systemd" style names).
    options: frozenset[str] = frozenset()


def _unescape_mountinfo(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_cgroup_mounts(mountinfo: str) -> tuple[CgroupMount, ...]:
    """The cgroup mounts listed in a mountinfo text, in mount order."""
    mounts = []
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        if not sep:
            continue
        fields = before.split()
        fstype, _source, super_options = [*after.split(), "", ""][:3]
        if fstype not in ("cgroup", "cgroup2") or len(fields) < 5:
            continue
        mounts.append(
            CgroupMount(
                mount_point=Path(_unescape_mountinfo(fields[4])),
                root=_unescape_mountinfo(fields[3]),
                version=2 if fstype == "cgroup2" else 1,
                options=frozenset(super_options.split(",")) if fstype == "cgroup" else frozenset(),
            )
        )
    return tuple(mounts)


def read_cgroup_mounts() -> tuple[CgroupMount, ...]:
    """The cgroup mounts of the daemon's mount namespace; callers may cache it across containers."""
    with open("/proc/self/mountinfo") as f:
        return parse_cgroup_mounts(f.read())


def _under_mount(mount: CgroupMount, cgroup_path: str) -> Path | None:
    """The directory of a cgroup path on a mount, or None if the mount does not show that part."""
    relative = posixpath.relpath(cgroup_path, mount.root)
    if relative == ".":
        return mount.mount_point
    if relative == ".." or relative.startswith("../"):
        return None
    return mount.mount_point / relative


def remove_empty_cgroup(cgroup_path: str, mounts: Sequence[CgroupMount] | None = None) -> None:
    """Remove the cgroup ``cgroup_path`` (from the hierarchy's root) on every mount that shows it,
    where it is empty; one that still holds processes or children stays (the kernel refuses)."""
    for mount in read_cgroup_mounts() if mounts is None else mounts:
        directory = _under_mount(mount, cgroup_path)
        if directory is None or directory == mount.mount_point:
            continue
        try:
            os.rmdir(directory)
        except OSError:
            pass  # absent, busy or not empty: not ours to force


def parse_proc_cgroup(text: str) -> tuple[dict[str, str], str | None]:
    """Split /proc/<pid>/cgroup into {v1 controller: path} and the v2 path (None on a pure v1 host).

    A v1 line may name several controllers co-mounted in one hierarchy ("2:cpu,cpuacct:/x"); each gets the
    same path. The v2 line is the one with hierarchy 0 and no controllers.
    """
    v1: dict[str, str] = {}
    unified: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and not controllers:
            unified = path
        else:
            for name in controllers.split(","):
                if name:
                    v1[name] = path
    return v1, unified


@attrs.frozen
class ControllerFiles:
    """The files of one controller that existed when the container's cgroup was resolved."""

    version: int
    #: File name (such as "memory.stat") to its path; a name absent here is not read. Paths are kept as
    #: str because converting a Path on every open is a tenth of a sample's cost.
    files: Mapping[str, str]

    def has(self, name: str) -> bool:
        return name in self.files


@attrs.frozen
class CgroupPaths:
    """Where to read each controller of one container; resolve once, then sample many times."""

    pid: int
    #: Each v1 controller's directory (named as in /proc/<pid>/cgroup, such as "memory" or "name=systemd").
    v1_dirs: Mapping[str, Path]
    #: The cgroup2 directory: every controller on a pure v2 host, the leftovers on a hybrid one.
    unified: Path | None
    cpu: ControllerFiles | None
    memory: ControllerFiles | None
    blkio: ControllerFiles | None
    pids: ControllerFiles | None
    hugetlb: ControllerFiles | None
    hugetlb_sizes: tuple[str, ...] = ()


def _existing(directory: Path, names: Iterable[str]) -> dict[str, str]:
    return {name: str(directory / name) for name in names if os.path.exists(directory / name)}


def _v1_dir(mounts: Sequence[CgroupMount], v1_paths: Mapping[str, str], controller: str) -> Path | None:
    cgroup_path = v1_paths.get(controller)
    if cgroup_path is None:
        return None
    for mount in mounts:
        if mount.version == 1 and controller in mount.options:
            directory = _under_mount(mount, cgroup_path)
            if directory is not None:
                return directory
    return None


def _v2_dir(mounts: Sequence[CgroupMount], unified_path: str | None) -> Path | None:
    if unified_path is None:
        return None
    for mount in mounts:
        if mount.version == 2:
            directory = _under_mount(mount, unified_path)
            if directory is not None:
                return directory
    return None


_CPU_V1 = ("cpuacct.usage", "cpuacct.usage_percpu", "cpuacct.stat")
_MEMORY_V1 = (
    *(
        f"memory.{prefix}{name}"
        for prefix in ("", "memsw.", "kmem.")
        for name in ("usage_in_bytes", "max_usage_in_bytes", "failcnt", "limit_in_bytes")
    ),
    "memory.stat",
    "memory.oom_control",
)
_MEMORY_V2 = (
    "memory.current",
    "memory.peak",
    "memory.max",
    "memory.events",
    "memory.stat",
    "memory.swap.current",
    "memory.swap.max",
    "memory.swap.events",
)
_BLKIO_V1 = (
    "blkio.throttle.io_service_bytes_recursive",
    "blkio.throttle.io_serviced_recursive",
    "blkio.throttle.io_service_bytes",
    "blkio.throttle.io_serviced",
)


def _hugetlb_files(directory: Path, version: int) -> tuple[dict[str, str], tuple[str, ...]]:
    pattern = _HUGETLB_V1 if version == 1 else _HUGETLB_V2
    try:
        names = os.listdir(directory)
    except OSError:
        return {}, ()
    sizes = tuple(sorted({m.group(1) for name in names if (m := pattern.fullmatch(name))}))
    suffixes = (
        ("usage_in_bytes", "max_usage_in_bytes", "failcnt", "limit_in_bytes")
        if version == 1
        else ("current", "max", "events")
    )
    wanted = [f"hugetlb.{size}.{suffix}" for size in sizes for suffix in suffixes]
    return _existing(directory, wanted), sizes


def resolve_cgroup_paths(pid: int, mounts: Sequence[CgroupMount] | None = None) -> CgroupPaths:
    """Find the cgroup directories of the process `pid` (a container's init) and the files they offer.

    Raises ProcessLookupError if the process is gone or has exited, since its cgroup can no longer be
    found from it: an exited process not yet reaped (a zombie) has left its cgroups, and its
    ``/proc/PID/cgroup`` names the root cgroup of every hierarchy. The state is read after the
    cgroup file, so a process still alive then was alive when its cgroups were read.
    """
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            text = f.read()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    stat = read_stat(pid)
    if stat is None or stat.state in EXITED_STATES:
        raise ProcessLookupError(pid)
    return cgroup_paths_from(pid, text, read_cgroup_mounts() if mounts is None else mounts)


def proc_cgroup_of_dirs(directories: Mapping[str, str], mounts: Sequence[CgroupMount]) -> str:
    """The ``/proc/PID/cgroup`` text of a process in ``directories`` ({v1 controller: directory},
    ``""`` for the cgroup2 one, as runc's state.json gives them), so that a container whose init
    has already exited can be resolved as if it were still there. A directory on no mount is left out.
    """
    lines = []
    for controller, directory in directories.items():
        version = 2 if controller == "" else 1
        for mount in mounts:
            if mount.version != version or (version == 1 and controller not in mount.options):
                continue
            relative = posixpath.relpath(directory, str(mount.mount_point))
            if relative == ".." or relative.startswith("../"):
                continue
            path = posixpath.normpath(posixpath.join(mount.root, relative))
            lines.append(f"0::{path}" if version == 2 else f"1:{controller}:{path}")
            break
    return "\n".join(lines) + "\n"


def cgroup_paths_from(pid: int, proc_cgroup: str, mounts: Sequence[CgroupMount]) -> CgroupPaths:
    """The work of resolve_cgroup_paths on given texts, so that v2 layouts can be tested on a v1 host."""
    v1_paths, unified_path = parse_proc_cgroup(proc_cgroup)
    v1_dirs = {name: d for name in v1_paths if (d := _v1_dir(mounts, v1_paths, name)) is not None}
    unified = _v2_dir(mounts, unified_path)

    def v1(controller: str, names: Iterable[str]) -> ControllerFiles | None:
        directory = v1_dirs.get(controller)
        return ControllerFiles(1, _existing(directory, names)) if directory is not None else None

    def v2(marker: str, names: Iterable[str]) -> ControllerFiles | None:
        # A v2 controller is usable only where the parent enabled it, which shows as its files existing.
        if unified is None or not os.path.exists(unified / marker):
            return None
        return ControllerFiles(2, _existing(unified, names))

    cpu: ControllerFiles | None
    if "cpuacct" in v1_dirs or "cpu" in v1_dirs:
        files = {}
        if "cpuacct" in v1_dirs:
            files.update(_existing(v1_dirs["cpuacct"], _CPU_V1))
        if "cpu" in v1_dirs:
            files.update(_existing(v1_dirs["cpu"], ["cpu.stat"]))
        cpu = ControllerFiles(1, files)
    else:
        # v2 keeps cpu.stat's usage fields in every cgroup, even without the cpu controller enabled.
        cpu = v2("cpu.stat", ["cpu.stat"])

    if "hugetlb" in v1_dirs:
        hugetlb_files, sizes = _hugetlb_files(v1_dirs["hugetlb"], 1)
        hugetlb: ControllerFiles | None = ControllerFiles(1, hugetlb_files)
    elif unified is not None:
        hugetlb_files, sizes = _hugetlb_files(unified, 2)
        hugetlb = ControllerFiles(2, hugetlb_files) if sizes else None
    else:
        hugetlb, sizes = None, ()

    return CgroupPaths(
        pid=pid,
        v1_dirs=v1_dirs,
        unified=unified,
        cpu=cpu,
        memory=v1("memory", _MEMORY_V1) if "memory" in v1_dirs else v2("memory.current", _MEMORY_V2),
        blkio=v1("blkio", _BLKIO_V1) if "blkio" in v1_dirs else v2("io.stat", ["io.stat"]),
        pids=(
            v1("pids", ["pids.current", "pids.max"])
            if "pids" in v1_dirs
            else v2("pids.current", ["pids.current", "pids.max"])
        ),
        hugetlb=hugetlb,
        hugetlb_sizes=sizes,
    )
