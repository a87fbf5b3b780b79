#!/usr/bin/env python3
"""Start N containers through the daemon, with raw `runc run -d` and through containerd 1.6; compare them.

This is the original containerd's benchmark (hack/benchmark.go: one client, 100 workers pulling container
ids from a queue, 1000 containers) run against containerd-actors, with raw runc measured in the same run at
the same concurrency as the yardstick: the daemon can only add cost on top of runc, so "containers/s
relative to raw runc" is the number that survives a change of machine, and the absolute numbers are only
comparable within one run. containerd 1.6 (Debian's `containerd` package), when installed, is the peer
measured the same way.

Run it as root with the project's dependencies (trio, pynng, rich), for example:

    .venv/bin/python scripts/bench_start.py [-n 1000] [--clients 100] [-c 10] [--rounds 3] [--keep-logs]
                                            [--no-containerd] [--workdir DIR]

Each round starts a fresh daemon on a private state dir, starts N containers from `--clients` concurrent
client tasks (latency measured client-side per request), samples the daemon's CPU, RSS and PSS from /proc,
then stops the daemon and deletes its containers by id under its private runc root. The raw runc rounds
start N containers with `runc --root PRIVATE --log LOG run -d --bundle B ID` (stdio /dev/null) with each
of three launchers, and delete them the same way: a thread pool of `-c` workers calling `subprocess.run`
(`--clients` submitted at a time), one `xargs -P <-c> -n 1` fed the ids (no per-start latency), and
`trio.run_process` from `--clients` tasks under a limiter of `-c`. The fastest launcher (median
containers/s) is the raw runc baseline of every ratio; each launcher has its own row, with the daemon's
ratio against it. The API server's CPU is also shown apart from the reaper's, and as a share of the CPU of
runc (the issue's target: at most 8%). runc's CPU is its reaped calls plus what `runc init` spends in each
container's own process before it execs the container's command (the Go runtime, the mounts, pivot_root):
that process is the container's init, reaped only when the container exits, so no reaped call includes
it; it is read from each init's schedstat before the round's deletes, less what the command itself costs
to start (measured outside runc, ~0.4 ms for busybox `sleep`). Both shares are printed: of all of runc's
CPU, and of its reaped calls only (what this bench printed before). With CONTAINERD_ACTORS_PROFILE=FILE in the
environment the daemon's API server writes a cProfile of its trio thread to FILE.<pid> (see
containerd_actors/daemon/profiling.py).

The containerd round starts a fresh containerd with its own `--root`, `--state`, `--address` and config
file, all in the work dir (the config turns off the CRI, /opt and snapshotter plugins, which
`ctr run --config` does not need), and runs N `ctr run -d --null-io --runc-root PRIVATE --config SPEC ID`
from the same client tasks under the same limiter of `-c`. SPEC is the bundle's own config.json with its
rootfs made absolute, so containerd runs the very container that runc and the daemon run (`ctr run
--rootfs` would build another spec). Its server CPU is containerd's plus every shim's (containerd's
reaped `shim start` calls and the long-lived shims, one per container, found by the private address on
their command line, each measured to the nanosecond from its threads' schedstat); runc's CPU is the rest
of the CPU time of a cgroup v2 of containerd's own (cpu.stat), which holds containerd, its shims and the
runc calls they make, because per-process /proc figures in whole ticks, summed over hundreds of shims,
undercount by about half. ctr's CPU is reported as client CPU. Memory is containerd's and all shims' RSS
and PSS with N running.

The round then deletes every container through containerd (`ctr task kill -s KILL`, `task delete -f`,
`container delete`, by id), stops containerd by pid, reaps the shims (the benchmark is their child
subreaper; any still running are killed by pid), removes the shim sockets of our ids from
/run/containerd/s, where containerd 1.6 puts them whatever `--state` says, checks that containerd's runc
root is empty, and removes its cgroup. Without `containerd`, `ctr` or
`containerd-shim-runc-v2` on PATH, or with `--no-containerd`, the table says containerd was not measured.

To measure another tree's daemon (a before/after pair), run this script from that tree's top
directory with it on PYTHONPATH, e.g. `git archive main containerd_actors ctl | tar -x -C /tmp/base`,
then `cd /tmp/base && PYTHONPATH=/tmp/base CHECKOUT/.venv/bin/python CHECKOUT/scripts/bench_start.py`.
PYTHONPATH alone is not enough: the daemon is started as `python -m containerd_actors.daemon.main`,
and `-m` puts the working directory first on sys.path, so run from this checkout it imports this
checkout's code whatever PYTHONPATH says.

Rounds rotate the order (daemon, the three raw launchers, containerd; then shifted by one; ...) so that
no system always runs on a warmer or dirtier machine, and the report quotes medians across rounds: this
machine is noisy. Ctrl-C stops the run and deletes everything started so far.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import attrs
import trio
from benchlib import (
    SHIM_SOCKET_DIR,
    Containerd,
    CpuTimes,
    LatencySummary,
    command_start_cpu_s,
    containerd_version,
    cpu_times,
    daemon_cpu_times,
    daemon_pids,
    empty_containerd,
    empty_runc_root,
    finish_shims,
    machine_busy_s,
    make_bundle,
    median_or_nan,
    missing_containerd_tools,
    own_children_cpu_s,
    progress,
    pss_kib,
    remove_cpu_cgroups,
    remove_empty_cgroups,
    remove_empty_shim_dirs,
    remove_workdir,
    rss_kib,
    run_cancelled_by_signals,
    runc_init_cpu_s,
    shim_pids,
    start_containerd,
    stop_containerd,
    sweep_containerds,
    sweep_leftovers,
    telemetry_lines,
    threads_cpu_s,
    wait_for_quiet_cpu,
)
from rich import box
from rich.console import Console
from rich.table import Table
from support.daemon import DaemonHandle, runc_containers, start_daemon, stop_daemon

from containerd_actors.client import Client
from containerd_actors.host.reaping import become_child_subreaper

T = TypeVar("T")

#: The original's job channel held 20 ids; the workers pulled from it.
JOB_BUFFER = 20
#: Unmeasured raw runc starts before the first round, so that round 1 does not pay for a cold page cache.
WARM_UP_STARTS = 5
#: The daemon's default --start-timeout, applied to raw runc too.
RAW_START_TIMEOUT_S = 15.0
#: With --perf: how long `perf record` is given to start sampling before a round's starts.
PERF_SETTLE_S = 0.5

DAEMON = "daemon"
#: The raw runc baseline of the table: whichever raw launcher below was fastest (median containers/s).
RUNC = "runc"
CONTAINERD = "containerd"
#: The raw launchers of `runc run -d`, each measured every round. A thread pool of `subprocess.run` and
#: `xargs -P` cost the client almost nothing; trio.run_process pays a worker-thread hand-off per start.
RUNC_POOL = "runc-pool"
RUNC_XARGS = "runc-xargs"
RUNC_TRIO = "runc-trio"
RAW_LAUNCHERS = (RUNC_POOL, RUNC_XARGS, RUNC_TRIO)
LAUNCHER_TITLES = {
    RUNC_POOL: "thread pool of subprocess.run",
    RUNC_XARGS: "xargs -P",
    RUNC_TRIO: "trio.run_process",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Containers/s and start latency of containerd-actors against raw `runc run -d` and"
        " containerd 1.6 (when installed).",
        epilog="Run as root, with the project's venv: .venv/bin/python scripts/bench_start.py -n 1000",
    )
    parser.add_argument("-n", type=int, default=1000, help="containers to start per round (default 1000)")
    parser.add_argument(
        "--clients", type=int, default=100, help="concurrent client tasks, as in the original (default 100)"
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=10,
        help="the daemon's -c, and the raw runc and ctr limiter (default 10)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of daemon, runc and containerd, in rotating order; medians are reported",
    )
    parser.add_argument(
        "--workdir",
        default=default_workdir(),
        help="where state dirs, runc roots and bundles go; all systems use it (default: /dev/shm if it is a "
        "tmpfs, like /run on a real host, else /tmp)",
    )
    parser.add_argument(
        "--perf",
        metavar="DIR",
        help="record every CPU with `perf record -a` during each round's starts, into DIR/KIND-ROUND.data",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the daemon, runc and containerd logs (the path is printed)",
    )
    parser.add_argument(
        "--no-containerd",
        action="store_true",
        help="do not measure containerd, even when it is installed",
    )
    args = parser.parse_args(argv)
    for name in ("n", "clients", "concurrency", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"{name} must be at least 1")
    return args


# --- results -------------------------------------------------------------------------------------------


@attrs.define
class RoundResult:
    """One round of N starts; latencies are indexed by start order (None: that start failed)."""

    kind: str
    index: int
    latencies: list[float | None]
    errors: list[str]
    wall_s: float
    #: CPU of the runc processes (reaped children of the daemon, of containerd's shims, or of this script
    #: for raw runc).
    runc_cpu_s: float
    #: The client side: this script's own CPU during the round (the in-process client library, or spawning
    #: runc / ctr), plus the ctr processes for containerd.
    client_cpu_s: float = math.nan
    #: containerd only: the ctr processes' share of client_cpu_s.
    ctr_cpu_s: float = math.nan
    #: The server side: the daemon (reaper + API server), or containerd plus all its shims.
    daemon_cpu_s: float = math.nan
    #: daemon only: the API server's share of daemon_cpu_s (the rest is the reaper's).
    api_cpu_s: float = math.nan
    #: containerd only: the shims' share of daemon_cpu_s (short `shim start` calls and long-lived shims).
    shim_cpu_s: float = math.nan
    #: The server processes' memory after start-up and with N containers running (containerd: + shims).
    rss_idle_kib: float = math.nan
    rss_loaded_kib: float = math.nan
    pss_idle_kib: float = math.nan
    pss_loaded_kib: float = math.nan
    #: daemon only: the reaper's share of rss_idle_kib (the rest is the API server's; the soak and
    #: chaos scripts quote the server's alone).
    reaper_rss_idle_kib: float = math.nan
    #: containerd only: the shims counted in the loaded figures, and their RSS.
    shims: int = 0
    shim_rss_kib: float = math.nan
    #: containerd only: runc_cpu_s from per-shim /proc ticks (no cgroup v2 to account it exactly).
    inexact_runc_cpu: bool = False
    #: CPU `runc init` spent in the containers' own init processes before exec'ing their command, which
    #: no reaped runc call includes (``benchlib.runc_init_cpu_s``), read before the round's deletes.
    init_cpu_s: float = math.nan
    #: The whole machine's busy CPU during the starts (``benchlib.machine_busy_s``): with the CPU
    #: saturated, containers/s is about the CPUs / this per start, whatever process spends it.
    machine_cpu_s: float = math.nan
    #: xargs only: the containers that exist after the round (xargs gives no per-start latency).
    started: int | None = None

    @property
    def n(self) -> int:
        return len(self.latencies)

    @property
    def all_runc_cpu_s(self) -> float:
        """runc's whole CPU for the round: its reaped calls and `runc init` in the containers."""
        return self.runc_cpu_s + (0.0 if math.isnan(self.init_cpu_s) else self.init_cpu_s)

    @property
    def ok(self) -> list[float]:
        return [latency for latency in self.latencies if latency is not None]

    @property
    def count_ok(self) -> int:
        return len(self.ok) if self.started is None else self.started

    @property
    def per_second(self) -> float:
        return self.count_ok / self.wall_s

    def summary(self) -> LatencySummary:
        return LatencySummary.of(self.ok)


