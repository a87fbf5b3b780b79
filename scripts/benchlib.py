"""Helpers for the benchmarks: statistics, /proc sampling, and runc/containerd process handling.

The daemon itself is launched by ``tests/support/daemon.py``, the same launcher the tests use.

They live apart from `bench_start.py` so that the benchmark script reads as the experiment (rounds and
report) while the machinery it relies on (who reaps what, how a private runc root is emptied) stays small
and separately reviewable. Everything here touches only processes and runc roots the benchmark itself
created: containers are found by id under a private `--root` (or through a private containerd's socket
and namespace), processes by the pid we started (or, for containerd's shims, by the private address on
their command line, re-checked through a pidfd before any signal).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import TypeVar

import attrs
import trio

#: The benchmarks measure the checkout they are in, whatever else is installed, and they launch the
#: daemon with the tests' launcher (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.daemon import (
    READY_TIMEOUT_S,
    DaemonHandle,
    force_delete_argv,
    runc_containers,
    terminate,
)

from containerd_actors.host import procfs

T = TypeVar("T")

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
#: Parallel `runc delete --force` calls: each sleeps >= 100 ms in runc, so a few in flight hide that.
DELETE_CONCURRENCY = 8


# --- statistics ---------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The percentile as go-metrics computed it for the original's Telemetry timers.

    Position p*(n+1) with linear interpolation, clamped to min/max: using the same rule as the original
    means our 99.9% of 1000 starts is comparable with the numbers in its README.
    """
    n = len(sorted_values)
    if n == 0:
        return math.nan
    pos = p * (n + 1)
    if pos < 1:
        return sorted_values[0]
    if pos >= n:
        return sorted_values[-1]
    lower = sorted_values[int(pos) - 1]
    upper = sorted_values[int(pos)]
    return lower + (pos - math.floor(pos)) * (upper - lower)


@attrs.frozen
class LatencySummary:
    """The Telemetry timer's fields, in seconds."""

    count: int
    min: float
    max: float
    mean: float
    stddev: float
    median: float
    p75: float
    p95: float
    p99: float
    p999: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> LatencySummary:
        values = sorted(samples)
        if not values:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
        return cls(
            count=len(values),
            min=values[0],
            max=values[-1],
            mean=statistics.fmean(values),
            stddev=statistics.pstdev(values),  # go-metrics' StdDev is the population one
            median=percentile(values, 0.5),
            p75=percentile(values, 0.75),
            p95=percentile(values, 0.95),
            p99=percentile(values, 0.99),
            p999=percentile(values, 0.999),
        )


def telemetry_lines(summary: LatencySummary, name: str = "containerd-actors") -> list[str]:
    """Render a summary exactly like the original README's block (`[containerd] 2015/12/04 ... min: 23ms`).

    Whole milliseconds and the same column widths, so the two can be laid side by side.
    """
    stamp = time.strftime("%Y/%m/%d %H:%M:%S")
    rows: list[tuple[str, str]] = [("count", str(summary.count))]
    for label, value in (
        ("min", summary.min),
        ("max", summary.max),
        ("mean", summary.mean),
        ("stddev", summary.stddev),
        ("median", summary.median),
        ("75%", summary.p75),
        ("95%", summary.p95),
        ("99%", summary.p99),
        ("99.9%", summary.p999),
    ):
        rows.append((label, f"{round(value * 1000)}ms" if not math.isnan(value) else "n/a"))
    return [f"[{name}] {stamp}   {label + ':':<8}{text:>10}" for label, text in rows]


def print_columns(header: Sequence[str], lines: Sequence[Sequence[str]], right: Collection[int]) -> None:
    """Print rows under ``header`` in columns as wide as their widest cell, two spaces apart; the
    columns numbered in ``right`` (figures) aligned right, the others left. One layout for every
    bench's side-by-side table, so they read alike."""
    widths = [max(len(line[i]) for line in (header, *lines)) for i in range(len(header))]
    for line in (header, *lines):
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


