#!/usr/bin/env python3
"""The API server's own CPU per container start, with a stand-in for runc; trees compared in one run.

Against real runc (`scripts/bench_start.py`) the server's share is a few per cent of a start's CPU and
the machine's load moves it by more than a change does. Here runc is a small shell script (written into
the work dir) that starts `sleep` with the stdio it is given and writes its pid, so what is measured is
the daemon's own work per start: the request, the actors, the state directory, the spawn and reap of
"runc", the reaper link, the event. The API server's CPU is the sum of its threads' schedstat run time
(nanoseconds), read around each round.

Each tree given (a checkout's top directory; default: this one) gets a fresh daemon started from that
directory (`python -m` imports the code of its working directory), 50 unmeasured starts, then
`--rounds` rounds of `-n` starts from `--clients` client tasks, the trees' rounds alternating (order
reversed every other round) so that both see the same machine. With two trees the paired ratio
(second / first, round by round) is printed too: the number to quote on a loaded machine.

    .venv/bin/python scripts/bench_daemon_cost.py [TREE ...] [-n 300] [--rounds 8] [--clients 100] [-c 10]
    .venv/bin/python scripts/bench_daemon_cost.py [TREE ...] --exec [--runc] [-n 300] [--rounds 8]

With `--exec`, the same for AddProcess: each daemon gets one container, then every round is `-n`
sequential AddProcess `true` calls from one client (a warm loop: one exec at a time, as a person or a
health check would); printed are the server's CPU per exec and the median AddProcess wall time (the
stand-in's own `exec` is a shell starting `true`, so the wall time is the daemon's plus a shell's).

With `--exec --runc`, the daemons drive the real runc (one busybox container each, no warm-up
starts) and every step of a round is, back to back: one AddProcess `true` per tree (order reversed
every other step), then `runc exec -d --process SPEC` (the spec the daemon would write, its `true`
reaped here) and `runc exec ID true` straight against the first daemon's container. Printed are the
medians of each, so the daemon's share of an exec's wall time is read off within one run.

Every container stays running until the end (as in bench_start), 7 descriptors each: keep
`(rounds + 1) * n` well under the daemon's open-file limit (the default keeps 2,450 per daemon).
At the end the daemons are stopped by pid, the `sleep` inits are killed by the pids the stand-in
recorded and reaped (this script is their subreaper), and the work dir is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trio
from bench_start import default_workdir, drive
from benchlib import daemon_pids, empty_runc_root, make_bundle, progress, remove_workdir, threads_cpu_s
from support.daemon import DaemonHandle, start_daemon, stop_daemon

from containerd_actors.client import Client
from containerd_actors.host.reaping import become_child_subreaper
from containerd_actors.runc import spawn

#: Starts before the measured rounds: imports, caches and the first actors' allocations.
WARM_UP_STARTS = 50

#: The stand-in: `run` starts `sleep` with runc's stdio (the container's pipes) and writes its pid to
#: the pid file and to `<root>/<id>/pid` (for the cleanup); `delete` kills it; `list` and `ps` know
#: nothing. POSIX sh, so that its own start costs the machine little.
FAKE_RUNC = """#!/bin/sh
root=
while [ $# -gt 0 ]; do
  case $1 in
    --root) root=$2; shift 2;;
    --log|--log-format) shift 2;;
    *) break;;
  esac
done
cmd=$1; shift
pidfile=
for a in "$@"; do id=$a; done
while [ $# -gt 0 ]; do
  case $1 in --pid-file) pidfile=$2; shift 2;; *) shift;; esac
done
case $cmd in
  exec)
    # A subshell that leaves `true` behind: orphaned to the reaper as runc's process would be (a
    # background job of this shell could be reaped by it, and its exit would never be reported).
    (true & exec /usr/bin/printf "%s\n" $! > "$pidfile")
    exit 0;;
  run)
    mkdir -p "$root/$id"
    sleep 1000000 <&0 &
    echo $! > "$root/$id/pid"
    echo $! > "$pidfile"
    exit 0;;
  delete)
    [ -f "$root/$id/pid" ] && kill -9 "$(cat "$root/$id/pid")" 2>/dev/null
    rm -rf "$root/$id"; exit 0;;
  list|ps) echo null; exit 0;;
  *) exit 0;;