@attrs.define
class Context:
    """What every round needs, and everything that must be cleaned up however the run ends."""

    args: argparse.Namespace
    workdir: Path
    bundle: Path = Path()
    #: The bundle's config.json with an absolute rootfs path, for `ctr run --config`.
    containerd_spec: Path = Path()
    #: What the bundle's own command costs to start, outside runc (``benchlib.command_start_cpu_s``).
    command_start_s: float = 0.0
    #: Why containerd is not measured (not installed, --no-containerd, failed warm-up), or None.
    containerd_skipped: str | None = None
    #: Whether /run/containerd existed before our shims could create it (then it is left alone).
    shim_dir_existed: bool = True
    runc_roots: list[Path] = attrs.Factory(list)
    daemons: list[DaemonHandle] = attrs.Factory(list)
    containerds: list[Containerd] = attrs.Factory(list)
    interrupted: bool = False


@attrs.define
class MachineSpan:
    """The machine's busy CPU over one round's starts (set when the span ends)."""

    busy_s: float = math.nan


@contextlib.contextmanager
def machine_span(ctx: Context, kind: str, index: int) -> Iterator[MachineSpan]:
    """Measure the whole machine's busy CPU over the starts; with ``--perf DIR``, also record every
    CPU's samples (`perf record -a`) into DIR/KIND-ROUND.data: `perf report -i FILE --sort comm`
    then says which processes and kernel threads the machine's CPU went to."""
    span = MachineSpan()
    recorder = None
    if ctx.args.perf:
        output = Path(ctx.args.perf) / f"{kind}-{index}.data"
        recorder = subprocess.Popen(
            ["perf", "record", "-a", "-F", "499", "-o", str(output), "--", "sleep", "3600"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(PERF_SETTLE_S)  # perf opens its per-CPU buffers before it samples anything
    before = machine_busy_s()
    try:
        yield span
    finally:
        span.busy_s = machine_busy_s() - before
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)
            recorder.wait()


# --- driving starts ------------------------------------------------------------------------------------


async def drive(
    n: int, clients: int, start_one: Callable[[int], Awaitable[None]]
) -> tuple[list[float | None], list[str], float]:
    """Feed ids 0..n-1 through a small queue to `clients` workers, as the original's benchmark did.

    Each latency runs from the moment a worker takes the id to the reply, so it includes any queueing
    behind the concurrency limit (the daemon's or ours), as a client of the daemon would see it.
    Returns (latency by start order, error texts, wall seconds from first submit to last reply).
    """
    latencies: list[float | None] = [None] * n
    errors: list[str] = []
    send, receive = trio.open_memory_channel[int](JOB_BUFFER)

    async def worker(jobs: trio.MemoryReceiveChannel[int]) -> None:
        async with jobs:
            async for i in jobs:
                began = time.perf_counter()
                try:
                    await start_one(i)
                except Exception as exc:  # a failed start is a result to report, not a crash
                    errors.append(f"start #{i}: {exc}")
                    continue
                latencies[i] = time.perf_counter() - began

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(worker, receive.clone())
        receive.close()
        async with send:
            for i in range(n):
                await send.send(i)
    return latencies, errors, time.perf_counter() - began


async def daemon_round(ctx: Context, index: int) -> RoundResult:
    """N starts through a fresh daemon; CPU and RSS sampled after READY and after the last reply."""
    args = ctx.args
    base = ctx.workdir / f"d{index}"
    daemon = await start_daemon(
        base / "state",
        "-c",
        str(args.concurrency),
        log_path=ctx.workdir / f"daemon-{index}.log",
        debug=False,
        own_session=True,
    )
    ctx.daemons.append(daemon)
    ctx.runc_roots.append(daemon.runc_root)
    try:
        # The daemon is the reaper plus its API server child: both count.
        idle_rss = sum(rss_kib(pid) for pid in daemon_pids(daemon.pid))
        reaper_idle_rss = rss_kib(daemon.pid) if len(daemon_pids(daemon.pid)) > 1 else math.nan
        idle_pss = sum(pss_kib(pid) for pid in daemon_pids(daemon.pid))
        before = daemon_cpu_times(daemon.pid)
        api_pids = daemon_pids(daemon.pid)[1:]  # the API server, without the reaper
        api_before = sum(sample(cpu_times, pid, CpuTimes(0.0, 0.0)).own_s for pid in api_pids)
        client_before = own_cpu_s()
        async with Client.connect(daemon.address) as client:

            async def start_one(i: int) -> None:
                await client.create_container(f"bench-d{index}-{i}", str(ctx.bundle))

            with machine_span(ctx, DAEMON, index) as span:
                latencies, errors, wall = await drive(args.n, args.clients, start_one)
            machine_cpu = span.busy_s
            client_cpu = own_cpu_s() - client_before
            used: CpuTimes = daemon_cpu_times(daemon.pid) - before
            api_used = sum(sample(cpu_times, pid, CpuTimes(0.0, 0.0)).own_s for pid in api_pids) - api_before
            loaded_rss = sum(rss_kib(pid) for pid in daemon_pids(daemon.pid))
            loaded_pss = sum(pss_kib(pid) for pid in daemon_pids(daemon.pid))
            init_cpu = runc_init_cpu_s(daemon.runc_root, ctx.command_start_s)
    finally:
        with trio.CancelScope(shield=True):
            await retire_daemon(daemon)
    return RoundResult(
        kind=DAEMON,
        index=index,
        latencies=latencies,
        errors=errors,
        wall_s=wall,
        runc_cpu_s=used.children_s,
        client_cpu_s=client_cpu,
        daemon_cpu_s=used.own_s,
        api_cpu_s=api_used if api_pids else math.nan,
        init_cpu_s=init_cpu,
        machine_cpu_s=machine_cpu,
        rss_idle_kib=idle_rss,
        rss_loaded_kib=loaded_rss,
        reaper_rss_idle_kib=reaper_idle_rss,
        pss_idle_kib=idle_pss,
        pss_loaded_kib=loaded_pss,
    )


async def retire_daemon(daemon: DaemonHandle) -> None:
    """Stop the daemon by pid, then delete the containers it leaves running (by design) by id."""
    code = await stop_daemon(daemon)
    if code != 0:
        # The log is deleted at exit unless --keep-logs, so show its end now.
        tail = daemon.log_path.read_text(errors="replace").splitlines()[-12:]
        progress(f"warning: daemon pid {daemon.pid} exited with {code}; its log ends:")
        progress("\n".join(f"    {line}" for line in tail))
    await clear_root(daemon.runc_root)


async def clear_root(runc_root: Path) -> None:
    errors = await empty_runc_root(runc_root)
    for error in errors[:5]:
        progress(f"warning: runc delete failed: {error}")
    left = runc_containers(runc_root)
    if left:
        progress(f"warning: {len(left)} containers remain under {runc_root}")


def raw_runc_round(
    kind: str, driven: tuple[list[float | None], list[str], float], before: float, client_before: float
) -> RoundResult:
    """A round of raw runc starts from ``drive``'s (latencies, errors, wall): the runc processes'
    CPU and this script's own since ``before`` and ``client_before``."""
    latencies, errors, wall = driven
    return RoundResult(
        kind,
        0,
        latencies,
        errors,
        wall,
        runc_cpu_s=own_children_cpu_s() - before,
        client_cpu_s=own_cpu_s() - client_before,
    )


def raw_runc_argv(runc_root: Path, log: Path, bundle: Path, id: str) -> list[str]:
    """The honest raw cost: runc alone, with the daemon's kind of --root and --log but no --pid-file or pipes.

    `--log` only gives failures a message (runc writes nothing there on success); stdio is /dev/null
    because a detached container inherits runc's stdio, so a pipe here would never reach EOF.
    """
    return [
        "runc",
        "--root",
        str(runc_root),
        "--log",
        str(log),
        "--log-format",
        "json",
        "run",
        "-d",
        "--bundle",
        str(bundle),
        id,
    ]


async def raw_runc_starts(ctx: Context, runc_root: Path, log: Path, prefix: str, n: int) -> RoundResult:
    """N `runc run -d` through trio.run_process from `--clients` tasks under a limiter of `-c`; the caller
    empties the root."""
    args = ctx.args
    ctx.runc_roots.append(runc_root)
    limiter = trio.CapacityLimiter(args.concurrency)

    async def start_one(i: int) -> None:
        # Shielded and in a session of its own (out of reach of the terminal's Ctrl-C): a `runc run`
        # cut short leaves a half-made container and an orphaned `runc init`, so an interrupted round
        # lets the few starts in flight finish and its cleanup only ever meets whole containers.
        async with limiter:
            with trio.move_on_after(RAW_START_TIMEOUT_S, shield=True) as deadline:
                result = await trio.run_process(
                    raw_runc_argv(runc_root, log, ctx.bundle, f"{prefix}-{i}"),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                    start_new_session=True,
                )
        if deadline.cancelled_caught:
            raise RuntimeError(f"runc run -d did not finish within {RAW_START_TIMEOUT_S:g} s")
        if result.returncode != 0:
            raise RuntimeError(f"runc run -d exited with {result.returncode} (see {log})")

    before, client_before = own_children_cpu_s(), own_cpu_s()
    latencies, errors, wall = await drive(n, args.clients, start_one)
    return raw_runc_round(RUNC_TRIO, (latencies, errors, wall), before, client_before)


def pool_starts_blocking(
    argvs: list[list[str]], clients: int, workers: int, stop: threading.Event
) -> tuple[list[float | None], list[str], float]:
    """N `runc run -d` by `subprocess.run` from a pool of `workers` threads, `clients` submitted at a time.

    Latency runs from submission to runc's exit, so, as with the trio clients, it includes the queueing
    behind the `workers` busy threads. No subprocess timeout: it would poll (1-50 ms sleeps) instead of
    blocking in waitpid, and slow every start. `stop` (an interrupted round) skips the starts not yet begun.
    """
    latencies: list[float | None] = [None] * len(argvs)
    errors: list[str] = []
    in_flight = threading.BoundedSemaphore(clients)

    def start_one(i: int, submitted: float) -> None:
        try:
            if stop.is_set():
                errors.append(f"start #{i}: interrupted")
                return
            result = subprocess.run(
                argvs[i],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
                start_new_session=True,
            )
            if result.returncode != 0:
                errors.append(f"start #{i}: runc run -d exited with {result.returncode}")
            else:
                latencies[i] = time.perf_counter() - submitted
        finally:
            in_flight.release()

    began = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for i in range(len(argvs)):
            in_flight.acquire()
            pool.submit(start_one, i, time.perf_counter())
    return latencies, errors, time.perf_counter() - began


async def pool_runc_starts(ctx: Context, runc_root: Path, log: Path, prefix: str, n: int) -> RoundResult:
    """N `runc run -d` from a plain thread pool of `-c` workers (see pool_starts_blocking)."""
    args = ctx.args
    ctx.runc_roots.append(runc_root)
    argvs = [raw_runc_argv(runc_root, log, ctx.bundle, f"{prefix}-{i}") for i in range(n)]
    stop = threading.Event()

    async def stop_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stop.set()

    before, client_before = own_children_cpu_s(), own_cpu_s()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_when_cancelled)
        # Not abandoned on cancel: the starts in flight finish, so cleanup only meets whole containers.
        latencies, errors, wall = await trio.to_thread.run_sync(
            pool_starts_blocking, argvs, args.clients, args.concurrency, stop
        )
        nursery.cancel_scope.cancel()
    return raw_runc_round(RUNC_POOL, (latencies, errors, wall), before, client_before)


