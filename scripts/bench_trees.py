#!/usr/bin/env python3
"""Compare ``actr`` of several source trees, interleaved run by run, against one daemon.

    git archive REV containerd_actors ctl | tar -x -C /tmp/before     # a tree per revision
    .venv/bin/python scripts/bench_trees.py /tmp/before . [--containers 0 1000] [-n 15]

Why beside ``bench_cli.py``: on a shared machine, two runs of bench_cli a minute apart see
different loads, and a change of a few milliseconds drowns in that. Here each round runs every
tree's command once, then the reference (runc), so the trees share the machine's drift; the
medians of wall and CPU time per tree are comparable to each other. Each tree is put first on
PYTHONPATH of the installed ``actr`` (as ``bench_cli.py`` does) and compiled first, as installing
would.

The daemon is this checkout's (``python -m`` puts the working directory first on the path), so
by default only the trees' clients differ. With ``--daemon-per-tree`` each tree gets a daemon of
its own code (started in that tree, with it on PYTHONPATH, and N containers of its own) and each
tree's actr talks to its own daemon: that compares daemon changes too. Which code each daemon
imports is printed. Ids carry this run's pid: runc names cgroups after ids, machine-wide.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pynng
import trio

SCRIPTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS_DIR.parent))
sys.path.insert(0, str(SCRIPTS_DIR))

import bench_cli  # noqa: E402
from benchlib import daemon_cpu_times, empty_runc_root, make_bundle, sweep_leftovers  # noqa: E402
from support.daemon import DaemonHandle, start_daemon, stop_daemon  # noqa: E402

from containerd_actors import protocol as wire  # noqa: E402
from containerd_actors.client import Client  # noqa: E402
from containerd_actors.host.reaping import become_child_subreaper  # noqa: E402


def _with_tree(tree: str | None) -> None:
    if tree is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = tree


def measure(
    pairs: Sequence[bench_cli.Pair], trees: Sequence[str], runs: int
) -> tuple[list[list[bench_cli.Run]], list[bench_cli.Run]]:
    """``runs`` rounds (after a warm-up of each): every tree's command (``pairs[i]`` for tree i),
    then the reference (the first pair's)."""
    for tree, pair in zip(trees, pairs, strict=True):
        _with_tree(tree)
        bench_cli.run_once(pair.actr)
    samples: list[list[bench_cli.Run]] = [[] for _ in trees]
    reference: list[bench_cli.Run] = []
    for _ in range(runs):
        for index, tree in enumerate(trees):
            _with_tree(tree)
            samples[index].append(bench_cli.run_once(pairs[index].actr))
        _with_tree(None)
        reference.append(bench_cli.run_once(pairs[0].reference))
    return samples, reference


#: State requests per daemon for the round-trip line: CPU is read from /proc in 10 ms ticks, so
#: it is averaged over all of them rather than taken per request.
STATE_REQUESTS = 60


def state_round_trips(daemons: Sequence[DaemonHandle]) -> list[tuple[float, float]]:
    """Per daemon: the median wall time (ms) of a State of every container, raw bytes in and out
    (no client decoding), and the daemon's mean CPU (ms) per State; the daemons asked in turn."""
    walls: list[list[float]] = [[] for _ in daemons]
    cpu_s = [0.0] * len(daemons)
    sockets = [pynng.Req0(dial=daemon.address, recv_max_size=0) for daemon in daemons]
    try:
        for n in range(STATE_REQUESTS):
            for index, (daemon, sock) in enumerate(zip(daemons, sockets, strict=True)):
                request = wire.encode_request(wire.State(request_id=f"bench-{n}"))
                before = daemon_cpu_times(daemon.process.pid).own_s
                started = time.perf_counter()
                sock.send(request)
                sock.recv()
                walls[index].append((time.perf_counter() - started) * 1000)
                cpu_s[index] += daemon_cpu_times(daemon.process.pid).own_s - before
    finally:
        for sock in sockets:
            sock.close()
    return [(statistics.median(w), c * 1000 / STATE_REQUESTS) for w, c in zip(walls, cpu_s, strict=True)]


def imported_from(tree: str) -> str:
    """Where ``python -m`` started in ``tree`` with it on PYTHONPATH finds containerd_actors: ``-c``
    puts the working directory first on the path as ``-m`` does."""
    find = [sys.executable, "-c", "import containerd_actors; print(containerd_actors.__file__)"]
    found = subprocess.run(
        find, cwd=tree, env=dict(os.environ, PYTHONPATH=tree), capture_output=True, text=True, check=True
    )
    return found.stdout.strip()


def daemon_cwd(daemon: DaemonHandle) -> str:
    return os.readlink(f"/proc/{daemon.process.pid}/cwd")


async def run(
    trees: Sequence[str],
    counts: Sequence[int],
    runs: int,
    top: Path,
    daemons: list[DaemonHandle],
    per_tree: bool = False,
) -> None:
    tag = f"bt{os.getpid()}"
    daemon_trees: list[str | None] = list(trees) if per_tree else [None]
    try:
        for index, tree in enumerate(daemon_trees):
            prefix = () if tree is None else ("env", "-C", tree, f"PYTHONPATH={tree}")
            state = top / f"state{index}"
            daemon = await start_daemon(
                state, log_path=top / f"daemon{index}.log", debug=False, own_session=True, prefix=prefix
            )
            daemons.append(daemon)
            if tree is not None:
                print(f"daemon of {tree}: pid {daemon.process.pid}, cwd {daemon_cwd(daemon)}, "
                      f"imports {imported_from(tree)}", flush=True)  # fmt: skip
        bundle = make_bundle(top)
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client.connect(d.address)) for d in daemons]
            targets = [f"{tag}-{index}-target" for index in range(len(daemons))]
            for client, target in zip(clients, targets, strict=True):
                await client.create_container(target, str(bundle))
            running = [0] * len(daemons)
            print(f"medians of {runs} rounds; each round: every tree, then the reference")
            for count in sorted(counts):
                for index, client in enumerate(clients):
                    running[index] = await bench_cli.fill_up(
                        client, bundle, running[index], count, prefix=f"{tag}-{index}-fill"
                    )
                # not --version: it reaches no daemon
                by_daemon = [
                    bench_cli.pairs(d, target)[1:] for d, target in zip(daemons, targets, strict=True)
                ]
                for row in range(len(by_daemon[0])):
                    pairs = [by_daemon[index if per_tree else 0][row] for index in range(len(trees))]
                    pair = pairs[0]
                    samples, reference = await trio.to_thread.run_sync(measure, pairs, trees, runs)
                    ref_wall = statistics.median(wall for wall, _, _ in reference)
                    for tree, runs_of_tree in zip(trees, samples, strict=True):
                        wall = statistics.median(wall for wall, _, _ in runs_of_tree)
                        cpu = statistics.median(cpu for _, cpu, _ in runs_of_tree)
                        failed = sum(failure is not None for _, _, failure in runs_of_tree)
                        note = f"  {failed} run(s) failed" if failed else ""
                        line = f"{count:>5}  {pair.label:<44}  {tree:<24}  wall {wall:6.1f} ms"
                        line += f"  cpu {cpu:5.0f} ms  {pair.reference_label} {ref_wall:5.1f} ms"
                        print(f"{line}  ratio {wall / ref_wall:5.2f}x{note}", flush=True)
                if per_tree:
                    trips = await trio.to_thread.run_sync(state_round_trips, daemons)
                    for tree, (wall, cpu) in zip(trees, trips, strict=True):
                        label = "State reply, raw round trip"
                        line = f"{count:>5}  {label:<44}  {tree:<24}  wall {wall:6.1f} ms"
                        print(
                            f"{line}  daemon cpu {cpu:5.2f} ms/State (mean of {STATE_REQUESTS})", flush=True
                        )
    finally:
        with trio.CancelScope(shield=True):
            for daemon in daemons:
                await stop_daemon(daemon)
                for error in await empty_runc_root(daemon.runc_root):
                    print(f"cleanup: {error}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="directories holding containerd_actors/ and ctl/")
    parser.add_argument("--containers", type=int, nargs="+", default=[0], metavar="N")
    parser.add_argument("-n", "--runs", type=int, default=15)
    parser.add_argument(
        "--daemon-per-tree", action="store_true", help="each tree's actr against a daemon of that tree"
    )
    args = parser.parse_args(argv)
    trees = [str(Path(tree).resolve()) for tree in args.trees]
    for tree in trees:
        _with_tree(tree)
        bench_cli.compile_sources()
    _with_tree(None)
    become_child_subreaper()
    top = Path(tempfile.mkdtemp(prefix="bench-trees-", dir="/tmp"))
    daemons: list[DaemonHandle] = []
    try:
        trio.run(run, trees, args.containers, args.runs, top, daemons, args.daemon_per_tree)
    finally:
        for problem in sweep_leftovers(daemons, [daemon.runc_root for daemon in daemons]):
            print(f"cleanup: {problem}", file=sys.stderr)
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