esac
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trees", nargs="*", help="checkouts whose daemons to measure (default: this one)")
    parser.add_argument("-n", type=int, default=300, help="starts per round (default 300)")
    parser.add_argument("--rounds", type=int, default=8, help="measured rounds per tree (default 8)")
    parser.add_argument("--clients", type=int, default=100, help="concurrent client tasks (default 100)")
    parser.add_argument("-c", "--concurrency", type=int, default=10, help="the daemon's -c (default 10)")
    parser.add_argument("--exec", action="store_true", help="measure AddProcess `true` instead of starts")
    parser.add_argument(
        "--runc", action="store_true", help="with --exec: the real runc, and runc exec timed beside it"
    )
    parser.add_argument("--workdir", default=None, help="where the state dirs go (default: a tmpfs)")
    args = parser.parse_args(argv)
    this_checkout = Path(__file__).resolve().parent.parent
    args.trees = [str(Path(tree).resolve()) for tree in args.trees] or [str(this_checkout)]
    return args


async def start_in(tree: str, state_dir: Path, fake: Path | None, concurrency: int) -> DaemonHandle:
    """A daemon of ``tree``'s code: started from that directory (``fake``: its runc)."""
    here = os.getcwd()
    os.chdir(tree)
    runtime = ["--runtime", str(fake)] if fake is not None else []
    try:
        return await start_daemon(state_dir, "-c", str(concurrency), *runtime, debug=False, own_session=True)
    finally:
        os.chdir(here)


async def starts(daemon: DaemonHandle, bundle: Path, prefix: str, n: int, clients: int) -> None:
    async with Client.connect(daemon.address) as client:

        async def start_one(i: int) -> None:
            await client.create_container(f"{prefix}-{i}", str(bundle))

        _latencies, errors, _wall = await drive(n, clients, start_one)
    if errors:
        raise RuntimeError(f"{len(errors)} starts failed, the first: {errors[0]}")


async def execs(daemon: DaemonHandle, id: str, n: int) -> list[float]:
    """``n`` AddProcess ``true`` one after the other; each one's wall time (ms)."""
    walls = []
    async with Client.connect(daemon.address) as client:
        for _ in range(n):
            began = time.perf_counter()
            await client.add_process(id, ["true"])
            walls.append((time.perf_counter() - began) * 1000)
    return walls


async def measure(args: argparse.Namespace, work: Path) -> tuple[list[list[float]], list[list[float]]]:
    """API server CPU per start or exec (ms) of each tree, round by round; with --exec also
    each exec's wall time (ms)."""
    become_child_subreaper()  # the inits come to us when the daemons' reapers stop
    bundle = make_bundle(work)
    fake = work / "fake-runc"
    fake.write_text(FAKE_RUNC)
    fake.chmod(0o755)
    daemons: list[DaemonHandle] = []
    try:
        for index, tree in enumerate(args.trees):
            daemons.append(await start_in(tree, work / f"state{index}", fake, args.concurrency))
        servers = [daemon_pids(daemon.pid)[-1] for daemon in daemons]
        exec_into = [f"x{os.getpid()}-{index}" for index in range(len(daemons))]
        for index, daemon in enumerate(daemons):
            await starts(daemon, bundle, f"w{os.getpid()}-{index}", WARM_UP_STARTS, args.clients)
            if args.exec:
                await daemon_client_create(daemon, exec_into[index], bundle)
                await execs(daemon, exec_into[index], WARM_UP_STARTS)
        per_start: list[list[float]] = [[] for _ in daemons]
        walls: list[list[float]] = [[] for _ in daemons]
        for round_number in range(args.rounds):
            order = list(range(len(daemons)))
            if round_number % 2:
                order.reverse()
            for index in order:
                before = threads_cpu_s(servers[index])
                if args.exec:
                    walls[index] += await execs(daemons[index], exec_into[index], args.n)
                else:
                    prefix = f"b{os.getpid()}-{index}-{round_number}"
                    await starts(daemons[index], bundle, prefix, args.n, args.clients)
                per_start[index].append((threads_cpu_s(servers[index]) - before) / args.n * 1000)
            progress(f"round {round_number + 1}/{args.rounds} done")
        return per_start, walls
    finally:
        with trio.CancelScope(shield=True):
            await retire(daemons)


async def daemon_client_create(daemon: DaemonHandle, id: str, bundle: Path) -> None:
    async with Client.connect(daemon.address) as client:
        await client.create_container(id, str(bundle))


async def retire(daemons: list[DaemonHandle]) -> None:
    """Stop the daemons, then kill and reap the `sleep` inits the stand-in started."""
    pids = []
    for daemon in daemons:
        for pid_file in daemon.runc_root.glob("*/pid"):
            try:
                pids.append(int(pid_file.read_text()))
            except (OSError, ValueError):
                continue
        await stop_daemon(daemon)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            continue