async def xargs_runc_starts(ctx: Context, runc_root: Path, log: Path, prefix: str, n: int) -> RoundResult:
    """N `runc run -d` from one `xargs -P <-c> -n 1`, the ids on its stdin.

    xargs reports no per-start latency; the containers that exist afterwards are the ones started.
    runc's CPU (reaped by xargs, which this script reaps) includes xargs's own, which is tiny.
    """
    args = ctx.args
    ctx.runc_roots.append(runc_root)
    argv = [
        "xargs",
        "-P",
        str(args.concurrency),
        "-n",
        "1",
        *raw_runc_argv(runc_root, log, ctx.bundle, "")[:-1],
    ]
    ids = "".join(f"{prefix}-{i}\n" for i in range(n)).encode()
    before, client_before = own_children_cpu_s(), own_cpu_s()
    began = time.perf_counter()
    # Shielded for the same reason as each trio start: the starts in flight finish.
    with trio.CancelScope(shield=True):
        result = await trio.run_process(
            argv,
            stdin=ids,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            start_new_session=True,
        )
    wall = time.perf_counter() - began
    runc_cpu = own_children_cpu_s() - before
    client_cpu = own_cpu_s() - client_before
    started = len(runc_containers(runc_root))
    errors = [f"xargs exited with {result.returncode}: {n - started} of {n} starts failed (see {log})"] * (
        n - started
    )
    return RoundResult(
        RUNC_XARGS,
        0,
        [None] * n,
        errors,
        wall,
        runc_cpu_s=runc_cpu,
        client_cpu_s=client_cpu,
        started=started,
    )