def median_or_nan(values: Sequence[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return statistics.median(present) if present else math.nan


# --- the bundle -------------------------------------------------------------------------------------------

SCRIPTS_DIR = Path(__file__).resolve().parent


def make_bundle(workdir: Path) -> Path:
    """One read-only busybox bundle running `sleep`, shared by every container of a run.

    The rootfs is read-only, so runc can run any number of containers from the one bundle.
    """
    bundle = workdir / "bundle"
    subprocess.run(
        [sys.executable, str(SCRIPTS_DIR / "make-bundle"), str(bundle), "--", "sleep", "1000000"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return bundle


# --- /proc sampling ----------------------------------------------------------------------------------


@attrs.frozen
class CpuTimes:
    """A process's own CPU and the CPU of the children it has reaped (for the daemon: its runc calls)."""

    own_s: float
    children_s: float

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.own_s - other.own_s, self.children_s - other.children_s)


def cpu_times(pid: int) -> CpuTimes:
    """utime+stime and cutime+cstime from /proc/PID/stat; ProcessLookupError once the process is gone."""
    stat = procfs.read_stat(pid)
    if stat is None:
        raise ProcessLookupError(pid)
    own = stat.int_field(procfs.USER_TIME) + stat.int_field(procfs.SYSTEM_TIME)
    children = stat.int_field(procfs.CHILDREN_USER_TIME) + stat.int_field(procfs.CHILDREN_SYSTEM_TIME)
    return CpuTimes(own / CLOCK_TICKS_PER_S, children / CLOCK_TICKS_PER_S)


def own_children_cpu_s() -> float:
    """CPU of this process's reaped children (the raw runc processes trio has waited for)."""
    times = os.times()
    return times.children_user + times.children_system


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _busy_and_total_ticks() -> tuple[int, int]:
    fields = [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = fields[:7]
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait


async def wait_for_quiet_cpu(max_busy: float = 0.2, window_s: float = 0.5, timeout_s: float = 20.0) -> bool:
    """Wait until the machine is mostly idle before a round.

    Deleting hundreds of containers leaves the kernel tearing down their namespaces for a while after
    `runc delete` returns; a round started during that would be charged for the previous one's cleanup.
    Returns False if the machine never became quiet (the round then runs anyway).
    """
    deadline = trio.current_time() + timeout_s
    while trio.current_time() < deadline:
        busy0, total0 = _busy_and_total_ticks()
        await trio.sleep(window_s)
        busy1, total1 = _busy_and_total_ticks()
        if total1 > total0 and (busy1 - busy0) / (total1 - total0) <= max_busy:
            return True
    return False


# --- runc roots and reaping -----------------------------------------------------------------------------


async def reap(pid: int) -> None:
    """Collect the exit status of a dead container init that was re-parented to us.

    The benchmark is a child subreaper, so inits orphaned by `runc run -d` (or by a stopped daemon) become
    our children; pid 1 on some machines reaps late or never, so without this every deleted container
    would linger as a zombie. By pid, never `waitpid(-1)`, which would steal trio's own children's statuses.
    """
    if pid <= 0:
        return
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.move_on_after(5):
            await trio.lowlevel.wait_readable(pidfd)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # not ours (no subreaper, or adopted elsewhere): nothing we can collect
    finally:
        os.close(pidfd)


async def delete_container(runc_root: Path, id: str, pid: int, limiter: trio.CapacityLimiter) -> str | None:
    """`runc delete --force` one container by id, then reap its init; returns an error text or None.

    runc runs in a session of its own: a Ctrl-C in the terminal goes to the whole foreground process
    group and would otherwise kill the very deletes that the interrupted benchmark is running to clean up.
    """
    async with limiter:
        result = await trio.run_process(
            force_delete_argv(runc_root, id),
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            start_new_session=True,
        )
    if result.returncode != 0:
        return f"{id}: {result.stderr.decode(errors='replace').strip()}"
    await reap(pid)
    return None


async def empty_runc_root(runc_root: Path) -> list[str]:
    """Force-delete every container under a private runc root, by id, a few at a time.

    Returns the error texts of deletes that failed; an empty root afterwards is what counts, so the
    caller checks `runc_containers` again.
    """
    entries = runc_containers(runc_root)
    errors: list[str] = []
    limiter = trio.CapacityLimiter(DELETE_CONCURRENCY)

    async def one(id: str, pid: int) -> None:
        error = await delete_container(runc_root, id, pid, limiter)
        if error:
            errors.append(error)

    async with trio.open_nursery() as nursery:
        for id, pid in entries:
            nursery.start_soon(one, id, pid)
    return errors


def own_children() -> list[tuple[int, str, str]]:
    """(pid, state, command) of this process's children, from /proc (they are few, /proc is not)."""
    me = os.getpid()
    children = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = procfs.read_stat(int(entry.name))
        if stat is not None and stat.int_field(procfs.PARENT_PID) == me:
            children.append((int(entry.name), stat.state, stat.command))
    return children


def reap_adopted_children() -> tuple[int, list[str]]:
    """After trio has finished with its own subprocesses: reap every dead child we adopted.

    A container init whose container is already gone from runc's root (for example one the daemon deleted
    after a cancelled start) was never in a list we reaped from; it is still ours, by the kernel's
    accounting, and is collected here by pid. Returns (zombies reaped, live children left, described).
    """
    reaped, alive = 0, []
    for pid, state, command in own_children():
        if state == "Z":
            try:
                os.waitpid(pid, 0)
                reaped += 1
            except ChildProcessError:
                pass
        else:
            alive.append(f"pid {pid} ({command}, state {state})")
    return reaped, alive


# --- final sweep -----------------------------------------------------------------------------------------


def kill_if_running(process: trio.Process, label: str, problems: list[str]) -> None:
    """SIGKILL and reap a process the run should have stopped already, noting it in ``problems``."""
    try:
        running = process.poll() is None
    except RuntimeError:
        # It exited unnoticed by trio: poll() has just reaped it, then failed to close trio's pidfd
        # outside `trio.run`. Reaped is all a sweep needs.
        running = False
    if running:
        problems.append(f"{label} {process.pid} still running: killed")
        process.kill()
        try:
            os.waitpid(process.pid, 0)
        except ChildProcessError:
            pass


def sweep_leftovers(
    daemons: Sequence[DaemonHandle], runc_roots: Sequence[Path], processes: Sequence[trio.Process] = ()
) -> list[str]:
    """Whatever the way out, leave no daemon, helper process, container or zombie; returns what was fixed.

    The benchmarks clean up after themselves (shielded); this catches an exit that skipped that, and is the
    check that they did. Call it after `trio.run` has returned: trio has then waited for its own
    subprocesses, so reaping our remaining dead children by pid cannot take a status trio expects.
    Processes are killed by the pid we started them with, containers deleted by id under our own roots.
    """
    problems = []
    for process in [*(daemon.process for daemon in daemons), *processes]:
        kill_if_running(process, "pid", problems)
    for runc_root in runc_roots:
        left = runc_containers(runc_root)
        if left:
            problems.append(f"{len(left)} containers left under {runc_root}: deleted")
            trio.run(empty_runc_root, runc_root)
    reaped, alive = reap_adopted_children()
    if reaped:
        problems.append(f"reaped {reaped} adopted container inits that no runc root listed any more")
    problems += [f"child process still running: {child}" for child in alive]
    return problems


# --- the daemon's processes ------------------------------------------------------------------------------


def daemon_pids(pid: int) -> list[int]:
    """The pid we started (the reaper, by default) and its API server child, if it runs one.

    Since the reaper split, `containerd-actors` is a small reaper process whose child serves the API and
    drives runc; with `--no-reaper` it is one process. Children are recognised by running
    `containerd_actors.daemon.main`, so container inits re-parented to the reaper are not counted.
    """
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pids
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd_actors.daemon.main" in cmdline:
            pids.append(int(child))
    return pids


def daemon_cpu_times(pid: int) -> CpuTimes:
    """`cpu_times` summed over the reaper and its API server: the daemon's CPU, whichever process spends it.

    The server's reaped children (its runc calls) are in its own `children_s`; the reaper's are the
    container inits it reaped. A server that restarted mid-measurement loses its predecessor's share.
    """
    total = CpuTimes(0.0, 0.0)
    for each in daemon_pids(pid):
        try:
            times = cpu_times(each)
        except (OSError, ValueError):
            continue
        total = CpuTimes(total.own_s + times.own_s, total.children_s + times.children_s)
    return total


def remove_workdir(workdir: Path, keep_logs: bool) -> None:
    """Remove a benchmark's work dir, or everything in it but the logs.

    Retried: a process that was just stopped can still be leaving files (a journal segment, a
    runc state dir being deleted) while the tree is walked, and one pass then leaves it behind.
    """
    if not keep_logs:
        for _ in range(5):
            shutil.rmtree(workdir, ignore_errors=True)
            if not workdir.exists():
                return
            time.sleep(0.2)
        progress(f"warning: could not remove {workdir}")
        return
    for entry in workdir.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.suffix != ".log":
            entry.unlink(missing_ok=True)
    progress(f"logs kept in {workdir}")


def progress(text: str) -> None:
    """Progress goes to stderr, so that stdout holds only the result table."""
    print(text, file=sys.stderr, flush=True)


async def run_cancelled_by_signals(
    work: Callable[[], Awaitable[T]], default: T, on_stop: Callable[[], None], stopping_message: str
) -> T:
    """Run ``work``; Ctrl-C or SIGTERM cancels it instead of raising KeyboardInterrupt.

    trio delivers a KeyboardInterrupt at whatever checkpoint the main task is at, shielded cleanup
    included, which would leave containers behind; a cancellation is something the shielded cleanup
    finishes under. ``on_stop`` records the interruption; further signals only print a reminder.
    """
    result = default
    scope = trio.CancelScope()
    stopped = False

    async def watch(signals: AsyncIterator[int]) -> None:
        nonlocal stopped
        async for signum in signals:
            if not stopped:
                stopped = True
                on_stop()
                progress(f"{signal.Signals(signum).name}: stopping; {stopping_message}")
                scope.cancel()
            else:
                progress("still cleaning up; please wait")

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, signals)
            with scope:
                result = await work()
            nursery.cancel_scope.cancel()
    return result


# --- containerd 1.6 as the peer ----------------------------------------------------------------------------

#: Every containerd the benchmark starts puts its containers in this namespace (and its shims carry it).
CONTAINERD_NAMESPACE = "cab-bench"
#: Where containerd 1.6's runc shim puts its socket whatever containerd's --state says: the name is the
#: sha256 of "<containerd address>/<namespace>/<id>" (runtime/v2/shim/util_unix.go, SocketAddress).
SHIM_SOCKET_DIR = Path("/run/containerd/s")
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The binaries containerd needs: the daemon, its client, and the shim it starts per container.
CONTAINERD_TOOLS = ("containerd", "ctr", "containerd-shim-runc-v2")
#: Plugins that `ctr run --config` does not need and that would reach outside the private directories:
#: CRI (CNI networking, image pulls, a streaming server), the /opt plugin (creates /opt/containerd), and
#: the snapshotters (the container's rootfs is the bundle's, given as an absolute path in the spec).
CONTAINERD_DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.overlayfs",
    "io.containerd.snapshotter.v1.zfs",
)
#: Parallel ctr calls while emptying a containerd.
CTR_CLEANUP_CONCURRENCY = 8
#: Ids per `ctr task delete` / `ctr container delete` call (both take several).
CTR_DELETE_BATCH = 50


def missing_containerd_tools() -> list[str]:
    return [tool for tool in CONTAINERD_TOOLS if shutil.which(tool) is None]


def containerd_version() -> str:
    result = subprocess.run(["containerd", "--version"], capture_output=True, text=True)
    words = result.stdout.split()
    return f"containerd {words[2]}" if len(words) >= 3 else "containerd ?"


@attrs.define
class Containerd:
    """A private containerd: root, state, socket, config, log and runc root all under ``base``."""

    process: trio.Process
    base: Path
    log_path: Path
    namespace: str = CONTAINERD_NAMESPACE
    #: Every container id a start was attempted for: its shim socket name is derived from it.
    ids: list[str] = attrs.Factory(list)
    #: Its own cgroup, for exact CPU accounting of containerd, its shims and their runc calls; None where
    #: there is no cgroup v2 hierarchy.
    cgroup: CpuCgroup | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return str(self.base / "containerd.sock")

    @property
    def runc_root(self) -> Path:
        """The runc root its shims use: ctr's --runc-root plus the namespace, which the shim appends."""
        return self.base / "runc" / self.namespace

    def ctr_argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", self.address, "--namespace", self.namespace, *args]

    def run_argv(self, spec: Path, id: str) -> list[str]:
        """`ctr run -d` from a complete OCI spec, stdio /dev/null, runc state under our base."""
        return self.ctr_argv(
            "run", "-d", "--null-io", "--runc-root", str(self.base / "runc"), "--config", str(spec), id
        )


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup (v2 only) or /sys/fs/cgroup/unified
    (hybrid, as on this machine); None on a v1-only host."""
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return Path(fields[1])
    except OSError:
        pass
    return None


@attrs.frozen
class CpuCgroup:
    """A cgroup of our own in the v2 hierarchy, only to read its `cpu.stat`: the exact CPU time of every
    process in it and of its descendants, including the ones that have exited.

    Per-process /proc figures are whole clock ticks (10 ms), truncated: summed over hundreds of shims,
    and over the runc calls each shim reaped, they undercount by about half a tick per process and field,
    as much as the quantity measured. No controller is enabled in this cgroup, so it limits nothing;
    runc moves each container's processes into the container's own cgroups, so they are not counted.
    """

    path: Path

    @classmethod
    def create(cls, name: str) -> CpuCgroup | None:
        mount = cgroup2_mount()
        if mount is None:
            return None
        try:
            (mount / name).mkdir()
        except OSError:
            return None
        return cls(mount / name)

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def usage_s(self) -> float:
        for line in (self.path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
        return math.nan

    def remove(self, attempts: int = 10) -> bool:
        """rmdir, retried briefly: a process just reaped can take a moment to leave its cgroup."""
        for _ in range(attempts):
            try:
                self.path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError:
                time.sleep(0.1)
        return False


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all CPUs, /proc/stat).

    What no per-process figure holds: kernel threads (the cgroup workers runc's creations and
    removals wake), interrupts, and whatever else runs. Over a round, the difference is the machine's
    whole cost of it, in whole ticks (10 ms per CPU): fine for rounds of seconds.
    """
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def runc_init_cpu_s(runc_root: Path, command_start_s: float) -> float:
    """The CPU `runc init` spent inside the containers' own init processes, summed over a runc root.

    `runc run` forks `runc init`, whose last stage becomes the container's init: it sets up the
    container (Go runtime, mounts, pivot_root, capabilities) and then execs the container's
    command in the same process. That CPU is runc's own, but no `wait` ever charges it to runc:
    the process is the container's, reaped only when it exits. It is read from each init's
    schedstat while the container runs, less ``command_start_s``, what the command itself costs
    to start and fall asleep (see ``command_start_cpu_s``).
    """
    total = 0.0
    for _id, pid in runc_containers(runc_root):
        if pid > 0:
            try:
                total += max(0.0, threads_cpu_s(pid) - command_start_s)
            except OSError:
                continue  # exited since the listing
    return total


def command_start_cpu_s(bundle: Path, runs: int = 15) -> float:
    """Median CPU of the bundle's command (busybox `sleep`) from exec until it sleeps, run outside runc.

    Subtracted from each container init's CPU so that what remains is runc's alone.
    """
    config = json.loads((bundle / "config.json").read_text())
    rootfs = bundle / config["root"]["path"]
    args = list(config["process"]["args"])
    samples: list[float] = []
    program = str(rootfs / args[0].lstrip("/")) if "/" in args[0] else str(rootfs / "bin" / args[0])
    for _ in range(runs):
        # posix_spawn (vfork): next to nothing runs in the child before the exec, unlike a fork.
        pid = os.posix_spawn(program, [program, *args[1:]], os.environ)
        try:
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
                if state == "S":
                    break
                time.sleep(0.001)
            samples.append(threads_cpu_s(pid))
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return statistics.median(samples)


def threads_cpu_s(pid: int) -> float:
    """A live process's CPU in nanosecond precision: the sum of its threads' schedstat run time."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that has just exited
    return total / 1e9


def containerd_config(base: Path) -> str:
    """The config file: the same private root, state and address as the flags, and fewer plugins."""
    disabled = ", ".join(f'"{name}"' for name in CONTAINERD_DISABLED_PLUGINS)
    return (
        "version = 2\n"
        f'root = "{base / "root"}"\n'
        f'state = "{base / "state"}"\n'
        f"disabled_plugins = [{disabled}]\n"
        "\n[grpc]\n"
        f'  address = "{base / "containerd.sock"}"\n'
        "\n[debug]\n"
        '  address = ""\n'
        "\n[metrics]\n"
        '  address = ""\n'
    )


async def start_containerd(base: Path, log_path: Path) -> Containerd:
    """Start containerd on private directories under ``base``; return once `ctr version` gets an answer.

    Like the daemon it runs in a session of its own, out of reach of the terminal's Ctrl-C, so that an
    interrupted benchmark can still delete its containers through it. Its shims are started in a process
    group of their own and re-parented to the nearest child subreaper, the benchmark, which reaps them.
    """
    base.mkdir(parents=True, exist_ok=True)
    config = base / "config.toml"
    config.write_text(containerd_config(base))
    argv = [
        "containerd",
        "--config",
        str(config),
        "--root",
        str(base / "root"),
        "--state",
        str(base / "state"),
        "--address",
        str(base / "containerd.sock"),
    ]
    with open(log_path, "ab") as log_file:
        process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    containerd = Containerd(process, base, log_path)
    try:
        # Before any shim exists: every shim and runc it starts from now on is in this cgroup too.
        containerd.cgroup = CpuCgroup.create(f"cab-bench-{os.getpid()}-{base.name}")
        if containerd.cgroup is not None:
            try:
                containerd.cgroup.add(process.pid)
            except OSError:
                pass  # it has exited already: reported below
        with trio.fail_after(READY_TIMEOUT_S):
            while True:
                if process.poll() is not None:
                    log = log_path.read_text(errors="replace")
                    raise RuntimeError(f"containerd exited with {process.returncode} before serving:\n{log}")
                if Path(containerd.address).exists():
                    result = await trio.run_process(
                        containerd.ctr_argv("version"),
                        stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False,
                        start_new_session=True,
                    )  # fmt: skip
                    if result.returncode == 0:
                        return containerd
                await trio.sleep(0.05)
    except BaseException:
        with trio.CancelScope(shield=True):
            await stop_containerd(containerd)
        if containerd.cgroup is not None:
            containerd.cgroup.remove()
        raise


async def stop_containerd(containerd: Containerd) -> int | None:
    """SIGTERM by pid, SIGKILL if it lingers; returns the exit code. Its shims keep running (by design)."""
    return await terminate(containerd.process)


def shim_socket(containerd: Containerd, id: str) -> Path:
    digest = hashlib.sha256(f"{containerd.address}/{containerd.namespace}/{id}".encode()).hexdigest()
    return SHIM_SOCKET_DIR / digest


def _cmdline(pid: int | str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _is_shim_of(cmdline: bytes, address: str) -> bool:
    args = cmdline.split(b"\0")
    return (
        bool(args)
        and os.path.basename(args[0]).startswith(b"containerd-shim")
        and b"-address" in args
        and args.index(b"-address") + 1 < len(args)
        and args[args.index(b"-address") + 1] == address.encode()
    )


def shim_pids(address: str) -> list[int]:
    """The live shims of the containerd serving ``address``: by command line (`-address ADDRESS`), which
    only shims started by that containerd carry, so no other containerd's shims are ever counted."""
    return [
        int(entry.name)
        for entry in os.scandir("/proc")
        if entry.name.isdigit() and _is_shim_of(_cmdline(entry.name), address)
    ]


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (a shim's Go binary, mapped by every shim) split among users."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss for pid {pid}")


async def _ctr(containerd: Containerd, limiter: trio.CapacityLimiter, *args: str) -> str | None:
    """One ctr call in a session of its own (as runc delete: Ctrl-C must not kill the cleanup)."""
    async with limiter:
        result = await trio.run_process(
            containerd.ctr_argv(*args), stdin=subprocess.DEVNULL, capture_stdout=True,
            capture_stderr=True, check=False, start_new_session=True,
        )  # fmt: skip
    if result.returncode != 0:
        return f"ctr {' '.join(args[:2])}: {result.stderr.decode(errors='replace').strip()[:300]}"
    return None


async def ctr_list(containerd: Containerd, kind: str) -> list[str]:
    """Ids of the tasks or containers in our namespace (`ctr task ls -q`, `ctr container ls -q`)."""
    result = await trio.run_process(
        containerd.ctr_argv(kind, "ls", "-q"), stdin=subprocess.DEVNULL, capture_stdout=True,
        capture_stderr=True, check=False, start_new_session=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"ctr {kind} ls: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode().split()


async def empty_containerd(containerd: Containerd) -> list[str]:
    """Through containerd, by id: `task kill -s KILL` each task, `task delete -f`, `container delete`.

    The deletes take several ids per call; `-f` waits for a task that the kill has not finished yet.
    Returns the error texts; what counts is that `container ls` is empty afterwards, which is checked.
    """
    errors: list[str] = []
    limiter = trio.CapacityLimiter(CTR_CLEANUP_CONCURRENCY)

    async def call(*args: str) -> None:
        error = await _ctr(containerd, limiter, *args)
        if error:
            errors.append(error)

    def batches(ids: list[str]) -> list[list[str]]:
        return [ids[i : i + CTR_DELETE_BATCH] for i in range(0, len(ids), CTR_DELETE_BATCH)]

    tasks = await ctr_list(containerd, "task")
    async with trio.open_nursery() as nursery:
        for id in tasks:
            nursery.start_soon(call, "task", "kill", "-s", "KILL", id)
    async with trio.open_nursery() as nursery:
        for batch in batches(tasks):
            nursery.start_soon(call, "task", "delete", "-f", *batch)
    async with trio.open_nursery() as nursery:
        for batch in batches(await ctr_list(containerd, "container")):
            nursery.start_soon(call, "container", "delete", *batch)
    left = await ctr_list(containerd, "container")
    if left:
        errors.append(f"{len(left)} containers still listed by containerd: {' '.join(left[:5])}")
    return errors


def _signal_shim(pid: int, address: str, signum: int) -> bool:
    """Signal a shim through a pidfd, after checking that the pid is still that shim (not a reused pid)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if not _is_shim_of(_cmdline(pid), address):
            return False
        signal.pidfd_send_signal(pidfd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


async def finish_shims(containerd: Containerd, pids: Sequence[int], grace_s: float = 5.0) -> list[str]:
    """Wait for the shims (ours to reap, as the child subreaper) to exit after their tasks were deleted;
    SIGKILL by pid the ones that do not, reap them all, and remove the sockets of every id we used.

    A shim killed this way leaves its container to runc: the caller empties containerd's runc root.
    """
    killed: list[int] = []

    async def one(pid: int) -> None:
        with trio.move_on_after(grace_s):
            await reap(pid)
        if _signal_shim(pid, containerd.address, signal.SIGKILL):
            killed.append(pid)
            await reap(pid)

    async with trio.open_nursery() as nursery:
        for pid in pids:
            nursery.start_soon(one, pid)
    problems = []
    if killed:
        shown = " ".join(str(pid) for pid in sorted(killed)[:10])
        problems.append(f"{len(killed)} shims still running after cleanup: killed (pids {shown} ...)")
    return problems + remove_shim_sockets(containerd)


def remove_shim_sockets(containerd: Containerd) -> list[str]:
    """Unlink the shim sockets of our ids that a shim left in /run/containerd/s (a killed one does)."""
    left = [path for path in (shim_socket(containerd, id) for id in containerd.ids) if path.exists()]
    for path in left:
        path.unlink(missing_ok=True)
    return [f"removed {len(left)} shim sockets left in {SHIM_SOCKET_DIR}"] if left else []


def sweep_containerds(containerds: Sequence[Containerd]) -> list[str]:
    """After `trio.run`: SIGKILL by pid any containerd or shim of ours still running, unlink our shim
    sockets. Their containers are then deleted with runc under containerd's runc root (`sweep_leftovers`,
    which also reaps the killed shims), so pass each `runc_root` there.
    """
    problems: list[str] = []
    for containerd in containerds:
        kill_if_running(containerd.process, "containerd pid", problems)
        for pid in shim_pids(containerd.address):
            if _signal_shim(pid, containerd.address, signal.SIGKILL):
                problems.append(f"shim pid {pid} still running: killed")
                try:
                    os.waitpid(pid, 0)  # ours as the child subreaper; SIGKILL cannot be ignored
                except ChildProcessError:
                    pass
        problems += remove_shim_sockets(containerd)
    return problems


def remove_cpu_cgroups(containerds: Sequence[Containerd]) -> list[str]:
    """After every containerd and shim of ours is gone and reaped: remove their accounting cgroups."""
    return [
        f"could not remove cgroup {containerd.cgroup.path}"
        for containerd in containerds
        if containerd.cgroup is not None and not containerd.cgroup.remove()
    ]


def remove_empty_cgroups(ids: Sequence[str]) -> int:
    """rmdir the cgroups named after our container ids that are left behind empty; returns how many.

    The bundle has no `cgroupsPath`, so runc names a container's cgroups after its id. A shim killed
    half-way through a start takes its `runc create` with it (go-runc gives runc a parent-death SIGKILL),
    and that runc leaves its new cgroups behind with no container in the runc root to delete. rmdir removes
    only empty cgroups, so a running container's are never touched.
    """
    try:
        bases = [CGROUP_ROOT, *(entry for entry in CGROUP_ROOT.iterdir() if entry.is_dir())]
    except OSError:
        return 0
    removed = 0
    for id in ids:
        for base in bases:
            try:
                (base / id).rmdir()
                removed += 1
            except OSError:
                pass
    return removed


def remove_empty_shim_dirs(existed_before: bool) -> None:
    """Remove /run/containerd/s and /run/containerd if our shims created them (they did not exist before)
    and they are empty now."""
    if existed_before:
        return
    for directory in (SHIM_SOCKET_DIR, SHIM_SOCKET_DIR.parent):
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (someone else's containerd uses it) or already gone
