#!/usr/bin/env python3
"""Start N containers through the daemon and with raw `runc run -d`, and compare the two.

This is the original containerd's benchmark (hack/benchmark.go: one client, 100 workers pulling container
ids from a queue, 1000 containers) run against containerd-actors, with raw runc measured in the same run at
the same concurrency as the yardstick: the daemon can only add cost on top of runc, so "containers/s
relative to raw runc" is the number that survives a change of machine, and the absolute numbers are only
comparable within one run.

Run it as root with the project's dependencies (trio, pynng, rich), for example:

    .venv/bin/python scripts/bench_start.py [-n 1000] [--clients 100] [-c 10] [--rounds 3] [--keep-logs]

Each round starts a fresh daemon on a private state dir, starts N containers from `--clients` concurrent
client tasks (latency measured client-side per request), samples the daemon's CPU and RSS from /proc,
then stops the daemon and deletes its containers by id under its private runc root. The raw runc round
starts N containers with `runc --root PRIVATE --log LOG run -d --bundle B ID` (stdio /dev/null) from the
same number of client tasks under a limiter of `-c`, and deletes them the same way. Rounds alternate
(daemon first, then runc first, ...) so that neither side always runs on a warmer or dirtier machine, and
the report quotes medians across rounds: this machine is noisy.

containerd 1.6 is not measured (reported as such).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import attrs
import trio
from benchlib import (
    CpuTimes,
    Daemon,
    LatencySummary,
    daemon_cpu_times,
    daemon_pids,
    empty_runc_root,
    median_or_nan,
    own_children_cpu_s,
    progress,
    remove_workdir,
    rss_kib,
    run_cancelled_by_signals,
    runc_containers,
    start_daemon,
    stop_daemon,
    sweep_leftovers,
    telemetry_lines,
    wait_for_quiet_cpu,
)
from rich import box
from rich.console import Console
from rich.table import Table

from containerd_actors.client import Client
from containerd_actors.reaping import become_child_subreaper

SCRIPTS_DIR = Path(__file__).resolve().parent
#: The original's job channel held 20 ids; the workers pulled from it.
JOB_BUFFER = 20
#: Unmeasured raw runc starts before the first round, so that round 1 does not pay for a cold page cache.
WARM_UP_STARTS = 5
#: The daemon's default --start-timeout, applied to raw runc too.
RAW_START_TIMEOUT_S = 15.0

DAEMON = "daemon"
RUNC = "runc"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Containers/s and start latency of containerd-actors against raw `runc run -d`.",
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
        help="the daemon's -c, and the raw runc limiter (default 10)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternating daemon/runc rounds; medians are reported"
    )
    parser.add_argument(
        "--workdir",
        default=default_workdir(),
        help="where state dirs, runc roots and bundles go; both sides use it (default: /dev/shm if it is a "
        "tmpfs, like /run on a real host, else /tmp)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the daemon and runc logs (the path is printed)"
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
    #: CPU of the runc processes (reaped children of the daemon, or of this script for raw runc).
    runc_cpu_s: float
    daemon_cpu_s: float = math.nan
    rss_idle_kib: float = math.nan
    rss_loaded_kib: float = math.nan

    @property
    def n(self) -> int:
        return len(self.latencies)

    @property
    def ok(self) -> list[float]:
        return [latency for latency in self.latencies if latency is not None]

    @property
    def per_second(self) -> float:
        return len(self.ok) / self.wall_s

    def summary(self) -> LatencySummary:
        return LatencySummary.of(self.ok)


@attrs.define
class Context:
    """What every round needs, and everything that must be cleaned up however the run ends."""

    args: argparse.Namespace
    workdir: Path
    bundle: Path = Path()
    runc_roots: list[Path] = attrs.Factory(list)
    daemons: list[Daemon] = attrs.Factory(list)
    interrupted: bool = False


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
        base / "state", ctx.workdir / f"daemon-{index}.log", "-c", str(args.concurrency)
    )
    ctx.daemons.append(daemon)
    ctx.runc_roots.append(daemon.runc_root)
    try:
        # The daemon is the reaper plus its API server child: both count.
        idle_rss = sum(rss_kib(pid) for pid in daemon_pids(daemon.pid))
        before = daemon_cpu_times(daemon.pid)
        async with Client.connect(daemon.address) as client:

            async def start_one(i: int) -> None:
                await client.create_container(f"bench-d{index}-{i}", str(ctx.bundle))

            latencies, errors, wall = await drive(args.n, args.clients, start_one)
            used: CpuTimes = daemon_cpu_times(daemon.pid) - before
            loaded_rss = sum(rss_kib(pid) for pid in daemon_pids(daemon.pid))
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
        daemon_cpu_s=used.own_s,
        rss_idle_kib=idle_rss,
        rss_loaded_kib=loaded_rss,
    )


async def retire_daemon(daemon: Daemon) -> None:
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
    """N `runc run -d` from `--clients` tasks under a limiter of `-c`; the caller empties the root."""
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

    before = own_children_cpu_s()
    latencies, errors, wall = await drive(n, args.clients, start_one)
    return RoundResult(RUNC, 0, latencies, errors, wall, runc_cpu_s=own_children_cpu_s() - before)


async def runc_round(ctx: Context, index: int) -> RoundResult:
    runc_root = ctx.workdir / f"r{index}" / "runc"
    try:
        result = await raw_runc_starts(
            ctx, runc_root, ctx.workdir / f"runc-{index}.log", f"bench-r{index}", ctx.args.n
        )
    finally:
        with trio.CancelScope(shield=True):
            await clear_root(runc_root)
    result.index = index
    return result


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


def make_bundle(workdir: Path) -> Path:
    """One read-only busybox bundle running `sleep`; runc can run many containers from it."""
    bundle = workdir / "bundle"
    subprocess.run(
        [sys.executable, str(SCRIPTS_DIR / "make-bundle"), str(bundle), "--", "sleep", "1000000"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return bundle


async def run_rounds(ctx: Context) -> list[RoundResult]:
    """Alternate the order each round (D R, R D, ...) and wait for a quiet CPU before each half."""
    become_child_subreaper()  # container inits orphaned by runc (or by a stopped daemon) are ours to reap
    ctx.bundle = make_bundle(ctx.workdir)
    await warm_up(ctx)
    results: list[RoundResult] = []
    for index in range(ctx.args.rounds):
        order = (daemon_round, runc_round) if index % 2 == 0 else (runc_round, daemon_round)
        for run in order:
            if not await wait_for_quiet_cpu():
                progress("warning: the CPU did not become idle before the round; it runs anyway")
            result = await run(ctx, index)
            progress(
                f"round {index + 1}/{ctx.args.rounds} {result.kind:>6}: {len(result.ok)}/{result.n} started"
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


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def mib(kib: float) -> str:
    return "n/a" if math.isnan(kib) else f"{kib / 1024:.1f} MiB"


def ratio(a: float, b: float) -> str:
    return "n/a" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}"


def medians(results: Sequence[RoundResult], metric: Callable[[RoundResult], float]) -> float:
    return median_or_nan([metric(result) for result in results])


def comparison_table(args: argparse.Namespace, daemon: list[RoundResult], runc: list[RoundResult]) -> Table:
    table = Table(
        title=f"{args.n} starts x {args.rounds} round(s), {args.clients} clients, -c {args.concurrency}"
        " (medians across rounds)",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("")
    table.add_column("containerd-actors", justify="right")
    table.add_column("raw runc run -d", justify="right")
    table.add_column("daemon/runc", justify="right")

    def per_second(r: RoundResult) -> float:
        return r.per_second

    def p50(r: RoundResult) -> float:
        return r.summary().median

    def p99(r: RoundResult) -> float:
        return r.summary().p99

    def runc_cpu(r: RoundResult) -> float:
        return r.runc_cpu_s / r.n

    d_rate, r_rate = medians(daemon, per_second), medians(runc, per_second)
    table.add_row("containers/s", f"{d_rate:.1f}", f"{r_rate:.1f}", ratio(d_rate, r_rate))
    if args.rounds > 1:
        table.add_row(
            "  per round",
            " ".join(f"{r.per_second:.0f}" for r in daemon),
            " ".join(f"{r.per_second:.0f}" for r in runc),
            " ".join(ratio(d.per_second, r.per_second) for d, r in zip(daemon, runc, strict=True)),
        )
    for label, metric in (("start latency p50", p50), ("start latency p99", p99)):
        d, r = medians(daemon, metric), medians(runc, metric)
        table.add_row(label, ms(d), ms(r), ratio(d, r))
    table.add_row(
        "failed starts (all rounds)",
        str(sum(len(r.errors) for r in daemon)),
        str(sum(len(r.errors) for r in runc)),
        "",
    )
    table.add_row("daemon CPU per start", ms(medians(daemon, lambda r: r.daemon_cpu_s / r.n)), "-", "")
    d_runc, r_runc = medians(daemon, runc_cpu), medians(runc, runc_cpu)
    table.add_row("runc CPU per start (runc itself)", ms(d_runc), ms(r_runc), ratio(d_runc, r_runc))
    idle = medians(daemon, lambda r: r.rss_idle_kib)
    loaded = medians(daemon, lambda r: r.rss_loaded_kib)
    per_container = medians(daemon, lambda r: (r.rss_loaded_kib - r.rss_idle_kib) / r.n)
    table.add_row("daemon RSS idle (reaper + server)", mib(idle), "-", "")
    table.add_row(f"daemon RSS with {args.n} running", mib(loaded), "-", "")
    table.add_row("daemon memory per container", f"{per_container:.1f} KiB", "-", "")
    return table


def decile_table(daemon: list[RoundResult], runc: list[RoundResult], n: int) -> Table:
    """Latency by decile of start order, pooled across rounds: the 1000th start should cost the 10th's."""
    table = Table(title="start latency by decile of start order (all rounds pooled)", box=box.SIMPLE_HEAD)
    for header in ("starts", "daemon mean", "daemon p50", "runc mean", "runc p50"):
        table.add_column(header, justify="right")
    for decile in range(10):
        lo, hi = decile * n // 10, (decile + 1) * n // 10
        if lo == hi:
            continue
        cells = [f"{lo + 1}-{hi}"]
        for results in (daemon, runc):
            samples = [x for r in results for x in r.latencies[lo:hi] if x is not None]
            summary = LatencySummary.of(samples)
            cells += [ms(summary.mean), ms(summary.median)]
        table.add_row(*cells)
    return table