RAW_STARTS = {RUNC_POOL: pool_runc_starts, RUNC_XARGS: xargs_runc_starts, RUNC_TRIO: raw_runc_starts}


def raw_round(kind: str) -> Callable[[Context, int], Awaitable[RoundResult]]:
    """One round of N raw starts by the launcher `kind`, in a runc root of its own, emptied after."""

    async def run(ctx: Context, index: int) -> RoundResult:
        tag = kind.removeprefix("runc-")
        runc_root = ctx.workdir / f"r{tag}{index}" / "runc"
        try:
            with machine_span(ctx, kind, index) as span:
                result = await RAW_STARTS[kind](
                    ctx,
                    runc_root,
                    ctx.workdir / f"runc-{tag}-{index}.log",
                    f"bench-r{tag}{index}",
                    ctx.args.n,
                )
            result.machine_cpu_s = span.busy_s
            result.init_cpu_s = runc_init_cpu_s(runc_root, ctx.command_start_s)
        finally:
            with trio.CancelScope(shield=True):
                await clear_root(runc_root)
        result.index = index
        return result

    return run


def own_cpu_s() -> float:
    """This script's own CPU: the client side of every round (trio tasks, the client library, spawning)."""
    times = os.times()
    return times.user + times.system


async def ctr_starts(ctx: Context, containerd: Containerd, prefix: str, n: int) -> RoundResult:
    """N `ctr run -d` from `--clients` tasks under a limiter of `-c`, as for raw runc.

    The container is the bundle's own spec (`--config`, rootfs made absolute), not the one `ctr run
    --rootfs` would build, so containerd runs exactly what runc and the daemon run; stdio is /dev/null
    (`--null-io`) as for raw runc. Shielded and in a session of its own for the same reason as `runc run`.
    """
    args = ctx.args
    limiter = trio.CapacityLimiter(args.concurrency)

    async def start_one(i: int) -> None:
        id = f"{prefix}-{i}"
        containerd.ids.append(id)
        async with limiter:
            with trio.move_on_after(RAW_START_TIMEOUT_S, shield=True) as deadline:
                result = await trio.run_process(
                    containerd.run_argv(ctx.containerd_spec, id),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    capture_stderr=True,
                    check=False,
                    start_new_session=True,
                )
        if deadline.cancelled_caught:
            raise RuntimeError(f"ctr run -d did not finish within {RAW_START_TIMEOUT_S:g} s")
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip()[-300:]
            raise RuntimeError(f"ctr run -d exited with {result.returncode}: {message}")

    before, client_before = own_children_cpu_s(), own_cpu_s()
    latencies, errors, wall = await drive(n, args.clients, start_one)
    ctr_cpu = own_children_cpu_s() - before
    result = RoundResult(CONTAINERD, 0, latencies, errors, wall, runc_cpu_s=math.nan)
    result.ctr_cpu_s = ctr_cpu
    result.client_cpu_s = own_cpu_s() - client_before + ctr_cpu
    return result


