"""Wire types for container statistics and daemon metrics.

The cgroup records follow the original containerd's ``CgroupStats`` so that a client ported from it finds
the same fields. Two conventions hold on both cgroup v1 and v2, so that a client never needs to know
which one the host runs:

- times are nanoseconds and sizes are bytes, whatever unit the kernel file uses;
- a limit of 0 means "no limit": v1 reports an unlimited memory limit as a page-rounded 2**63 and v2 as
  ``max``, and a number that large would lose precision in a JavaScript client anyway.

A controller the container's cgroup does not have (for example hugetlb where no huge pages are configured)
is reported as ``None`` or as an empty collection, never as zeros that look like a measurement.

``MetricsSnapshot`` is what the Metrics request returns: the daemon's own timers, counters and gauges at
one instant, already reduced to numbers, so that a client renders or exports them without any statistics
of its own.
"""

from __future__ import annotations

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
from attrs import field, frozen


def _doc(text: str) -> dict[str, str]:
    """Field metadata read by the JSON Schema generator."""
    return {"description": text}


# --------------------------------------------------------------------------- cgroup statistics


@frozen
class CpuUsage:
    """CPU time consumed by the container's processes since the cgroup was created, in nanoseconds."""

    total: int = 0
    per_cpu: list[int] = field(
        factory=list,
        metadata=_doc("Total time per possible CPU, indexed by CPU number; empty on cgroup v2."),
    )
    kernel: int = field(default=0, metadata=_doc("Time spent in kernel mode."))
    user: int = field(default=0, metadata=_doc("Time spent in user mode."))


@frozen
class Throttling:
    """How often the CFS quota stopped the container; all zeros when it has no CPU quota."""

    periods: int = field(default=0, metadata=_doc("Enforcement periods that have elapsed."))
    throttled_periods: int = field(default=0, metadata=_doc("Periods in which the quota was exhausted."))
    throttled_time: int = field(default=0, metadata=_doc("Total time throttled, in nanoseconds."))


@frozen
class CpuStats:
    """CPU accounting of one container."""

    usage: CpuUsage = field(factory=CpuUsage)
    throttling: Throttling = field(factory=Throttling)


@frozen
class MemoryData:
    """One memory counter and its limit, in bytes."""

    usage: int = 0
    max_usage: int = field(default=0, metadata=_doc("Peak usage; 0 when the kernel does not record it."))
    failcnt: int = field(default=0, metadata=_doc("How many times usage hit the limit."))
    limit: int = field(default=0, metadata=_doc("0 means no limit."))


@frozen
class MemoryStats:
    """Memory accounting of one container."""

    cache: int = field(default=0, metadata=_doc("Page cache, in bytes (v1 'cache', v2 'file')."))
    usage: MemoryData = field(factory=MemoryData)
    swap_usage: MemoryData | None = field(
        default=None,
        metadata=_doc(
            "Memory plus swap, as v1's memory.memsw.* counts it (v2 values are summed to match); "
            "null when swap accounting is off."
        ),
    )
    kernel_usage: MemoryData | None = field(
        default=None,
        metadata=_doc("Kernel memory; null when the kernel does not account it separately."),
    )
    oom_kills: int = field(default=0, metadata=_doc("Processes of the cgroup killed by the OOM killer."))
    stats: dict[str, int] = field(
        factory=dict, metadata=_doc("Every line of memory.stat, as the kernel names them.")
    )


@frozen
class BlkioEntry:
    """One line of a block I/O statistics file: a device, an operation and a count."""

    major: int
    minor: int
    op: str = field(metadata=_doc("Read, Write, Sync, Async, Discard or Total."))
    value: int