def machine_line() -> str:
    runc = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout.splitlines()
    return f"{os.cpu_count()} CPUs, Linux {platform.release()}, {runc[0] if runc else 'runc ?'}"


def report(args: argparse.Namespace, results: list[RoundResult]) -> None:
    daemon = [r for r in results if r.kind == DAEMON]
    runc = [r for r in results if r.kind == RUNC]
    console = Console(width=None if sys.stdout.isatty() else 110, highlight=False)
    console.print(machine_line())
    console.print(comparison_table(args, daemon, runc))
    print(
        f"Latency is client-side, from taking an id to the reply. With {min(args.n, args.clients)} starts"
        f" in flight and -c {args.concurrency},\n"
        "most of it is queueing (about starts in flight / containers/s)."
    )
    print("containerd: not measured")
    print()
    print(
        "containerd-actors start latency, client-side, all rounds pooled (the original's Telemetry format):"
    )
    print("\n".join(telemetry_lines(LatencySummary.of([x for r in daemon for x in r.ok]))))
    print()
    print("raw runc run -d, same format:")
    print("\n".join(telemetry_lines(LatencySummary.of([x for r in runc for x in r.ok]), name="runc")))
    print()
    console.print(decile_table(daemon, runc, args.n))
    for r in results:
        for error in r.errors[:3]:
            print(f"{r.kind} round {r.index + 1}: {error}")


# --- cleanup and main ------------------------------------------------------------------------------------


def final_sweep(ctx: Context) -> list[str]:
    """Whatever the way out, leave no daemon, container or zombie behind; returns what had to be fixed."""
    return sweep_leftovers(ctx.daemons, ctx.runc_roots)


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
    results: list[RoundResult] = []
    try:
        results = trio.run(run_until_interrupted, ctx)
    finally:
        problems = final_sweep(ctx)
        for problem in problems:
            progress(f"cleanup: {problem}")
        started = ", ".join(str(d.pid) for d in ctx.daemons) or "none"
        progress(f"cleanup: {len(ctx.runc_roots)} runc roots emptied; daemons stopped (pids {started})")
        remove_workdir(ctx.workdir, args.keep_logs)
    if ctx.interrupted or not results:
        return 130
    report(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