def sample(read: Callable[[int], T], pid: int, default: T) -> T:
    """A /proc reading of a process that may have exited meanwhile (a shim whose start failed)."""
    try:
        return read(pid)
    except (OSError, ValueError, RuntimeError):
        return default


async def containerd_round(ctx: Context, index: int) -> RoundResult:
    """N starts through a fresh private containerd; its CPU and memory are containerd's plus every shim's.

    CPU: containerd's own and its reaped children's (the short `containerd-shim-runc-v2 start` calls) plus
    each long-lived shim's own (threads' schedstat, exact); runc is the rest of containerd's cgroup's CPU
    (see benchlib.CpuCgroup). Memory: containerd's RSS and PSS after start-up, then containerd's and all
    shims' with N running.
    """
    containerd = await start_containerd(ctx.workdir / f"c{index}", ctx.workdir / f"containerd-{index}.log")
    ctx.containerds.append(containerd)
    ctx.runc_roots.append(containerd.runc_root)
    try:
        idle_rss, idle_pss = rss_kib(containerd.pid), pss_kib(containerd.pid)
        cgroup = containerd.cgroup
        cgroup_before = cgroup.usage_s() if cgroup else math.nan
        before = cpu_times(containerd.pid)
        with machine_span(ctx, CONTAINERD, index) as span:
            result = await ctr_starts(ctx, containerd, f"bench-c{index}", ctx.args.n)
        result.machine_cpu_s = span.busy_s
        if containerd.process.poll() is not None:
            raise RuntimeError(
                f"containerd exited with {containerd.process.returncode} during the round"
                f" (log: {containerd.log_path}, kept with --keep-logs)"
            )
        used = cpu_times(containerd.pid) - before
        in_cgroup = cgroup.usage_s() - cgroup_before if cgroup else math.nan
        shims = shim_pids(containerd.address)
        shim_own = sum(sample(threads_cpu_s, pid, 0.0) for pid in shims)
        shim_rss = sum(sample(rss_kib, pid, 0) for pid in shims)
        shim_pss = sum(sample(pss_kib, pid, 0) for pid in shims)
        # containerd itself and its reaped `shim start` calls: one process's ticks, precise enough.
        result.shim_cpu_s = used.children_s + shim_own
        result.daemon_cpu_s = used.own_s + result.shim_cpu_s
        if cgroup:
            # Everything else in the cgroup is the runc calls the shims made (and reaped).
            result.runc_cpu_s = in_cgroup - result.daemon_cpu_s
        else:
            # No cgroup v2: the shims' reaped children from /proc, truncated to ticks per shim (low).
            shim_times = [sample(cpu_times, pid, CpuTimes(0.0, 0.0)) for pid in shims]
            result.runc_cpu_s = sum(times.children_s for times in shim_times)
            result.inexact_runc_cpu = True
        result.init_cpu_s = runc_init_cpu_s(containerd.runc_root, ctx.command_start_s)
        result.rss_idle_kib, result.pss_idle_kib = idle_rss, idle_pss
        result.rss_loaded_kib = rss_kib(containerd.pid) + shim_rss
        result.pss_loaded_kib = pss_kib(containerd.pid) + shim_pss
        result.shims, result.shim_rss_kib = len(shims), shim_rss
    finally:
        with trio.CancelScope(shield=True):
            await retire_containerd(containerd)
    result.index = index
    return result


async def retire_containerd(containerd: Containerd) -> None:
    """Delete its containers through it (by id), stop it by pid, then make sure of the rest by pid and id:
    the shims exit (or are killed), their sockets in /run/containerd/s go, its runc root is empty."""
    shims = shim_pids(containerd.address)
    errors: list[str] = []
    if containerd.process.returncode is None:
        try:
            errors = await empty_containerd(containerd)
        except RuntimeError as exc:
            errors = [str(exc)]
    for error in errors[:5]:
        progress(f"warning: containerd cleanup: {error}")
    code = await stop_containerd(containerd)
    if code != 0:
        tail = containerd.log_path.read_text(errors="replace").splitlines()[-12:]
        progress(f"warning: containerd pid {containerd.pid} exited with {code}; its log ends:")
        progress("\n".join(f"    {line}" for line in tail))
    for problem in await finish_shims(containerd, shims):
        progress(f"warning: {problem}")
    await clear_root(containerd.runc_root)
    if removed := remove_empty_cgroups(containerd.ids):
        progress(f"warning: removed {removed} empty cgroups of half-made containers")
    for problem in remove_cpu_cgroups([containerd]):
        progress(f"warning: {problem}")


