"""Container statistics read straight from cgroupfs, on cgroup v1, v2 and the hybrid of both.

Measured on a v1 host with a running container, one sample costs about 0.2 ms of CPU here, while
`runc events --stats` costs about 6.4 ms (a Go binary spawned per sample, then its JSON parsed): some thirty
times more. At a thousand containers sampled once a second, that is a fifth of a core against six cores.
``test_direct_reads_are_far_cheaper_than_runc_events`` repeats the comparison.

A sample opens each file that ``cgroup_paths.resolve_cgroup_paths`` found once. A file that vanishes
means the container was deleted under us; that is ``CgroupGone`` when the directory is gone too, and a
missing value otherwise.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Sequence

import trio

from containerd_actors.host.cgroup_paths import CgroupGone, CgroupPaths, ControllerFiles
from containerd_actors.protocol.stats import (
    BlkioEntry,
    BlkioStats,
    CgroupStats,
    ContainerStats,
    CpuStats,
    CpuUsage,
    HugetlbStats,
    MemoryData,
    MemoryStats,
    PidsStats,
    Throttling,
)

#: cpuacct.stat counts in USER_HZ ticks, not nanoseconds.
_NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
#: v1 spells "no limit" as the largest page-aligned 63-bit number; anything this large is no real limit.
_V1_UNLIMITED = 1 << 62
_READ_SIZE = 1 << 16


# --------------------------------------------------------------------------- reading files


def _read(controller: ControllerFiles, name: str) -> bytes | None:
    """The content of one file, or None if it is not there; CgroupGone if its directory vanished.

    os.open/os.read rather than open(): no buffered file object, which is most of the cost of a
    small read in Python.
    """
    path = controller.files.get(name)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        _raise_if_vanished(path)
        return None
    try:
        data = os.read(fd, _READ_SIZE)
        if len(data) == _READ_SIZE:
            chunks = [data]
            while chunk := os.read(fd, _READ_SIZE):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    except OSError as exc:
        # kernfs answers ENODEV for a file whose cgroup was removed after we opened it.
        if exc.errno == errno.ENODEV:
            _raise_if_vanished(path)
        return None
    finally:
        os.close(fd)


def _raise_if_vanished(path: str) -> None:
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise CgroupGone(directory)


def _int(data: bytes | None) -> int:
    """A single-number file; "max" (v2's no-limit) and anything unreadable count as 0."""
    if not data:
        return 0
    try:
        return int(data)
    except ValueError:
        return 0


def _limit_v1(data: bytes | None) -> int:
    value = _int(data)
    return 0 if value >= _V1_UNLIMITED else value


def _keyed(data: bytes | None) -> dict[str, int]:
    """A "key value" per line file, such as memory.stat or cpu.stat.

    The fast path splits the whole text at once, which halves the cost on the ~60 lines of a v1
    memory.stat; a malformed file falls back to a line by line parse that skips the bad lines.
    """
    if not data:
        return {}
    words = data.decode(errors="replace").split()
    if len(words) % 2 == 0:
        try:
            return dict(zip(words[::2], map(int, words[1::2]), strict=True))
        except ValueError:
            pass
    result: dict[str, int] = {}
    for line in data.split(b"\n"):
        key, _, value = line.partition(b" ")
        if value:
            try:
                result[key.decode(errors="replace")] = int(value)
            except ValueError:
                pass
    return result


# --------------------------------------------------------------------------- per controller


def _cpu(files: ControllerFiles) -> CpuStats:
    if files.version == 1:
        ticks = _keyed(_read(files, "cpuacct.stat"))
        per_cpu_text = _read(files, "cpuacct.usage_percpu") or b""
        stat = _keyed(_read(files, "cpu.stat"))
        return CpuStats(
            usage=CpuUsage(
                total=_int(_read(files, "cpuacct.usage")),
                per_cpu=[int(v) for v in per_cpu_text.split()],
                kernel=ticks.get("system", 0) * _NS_PER_TICK,
                user=ticks.get("user", 0) * _NS_PER_TICK,
            ),
            throttling=Throttling(
                periods=stat.get("nr_periods", 0),
                throttled_periods=stat.get("nr_throttled", 0),
                throttled_time=stat.get("throttled_time", 0),
            ),
        )
    stat = _keyed(_read(files, "cpu.stat"))
    return CpuStats(
        usage=CpuUsage(
            total=stat.get("usage_usec", 0) * 1000,
            kernel=stat.get("system_usec", 0) * 1000,
            user=stat.get("user_usec", 0) * 1000,
        ),
        throttling=Throttling(
            periods=stat.get("nr_periods", 0),
            throttled_periods=stat.get("nr_throttled", 0),
            throttled_time=stat.get("throttled_usec", 0) * 1000,
        ),
    )


def _memory_v1_data(files: ControllerFiles, prefix: str) -> MemoryData | None:
    if not files.has(f"memory.{prefix}usage_in_bytes"):
        return None
    return MemoryData(
        usage=_int(_read(files, f"memory.{prefix}usage_in_bytes")),
        max_usage=_int(_read(files, f"memory.{prefix}max_usage_in_bytes")),
        failcnt=_int(_read(files, f"memory.{prefix}failcnt")),
        limit=_limit_v1(_read(files, f"memory.{prefix}limit_in_bytes")),
    )


def _memory(files: ControllerFiles) -> MemoryStats:
    stats = _keyed(_read(files, "memory.stat"))
    if files.version == 1:
        return MemoryStats(
            cache=stats.get("cache", 0),
            usage=_memory_v1_data(files, "") or MemoryData(),
            swap_usage=_memory_v1_data(files, "memsw."),
            kernel_usage=_memory_v1_data(files, "kmem."),
            oom_kills=_keyed(_read(files, "memory.oom_control")).get("oom_kill", 0),
            stats=stats,
        )
    current = _int(_read(files, "memory.current"))
    limit = _int(_read(files, "memory.max"))
    events = _keyed(_read(files, "memory.events"))
    swap: MemoryData | None = None
    if files.has("memory.swap.current"):
        # Summed with memory so that the field means memory+swap on v2 as it does on v1 (memsw).
        swap_limit = _int(_read(files, "memory.swap.max"))
        swap = MemoryData(
            usage=current + _int(_read(files, "memory.swap.current")),
            failcnt=_keyed(_read(files, "memory.swap.events")).get("max", 0),
            limit=swap_limit + limit if swap_limit and limit else 0,
        )
    return MemoryStats(
        cache=stats.get("file", 0),
        usage=MemoryData(
            usage=current,
            max_usage=_int(_read(files, "memory.peak")),
            failcnt=events.get("max", 0),
            limit=limit,
        ),
        swap_usage=swap,
        kernel_usage=MemoryData(usage=stats["kernel"]) if "kernel" in stats else None,
        oom_kills=events.get("oom_kill", 0),
        stats=stats,
    )


def _blkio_v1_entries(data: bytes | None) -> list[BlkioEntry]:
    entries = []
    for line in (data or b"").split(b"\n"):
        fields = line.split()
        if len(fields) != 3:
            continue  # the closing "Total N" line has no device
        device, op, value = fields
        major, _, minor = device.partition(b":")
        try:
            entries.append(BlkioEntry(int(major), int(minor), op.decode(), int(value)))
        except ValueError:
            pass
    return entries


_IO_V2_FIELDS = {
    b"rbytes": ("bytes", "Read"),
    b"wbytes": ("bytes", "Write"),
    b"dbytes": ("bytes", "Discard"),
    b"rios": ("ios", "Read"),
    b"wios": ("ios", "Write"),
    b"dios": ("ios", "Discard"),
}


def _blkio(files: ControllerFiles) -> BlkioStats:
    if files.version == 1:
        return BlkioStats(
            io_service_bytes_recursive=_blkio_v1_entries(
                _read(files, "blkio.throttle.io_service_bytes_recursive")
                or _read(files, "blkio.throttle.io_service_bytes")
            ),
            io_serviced_recursive=_blkio_v1_entries(
                _read(files, "blkio.throttle.io_serviced_recursive")
                or _read(files, "blkio.throttle.io_serviced")
            ),
        )
    service_bytes: list[BlkioEntry] = []
    serviced: list[BlkioEntry] = []
    for line in (_read(files, "io.stat") or b"").split(b"\n"):
        fields = line.split()
        if len(fields) < 2:
            continue
        major, _, minor = fields[0].partition(b":")
        for pair in fields[1:]:
            key, _, value = pair.partition(b"=")
            kind_op = _IO_V2_FIELDS.get(key)
            if kind_op is None:
                continue
            kind, op = kind_op
            try:
                entry = BlkioEntry(int(major), int(minor), op, int(value))
            except ValueError:
                continue
            (service_bytes if kind == "bytes" else serviced).append(entry)
    return BlkioStats(io_service_bytes_recursive=service_bytes, io_serviced_recursive=serviced)


def _pids(files: ControllerFiles) -> PidsStats:
    return PidsStats(current=_int(_read(files, "pids.current")), limit=_int(_read(files, "pids.max")))


def _hugetlb(files: ControllerFiles, sizes: Sequence[str]) -> dict[str, HugetlbStats]:
    result = {}
    for size in sizes:
        prefix = f"hugetlb.{size}."
        if files.version == 1:
            result[size] = HugetlbStats(
                usage=_int(_read(files, prefix + "usage_in_bytes")),
                max_usage=_int(_read(files, prefix + "max_usage_in_bytes")),
                failcnt=_int(_read(files, prefix + "failcnt")),
                limit=_limit_v1(_read(files, prefix + "limit_in_bytes")),
            )
        else:
            result[size] = HugetlbStats(
                usage=_int(_read(files, prefix + "current")),
                failcnt=_keyed(_read(files, prefix + "events")).get("max", 0),
                limit=_int(_read(files, prefix + "max")),
            )
    return result


def read_cgroup_stats(paths: CgroupPaths) -> CgroupStats:
    """One sample of every controller; raises CgroupGone once the container's cgroup was removed."""
    return CgroupStats(
        cpu=_cpu(paths.cpu) if paths.cpu else None,
        memory=_memory(paths.memory) if paths.memory else None,
        blkio=_blkio(paths.blkio) if paths.blkio else None,
        pids=_pids(paths.pids) if paths.pids else None,
        hugetlb=_hugetlb(paths.hugetlb, paths.hugetlb_sizes) if paths.hugetlb else {},
    )


def sample_container(container_id: str, paths: CgroupPaths) -> ContainerStats:
    return ContainerStats(id=container_id, timestamp=time.time(), cgroup=read_cgroup_stats(paths))


async def stream_stats(
    container_id: str,
    paths: CgroupPaths,
    send: trio.MemorySendChannel[ContainerStats],
    *,
    interval: float = 1.0,
) -> None:
    """Send a sample every `interval` seconds until the cgroup is gone or the receiver closes.

    Closes `send` when it returns, so that a receiver's ``async for`` ends with the container. Ticks are
    scheduled from a fixed start rather than after each sample, so that the stream does not drift; a
    receiver slower than `interval` gets the next sample as soon as it takes the last.
    """
    async with send:
        deadline = trio.current_time()
        while True:
            try:
                sample = sample_container(container_id, paths)
            except CgroupGone:
                return
            try:
                await send.send(sample)
            except trio.BrokenResourceError:
                return
            deadline = max(deadline + interval, trio.current_time())
            await trio.sleep_until(deadline)