@frozen
class BlkioStats:
    """Block I/O accounting of one container.

    Only the first two lists are filled by current kernels; the others belonged to the CFQ scheduler,
    which Linux 5.0 removed, and stay empty. They are kept so that the shape matches the original's.
    """

    io_service_bytes_recursive: list[BlkioEntry] = field(factory=list, metadata=_doc("Bytes transferred."))
    io_serviced_recursive: list[BlkioEntry] = field(factory=list, metadata=_doc("I/O operations issued."))
    io_queued_recursive: list[BlkioEntry] = field(factory=list)
    io_service_time_recursive: list[BlkioEntry] = field(factory=list)
    io_wait_time_recursive: list[BlkioEntry] = field(factory=list)
    io_merged_recursive: list[BlkioEntry] = field(factory=list)
    io_time_recursive: list[BlkioEntry] = field(factory=list)
    sectors_recursive: list[BlkioEntry] = field(factory=list)


@frozen
class PidsStats:
    """Number of tasks (processes and threads) in the container."""

    current: int = 0
    limit: int = field(default=0, metadata=_doc("0 means no limit."))


@frozen
class HugetlbStats:
    """Huge page usage for one page size, in bytes."""

    usage: int = 0
    max_usage: int = field(default=0, metadata=_doc("Peak usage; 0 on cgroup v2, which does not record it."))
    failcnt: int = field(default=0, metadata=_doc("Allocations that failed because of the limit."))
    limit: int = field(default=0, metadata=_doc("0 means no limit."))


@frozen
class CgroupStats:
    """One sample of a container's cgroup; a controller the cgroup lacks is null."""

    cpu: CpuStats | None = None
    memory: MemoryStats | None = None
    blkio: BlkioStats | None = None
    pids: PidsStats | None = None
    hugetlb: dict[str, HugetlbStats] = field(
        factory=dict, metadata=_doc("Keyed by page size as the kernel names it, such as '2MB' or '1GB'.")
    )


@frozen
class ContainerStats:
    """A timestamped sample of one container's cgroup."""

    id: str
    timestamp: float = field(metadata=_doc("When the sample was taken, in seconds since the Unix epoch."))
    cgroup: CgroupStats


# --------------------------------------------------------------------------- daemon metrics


@frozen
class TimerSnapshot:
    """Durations of one operation: statistics over a decaying sample of recent ones, and event rates.

    Durations are nanoseconds. ``min`` to ``p999`` describe the sample, which favours the last few minutes;
    ``count`` and ``sum`` cover every recorded duration since the daemon started.
    """

    name: str
    help: str = ""
    count: int = 0
    sum: int = field(default=0, metadata=_doc("Total of every recorded duration, in nanoseconds."))
    min: int = 0
    max: int = 0
    mean: float = 0.0
    stddev: float = 0.0
    median: float = 0.0
    p75: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    p999: float = 0.0
    rate1: float = field(default=0.0, metadata=_doc("Events per second, averaged over one minute."))
    rate5: float = field(default=0.0, metadata=_doc("Events per second, averaged over five minutes."))
    rate15: float = field(default=0.0, metadata=_doc("Events per second, averaged over fifteen minutes."))
    mean_rate: float = field(default=0.0, metadata=_doc("Events per second since the timer was created."))


@frozen
class CounterSnapshot:
    """A count the daemon increments, and for some counters also decrements (such as ``containers``)."""

    name: str
    help: str = ""
    count: int = 0
    monotonic: bool = field(
        default=True,
        metadata=_doc(
            "False when the count can go down; Prometheus then gets a gauge, since a counter must only rise."
        ),
    )


@frozen
class GaugeSnapshot:
    """A value read at the moment of the snapshot."""

    name: str
    help: str = ""
    value: int = 0


@frozen
class MetricsSnapshot:
    """Every metric of the daemon at one instant, each list in registration order."""

    timestamp: float = field(metadata=_doc("When the snapshot was taken, in seconds since the Unix epoch."))
    timers: list[TimerSnapshot] = field(factory=list)
    counters: list[CounterSnapshot] = field(factory=list)
    gauges: list[GaugeSnapshot] = field(factory=list)