def write_containerd_spec(workdir: Path, bundle: Path) -> Path:
    """The bundle's config.json with its rootfs as an absolute path: containerd runs the container from a
    bundle directory of its own, where the relative `rootfs` would be an empty directory."""
    spec = json.loads((bundle / "config.json").read_text())
    spec["root"]["path"] = str((bundle / spec["root"]["path"]).resolve())
    path = workdir / "containerd-spec.json"
    path.write_text(json.dumps(spec))
    return path


async def warm_up_containerd(ctx: Context) -> None:
    """A few unmeasured starts through a throw-away containerd (its binaries and shim into the page cache);
    a containerd that cannot start the bundle is reported and left out rather than failing the run."""
    ctx.containerd_spec = write_containerd_spec(ctx.workdir, ctx.bundle)
    ctx.shim_dir_existed = SHIM_SOCKET_DIR.parent.exists()
    try:
        containerd = await start_containerd(ctx.workdir / "cwarm", ctx.workdir / "containerd-warm.log")
    except (RuntimeError, trio.TooSlowError) as exc:
        ctx.containerd_skipped = f"it did not start: {str(exc).splitlines()[0]}"
        progress(f"warning: containerd not measured: {ctx.containerd_skipped}")
        return
    ctx.containerds.append(containerd)
    ctx.runc_roots.append(containerd.runc_root)
    try:
        result = await ctr_starts(ctx, containerd, "warm", WARM_UP_STARTS)
    finally:
        with trio.CancelScope(shield=True):
            await retire_containerd(containerd)
    if result.errors:
        ctx.containerd_skipped = f"it cannot start the bundle: {result.errors[0]}"
        progress(f"warning: containerd not measured: {ctx.containerd_skipped}")


async def warm_up(ctx: Context) -> None:
    """A few unmeasured starts so that the first measured round does not pay for cold caches."""
    runc_root = ctx.workdir / "warm" / "runc"
    try:
        result = await raw_runc_starts(ctx, runc_root, ctx.workdir / "runc-warm.log", "warm", WARM_UP_STARTS)
    finally:
        with trio.CancelScope(shield=True):
            await clear_root(runc_root)
    if result.errors:
        raise RuntimeError(f"raw runc cannot start the bundle: {result.errors[0]}")
    if ctx.containerd_skipped is None:
        await warm_up_containerd(ctx)


async def run_rounds(ctx: Context) -> list[RoundResult]:
    """Rotate the order each round (D R C, R C D, C D R, ...; D R, R D without containerd) and wait for a
    quiet CPU before each part."""
    # Container inits orphaned by runc (or by a stopped daemon), and containerd's shims, are ours to reap.
    become_child_subreaper()
    ctx.bundle = make_bundle(ctx.workdir)
    ctx.command_start_s = command_start_cpu_s(ctx.bundle)
    await warm_up(ctx)
    systems = [daemon_round, *(raw_round(kind) for kind in RAW_LAUNCHERS)]
    if ctx.containerd_skipped is None:
        systems.append(containerd_round)
    results: list[RoundResult] = []
    for index in range(ctx.args.rounds):
        shift = index % len(systems)
        for run in systems[shift:] + systems[:shift]:
            if not await wait_for_quiet_cpu():
                progress("warning: the CPU did not become idle before the round; it runs anyway")
            result = await run(ctx, index)
            progress(
                f"round {index + 1}/{ctx.args.rounds} {result.kind:>10}: {result.count_ok}/{result.n} started"
                f" in {result.wall_s:.2f} s ({result.per_second:.1f}/s), {len(result.errors)} failed"
            )
            results.append(result)
    return results


async def run_until_interrupted(ctx: Context) -> list[RoundResult]:
    """Run the rounds until done or interrupted (see benchlib.run_cancelled_by_signals)."""

    def interrupted() -> None:
        ctx.interrupted = True

    return await run_cancelled_by_signals(
        lambda: run_rounds(ctx), [], interrupted, "deleting the containers started so far"
    )


# --- report --------------------------------------------------------------------------------------------

#: Column headers and ratio headers of the three systems, in table order.
TITLES = {DAEMON: "containerd-actors", RUNC: "raw runc run -d", CONTAINERD: "containerd 1.6 + ctr"}
RATIO_TITLES = {DAEMON: "daemon/runc", CONTAINERD: "containerd/runc"}


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def mib(kib: float) -> str:
    return "n/a" if math.isnan(kib) else f"{kib / 1024:.1f} MiB"


def kib_or_mib(kib: float) -> str:
    return "n/a" if math.isnan(kib) else f"{kib:.1f} KiB" if abs(kib) < 1024 else mib(kib)


def ratio(a: float, b: float) -> str:
    return "n/a" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}"


def medians(results: Sequence[RoundResult], metric: Callable[[RoundResult], float]) -> float:
    return median_or_nan([metric(result) for result in results])