async def measure_runc(args: argparse.Namespace, work: Path) -> tuple[list[list[float]], list[list[float]]]:
    """--exec --runc: AddProcess per tree and runc exec itself, step by step in one loop."""
    become_child_subreaper()  # `runc exec -d`'s `true` comes to us
    bundle = make_bundle(work)
    daemons: list[DaemonHandle] = []
    try:
        for index, tree in enumerate(args.trees):
            daemons.append(await start_in(tree, work / f"state{index}", None, args.concurrency))
        servers = [daemon_pids(daemon.pid)[-1] for daemon in daemons]
        ids = [f"x{os.getpid()}-{index}" for index in range(len(daemons))]
        for daemon, id in zip(daemons, ids, strict=True):
            await daemon_client_create(daemon, id, bundle)
        spec_file = work / "exec.json"
        process = json.loads((bundle / "config.json").read_text())["process"]
        spec_file.write_text(json.dumps({**process, "args": ["true"], "terminal": False}))
        runc = ["runc", "--root", str(daemons[0].runc_root)]
        detached = [*runc, "exec", "-d", "--process", str(spec_file), "--pid-file", str(work / "pid"), ids[0]]
        attached = [*runc, "exec", ids[0], "true"]
        cpu: list[list[float]] = [[] for _ in daemons]
        walls: list[list[float]] = [[] for _ in range(len(daemons) + 2)]
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client.connect(d.address)) for d in daemons]
            for round_number in range(args.rounds + 1):  # the first round warms up, unmeasured
                before = [threads_cpu_s(server) for server in servers]
                for step in range(args.n):
                    order = list(range(len(daemons)))
                    if step % 2:
                        order.reverse()
                    for index in order:
                        began = time.perf_counter()
                        await clients[index].add_process(ids[index], ["true"])
                        walls[index].append((time.perf_counter() - began) * 1000)
                    for slot, argv in ((len(daemons), detached), (len(daemons) + 1, attached)):
                        began = time.perf_counter()
                        result = await spawn.run(argv, timeout=30)
                        walls[slot].append((time.perf_counter() - began) * 1000)
                        if result.returncode != 0:
                            raise RuntimeError(f"{argv} exited with {result.returncode}")
                        if argv is detached:
                            with contextlib.suppress(ChildProcessError):
                                os.waitpid(int((work / "pid").read_text()), 0)
                if round_number == 0:
                    for wall in walls:
                        wall.clear()
                    continue
                for index, server in enumerate(servers):
                    cpu[index].append((threads_cpu_s(server) - before[index]) / args.n * 1000)
                progress(f"round {round_number}/{args.rounds} done")
        return cpu, walls
    finally:
        with trio.CancelScope(shield=True):
            for daemon in daemons:
                await stop_daemon(daemon)
                for error in await empty_runc_root(daemon.runc_root):
                    print(f"cleanup: {error}", file=sys.stderr)


def report(args: argparse.Namespace, per_start: list[list[float]], walls: list[list[float]]) -> None:
    what = "exec (sequential AddProcess true)" if args.exec else f"start, -c {args.concurrency}"
    runtime = "runc" if args.runc else "fake runc"
    print(f"API server CPU per {what} (ms), {runtime}, {args.rounds} x {args.n}")
    for tree, values, wall in zip(args.trees, per_start, walls[: len(per_start)], strict=True):
        rounds = " ".join(f"{value:.3f}" for value in values)
        print(f"  {tree}: median {statistics.median(values):.3f}  (rounds {rounds})")
        if wall:
            print(f"    AddProcess wall median {statistics.median(wall):.2f} ms (of {len(wall)})")
    if len(walls) == len(per_start) + 2:
        for label, wall in zip(("runc exec -d --process", "runc exec ID true"), walls[-2:], strict=True):
            print(f"  {label}: wall median {statistics.median(wall):.2f} ms (of {len(wall)})")
    if len(per_start) == 2:
        ratios = [second / first for first, second in zip(*per_start, strict=True)]
        listed = " ".join(f"{ratio:.2f}" for ratio in ratios)
        print(f"  second / first, round by round: median {statistics.median(ratios):.3f}  ({listed})")
        if all(walls[:2]):
            wall_ratio = statistics.median(walls[1]) / statistics.median(walls[0])
            print(f"  AddProcess wall second / first: {wall_ratio:.3f}")
        if args.runc:  # both trees' execs of one step ran back to back: their difference is paired
            steps = [second - first for first, second in zip(walls[0], walls[1], strict=True)]
            print(
                f"  AddProcess wall second - first, step by step: median {statistics.median(steps):+.2f} ms"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="daemon-cost-", dir=args.workdir or default_workdir()))
    try:
        per_start, walls = trio.run(measure_runc if args.runc else measure, args, work)
    finally:
        remove_workdir(work, keep_logs=False)
    report(args, per_start, walls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