def comparison_table(args: argparse.Namespace, groups: dict[str, list[RoundResult]]) -> Table:
    """One column per measured system, then each peer's ratio against raw runc.

    Rows a system does not have (raw runc has no server) show "-"; medians across rounds throughout.
    """
    kinds = [kind for kind in (DAEMON, RUNC, CONTAINERD) if groups.get(kind)]
    peers = [kind for kind in (DAEMON, CONTAINERD) if kind in kinds]
    table = Table(
        title=f"{args.n} starts x {args.rounds} round(s), {args.clients} clients, -c {args.concurrency}"
        " (medians across rounds)",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("")
    for kind in kinds:
        table.add_column(TITLES[kind], justify="right")
    for kind in peers:
        table.add_column(RATIO_TITLES[kind], justify="right")

    def add(label: str, cells: dict[str, str], ratios: dict[str, str] | None = None) -> None:
        ratios = ratios or {}
        table.add_row(label, *(cells.get(kind, "-") for kind in kinds), *(ratios.get(k, "") for k in peers))

    def metric_row(
        label: str,
        metric: Callable[[RoundResult], float],
        show: Callable[[float], str],
        only: Sequence[str] = (DAEMON, RUNC, CONTAINERD),
        with_ratio: bool = True,
    ) -> None:
        values = {kind: medians(groups[kind], metric) for kind in kinds if kind in only}
        if not values:
            return  # a row of a system that was not measured
        base = values.get(RUNC, math.nan)
        ratios = {k: ratio(values[k], base) for k in peers if k in values} if with_ratio else {}
        add(label, {kind: show(value) for kind, value in values.items()}, ratios)

    def per_start(field: str) -> Callable[[RoundResult], float]:
        return lambda r: getattr(r, field) / r.n

    def per_container(loaded: str, idle: str) -> Callable[[RoundResult], float]:
        return lambda r: (getattr(r, loaded) - getattr(r, idle)) / r.n

    metric_row("containers/s", lambda r: r.per_second, lambda v: f"{v:.1f}")
    daemon_rate = medians(groups.get(DAEMON, []), lambda r: r.per_second)
    for launcher in RAW_LAUNCHERS:
        if not groups.get(launcher):
            continue
        rate = medians(groups[launcher], lambda r: r.per_second)
        rounds = " ".join(f"{r.per_second:.0f}" for r in groups[launcher])
        add(
            f"  raw runc via {LAUNCHER_TITLES[launcher]}",
            {RUNC: f"{rate:.1f} ({rounds})" if args.rounds > 1 else f"{rate:.1f}"},
            {DAEMON: ratio(daemon_rate, rate)},
        )
    if args.rounds > 1:
        runc_by_round = {r.index: r.per_second for r in groups.get(RUNC, [])}
        add(
            "  per round",
            {kind: " ".join(f"{r.per_second:.0f}" for r in groups[kind]) for kind in kinds},
            {
                kind: " ".join(
                    ratio(r.per_second, runc_by_round.get(r.index, math.nan)) for r in groups[kind]
                )
                for kind in peers
            },
        )
    metric_row("start latency p50", lambda r: r.summary().median, ms)
    metric_row("start latency p99", lambda r: r.summary().p99, ms)
    add("failed starts (all rounds)", {kind: str(sum(len(r.errors) for r in groups[kind])) for kind in kinds})
    metric_row(
        "server CPU per start", per_start("daemon_cpu_s"), ms, only=(DAEMON, CONTAINERD), with_ratio=False
    )
    metric_row("  of which shims", per_start("shim_cpu_s"), ms, only=(CONTAINERD,), with_ratio=False)
    metric_row("  of which API server", per_start("api_cpu_s"), ms, only=(DAEMON,), with_ratio=False)
    metric_row("runc CPU per start", lambda r: r.all_runc_cpu_s / r.n, ms)
    metric_row("  runc calls (reaped)", per_start("runc_cpu_s"), ms)
    metric_row("  runc init in the container's process", per_start("init_cpu_s"), ms)
    for title, share in (("", "all_runc_cpu_s"), (" (reaped calls only)", "runc_cpu_s")):
        metric_row(
            f"server CPU / its own runc CPU{title}",
            lambda r, share=share: r.daemon_cpu_s / getattr(r, share),
            lambda v: f"{v:.1%}",
            only=(DAEMON, CONTAINERD),
            with_ratio=False,
        )
        metric_row(
            f"  API server CPU / its runc CPU{title}",
            lambda r, share=share: r.api_cpu_s / getattr(r, share),
            lambda v: f"{v:.1%}",
            only=(DAEMON,),
            with_ratio=False,
        )
    metric_row("client CPU per start", per_start("client_cpu_s"), ms)
    metric_row("  of which ctr processes", per_start("ctr_cpu_s"), ms, only=(CONTAINERD,), with_ratio=False)
    metric_row(
        "all CPU per start",
        lambda r: (
            sum(0.0 if math.isnan(x) else x for x in (r.daemon_cpu_s, r.all_runc_cpu_s, r.client_cpu_s)) / r.n
        ),
        ms,
    )
    metric_row("machine CPU per start (all processes, kernel threads)", per_start("machine_cpu_s"), ms)
    server = (DAEMON, CONTAINERD)
    metric_row("server RSS idle", lambda r: r.rss_idle_kib, mib, only=server, with_ratio=False)
    metric_row("  of which reaper", lambda r: r.reaper_rss_idle_kib, mib, only=(DAEMON,), with_ratio=False)
    metric_row(
        f"server RSS with {args.n} running", lambda r: r.rss_loaded_kib, mib, only=server, with_ratio=False
    )
    if CONTAINERD in kinds:
        shims = medians(groups[CONTAINERD], lambda r: r.shims)
        metric_row(
            f"  of which {shims:.0f} shims",
            lambda r: r.shim_rss_kib,
            mib,
            only=(CONTAINERD,),
            with_ratio=False,
        )
    metric_row(
        "memory per container, RSS",
        per_container("rss_loaded_kib", "rss_idle_kib"),
        kib_or_mib,
        only=server,
        with_ratio=False,
    )
    metric_row(
        "memory per container, PSS",
        per_container("pss_loaded_kib", "pss_idle_kib"),
        kib_or_mib,
        only=server,
        with_ratio=False,
    )
    return table


def decile_table(groups: dict[str, list[RoundResult]], n: int) -> Table:
    """Latency by decile of start order, pooled across rounds: the 1000th start should cost the 10th's."""
    kinds = [kind for kind in (DAEMON, *RAW_LAUNCHERS, CONTAINERD) if any(r.ok for r in groups.get(kind, []))]
    table = Table(title="start latency by decile of start order (all rounds pooled)", box=box.SIMPLE_HEAD)
    table.add_column("starts", justify="right")
    for kind in kinds:
        table.add_column(f"{kind} mean", justify="right")
        table.add_column(f"{kind} p50", justify="right")
    for decile in range(10):
        lo, hi = decile * n // 10, (decile + 1) * n // 10
        if lo == hi:
            continue
        cells = [f"{lo + 1}-{hi}"]
        for kind in kinds:
            samples = [x for r in groups[kind] for x in r.latencies[lo:hi] if x is not None]
            summary = LatencySummary.of(samples)
            cells += [ms(summary.mean), ms(summary.median)]
        table.add_row(*cells)
    return table


def machine_line(with_containerd: bool) -> str:
    runc = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout.splitlines()
    line = f"{os.cpu_count()} CPUs, Linux {platform.release()}, {runc[0] if runc else 'runc ?'}"
    return f"{line}, {containerd_version()}" if with_containerd else line


def fastest_launcher(groups: dict[str, list[RoundResult]]) -> str | None:
    """The raw launcher with the highest median containers/s: the baseline every ratio is against."""
    rates = {
        kind: medians(groups[kind], lambda r: r.per_second) for kind in RAW_LAUNCHERS if groups.get(kind)
    }
    return max(rates, key=lambda kind: rates[kind]) if rates else None


def report(ctx: Context, results: list[RoundResult]) -> None:
    args = ctx.args
    kinds = (DAEMON, *RAW_LAUNCHERS, CONTAINERD)
    groups = {kind: [r for r in results if r.kind == kind] for kind in kinds}
    fastest = fastest_launcher(groups)
    groups[RUNC] = groups[fastest] if fastest else []
    console = Console(width=None if sys.stdout.isatty() else 140, highlight=False)
    console.print(machine_line(bool(groups[CONTAINERD])))
    console.print(comparison_table(args, groups))
    if fastest:
        print(
            f"raw runc: the fastest launcher, {LAUNCHER_TITLES[fastest]} (median containers/s); the others"
            " are the indented rows.\nxargs gives no per-start latency."
        )
    print(
        f"Latency is client-side, from taking an id to the reply. With {min(args.n, args.clients)} starts"
        f" in flight and -c {args.concurrency},\n"
        "most of it is queueing (about starts in flight / containers/s).\n"
        "Server: the daemon's reaper + API server; containerd + every shim it started (its reaped\n"
        "`shim start` calls count as shims). runc: runc calls reaped by the daemon, shims or this script,\n"
        "plus `runc init` in each container's own process before it execs the command (schedstat, read\n"
        f"before the deletes, less {ctx.command_start_s * 1000:.2f} ms: its own start outside runc).\n"
        "Client: this script's own CPU in the round (the in-process client, or spawning runc / ctr) + ctr.\n"
        "Memory per container: (server with N running - server idle) / N; RSS counts shared pages in full."
    )
    if groups[CONTAINERD]:
        print(
            "containerd: private root, state, socket and config (CRI, /opt and snapshotter plugins off);\n"
            "  `ctr run -d --null-io --runc-root R --config SPEC ID`, SPEC the bundle's config.json with an"
            " absolute rootfs.\n"
            "  CPU: containerd's /proc/PID/stat, each shim's threads' schedstat (ns), and runc = the rest of"
            " its cgroup's cpu.stat."
        )
        if any(r.inexact_runc_cpu for r in groups[CONTAINERD]):
            print(
                "  No cgroup v2 here: containerd's runc CPU is the shims' reaped children in whole ticks per"
                " shim, an undercount."
            )
    else:
        print(f"containerd: not measured ({ctx.containerd_skipped or 'no round finished'})")
    print()
    print(
        "containerd-actors start latency, client-side, all rounds pooled (the original's Telemetry format):"
    )
    print("\n".join(telemetry_lines(LatencySummary.of([x for r in groups[DAEMON] for x in r.ok]))))
    print()
    for launcher in RAW_LAUNCHERS:
        samples = [x for r in groups[launcher] for x in r.ok]
        if samples:
            print(f"raw runc run -d through {LAUNCHER_TITLES[launcher]}, same format:")
            print("\n".join(telemetry_lines(LatencySummary.of(samples), name="runc")))
            print()
    if groups[CONTAINERD]:
        print("containerd 1.6 + ctr run -d, same format:")
        samples = [x for r in groups[CONTAINERD] for x in r.ok]
        print("\n".join(telemetry_lines(LatencySummary.of(samples), name="containerd")))
    print()
    console.print(decile_table(groups, args.n))
    for r in results:
        for error in r.errors[:3]:
            print(f"{r.kind} round {r.index + 1}: {error}")


# --- cleanup and main ------------------------------------------------------------------------------------


def final_sweep(ctx: Context) -> list[str]:
    """Whatever the way out, leave no daemon, containerd, shim, container or zombie behind, nor a shim
    socket of ours in /run/containerd/s; returns what had to be fixed."""
    problems = sweep_containerds(ctx.containerds)
    problems += sweep_leftovers(ctx.daemons, ctx.runc_roots, [c.process for c in ctx.containerds])
    if removed := sum(remove_empty_cgroups(c.ids) for c in ctx.containerds):
        problems.append(f"removed {removed} empty cgroups of half-made containers")
    problems += remove_cpu_cgroups(ctx.containerds)
    remove_empty_shim_dirs(ctx.shim_dir_existed)
    return problems


def default_workdir() -> str:
    """A tmpfs when there is one: the daemon's default state dir /run is a tmpfs on real hosts, and on a
    disk file system inode allocation for the per-container files dominates the daemon's kernel time."""
    try:
        with open("/proc/mounts") as mounts:
            if any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in mounts):
                return "/dev/shm"
    except OSError:
        pass
    return "/tmp"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench_start: runc needs root; run as root", file=sys.stderr)
        return 1
    # IPC socket paths must stay under ~107 bytes, so a short directory directly in /tmp.
    ctx = Context(args, Path(tempfile.mkdtemp(prefix="cab-", dir=args.workdir)))
    if args.no_containerd:
        ctx.containerd_skipped = "--no-containerd"
    elif missing := missing_containerd_tools():
        ctx.containerd_skipped = f"not installed: no {', '.join(missing)} on PATH"
    if ctx.containerd_skipped:
        progress(f"containerd: not measured ({ctx.containerd_skipped})")
    results: list[RoundResult] = []
    try:
        results = trio.run(run_until_interrupted, ctx)
    finally:
        problems = final_sweep(ctx)
        for problem in problems:
            progress(f"cleanup: {problem}")
        started = ", ".join(str(d.pid) for d in ctx.daemons) or "none"
        progress(f"cleanup: {len(ctx.runc_roots)} runc roots emptied; daemons stopped (pids {started})")
        if ctx.containerds:
            pids = ", ".join(str(c.pid) for c in ctx.containerds)
            progress(f"cleanup: containerds stopped (pids {pids}), their shims reaped and sockets removed")
        remove_workdir(ctx.workdir, args.keep_logs)
    if ctx.interrupted or not results:
        return 130
    report(ctx, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
