#!/usr/bin/env python3
"""Measure ``actr`` as a person or a script feels it: whole-command wall time, beside runc's own.

    .venv/bin/python scripts/bench_cli.py [--containers 0 1000] [-n 15]

It starts a private daemon (the tests' launcher, tests/support/daemon.py) with one container,
``bench``, and for each ``--containers N`` first starts N more (all running ``sleep``). Then it
times, as separate processes, each command against its reference, in turn (A B A B ...), so that
a drift of the machine's speed weighs on both alike:

  * ``actr --version``                        against ``python -c pass`` (the same interpreter);
  * ``actr containers``                       against ``runc list`` on the daemon's runc root;
  * ``actr containers state bench``           against ``runc state bench``;
  * ``actr containers exec --id bench -a -- true`` against ``runc exec bench true``.

It prints one table: the median wall time of each (after one warm-up run), the ratio of the
medians, and the median CPU time (user + system) of each command's own process tree, which a
loaded machine disturbs less than the wall time. actr's CPU does not include the daemon's (for
exec, the daemon runs runc), while runc's includes the process it runs. Output goes to /dev/null
(so actr prints plain text, as to any pipe) and stdin is /dev/null. This is a benchmark, not a
test: it judges nothing, and the machine's load shows in its numbers.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

SCRIPTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS_DIR.parent))
sys.path.insert(0, str(SCRIPTS_DIR))

import benchlib  # noqa: E402
from benchlib import empty_runc_root, make_bundle, sweep_leftovers  # noqa: E402
from support.daemon import DaemonHandle, start_daemon, stop_daemon  # noqa: E402

from containerd_actors.client import Client  # noqa: E402
from containerd_actors.host.reaping import become_child_subreaper  # noqa: E402

#: Container ids carry this run's pid: runc names a container's cgroups after its id, and cgroups
#: are machine-wide (another run's ``bench`` would share them, and a delete kills what is in them).
TARGET_ID = f"bench-{os.getpid()}"
#: Containers started at once while filling up to N: the daemon's -c limits runc runs anyway.
START_CONCURRENCY = 16
#: The issue's targets, shown beside the figures: one-shot p50 in ms, exec as a ratio to runc exec.
ONE_SHOT_TARGET_MS = 60.0
EXEC_TARGET_RATIO = 2.0


@attrs.frozen
class Pair:
    """One line of the table: ``actr`` and what it is compared with."""

    label: str
    actr: list[str]
    reference_label: str
    reference: list[str]


@attrs.frozen
class Timing:
    """Medians of one command's runs, in milliseconds, and the runs that failed (they count too)."""

    wall_ms: float
    cpu_ms: float
    failures: tuple[str, ...] = ()


#: One run: wall ms, CPU ms, and what went wrong if it exited non-zero.
Run = tuple[float, float, str | None]


@attrs.frozen
class Row:
    containers: int
    pair: Pair
    actr: Timing
    reference: Timing

    @property
    def ratio(self) -> float:
        return self.actr.wall_ms / self.reference.wall_ms


def actr_argv() -> list[str]:
    """The installed ``actr`` script of this interpreter's environment, else ``python -m ctl``."""
    script = Path(sys.executable).with_name("actr")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ctl"]


def compile_sources() -> list[str]:
    """Write the .pyc files of the packages actr imports, as installing a package does (and the
    cache of the wire types' attrs methods, ``protocol.attrs_code``).

    A checkout has none where PYTHONDONTWRITEBYTECODE is set (as on these machines), and then
    every run would compile each module again: tens of milliseconds that no installed actr pays.
    The packages are looked up the way actr finds them (same interpreter and environment, not
    this checkout's directory), so ``PYTHONPATH=OTHER_TREE`` measures that tree.
    """
    where = subprocess.run(
        [sys.executable, "-c", "import ctl, containerd_actors, os; print(os.path.dirname(ctl.__file__));"
         "print(os.path.dirname(containerd_actors.__file__))"],
        cwd="/", capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    subprocess.run([sys.executable, "-m", "compileall", "-q", *where], cwd="/", check=True)
    # And the bytecode of the methods attrs generates for the wire types, which setup writes too.
    client = ["containerd_actors.client.blocking", "ctl.attach_blocking"]  # as scripts/setup does
    write_cache = [sys.executable, "-m", "containerd_actors.protocol.attrs_code", *client]
    subprocess.run(write_cache, cwd="/", check=False)  # a tree from before protocol.attrs_code has none
    return where


def pairs(daemon: DaemonHandle, target: str = TARGET_ID) -> list[Pair]:
    """``target``: the container that state and exec name (``bench_trees`` runs one per daemon)."""
    actr = [*actr_argv(), "--address", daemon.address]
    runc = ["runc", "--root", str(daemon.runc_root)]
    return [
        Pair("actr --version", [*actr_argv(), "--version"], "python -c pass", [sys.executable, "-c", "pass"]),
        Pair("actr containers", [*actr, "containers"], "runc list", [*runc, "list"]),
        Pair(
            f"actr containers state {target}",
            [*actr, "containers", "state", target],
            f"runc state {target}",
            [*runc, "state", target],
        ),
        Pair(
            f"actr containers exec --id {target} -a -- true",
            [*actr, "containers", "exec", "--id", target, "-a", "--", "true"],
            f"runc exec {target} true",
            [*runc, "exec", target, "true"],
        ),
    ]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(argv: Sequence[str]) -> Run:
    """One run's wall and CPU time (ms), the CPU of the process and the children it waited for,
    and what went wrong if it exited non-zero (the run is a sample all the same).

    ``subprocess.run`` without a timeout waits in ``waitpid``, not a poll; no other child of this
    process ends meanwhile (trio idles while this runs in a thread), so the growth of
    ``RUSAGE_CHILDREN`` is this run's.
    """
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    wall = (time.perf_counter() - started) * 1000
    cpu = (_children_cpu_s() - cpu_before) * 1000
    failure = None
    if result.returncode != 0:
        failure = f"exit {result.returncode} {result.stderr.decode(errors='replace').strip()[:200]}".strip()
    return wall, cpu, failure


def _timing(samples: list[Run], warm_up: Run) -> Timing:
    """Medians of the counted runs; failures of all of them, the warm-up's included."""
    failures = [f"warm-up: {warm_up[2]}"] if warm_up[2] is not None else []
    failures += [failure for _, _, failure in samples if failure is not None]
    return Timing(
        statistics.median(wall for wall, _, _ in samples),
        statistics.median(cpu for _, cpu, _ in samples),
        tuple(failures),
    )


def measure(pair: Pair, runs: int) -> tuple[Timing, Timing]:
    """Medians of ``runs`` runs of each command, in turn, after one warm-up run of each."""
    warm_actr, warm_reference = run_once(pair.actr), run_once(pair.reference)
    actr, reference = [], []
    for _ in range(runs):
        actr.append(run_once(pair.actr))
        reference.append(run_once(pair.reference))
    return _timing(actr, warm_actr), _timing(reference, warm_reference)


async def fill_up(client: Client, bundle: Path, running: int, wanted: int, prefix: str = "fill") -> int:
    """Start containers ``<prefix>-<i>`` until ``wanted`` run besides the target; returns how many run."""
    limiter = trio.CapacityLimiter(START_CONCURRENCY)

    async def one(index: int) -> None:
        async with limiter:
            await client.create_container(f"{prefix}-{index}", str(bundle))

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(running, wanted):
            nursery.start_soon(one, index)
    if wanted > running:
        print(f"started {wanted - running} containers in {time.perf_counter() - started:.1f} s", flush=True)
    return max(running, wanted)


def target_note(row: Row) -> str:
    if row.pair.label.startswith("actr --version"):
        return ""
    if " exec " in row.pair.label:
        met = row.ratio <= EXEC_TARGET_RATIO
        return f"target <= {EXEC_TARGET_RATIO:g}x: {'met' if met else 'missed'}"
    met = row.actr.wall_ms <= ONE_SHOT_TARGET_MS
    return f"target p50 <= {ONE_SHOT_TARGET_MS:g} ms: {'met' if met else 'missed'}"


def print_table(rows: Sequence[Row], runs: int) -> None:
    header = ("containers", "command", "wall p50", "reference", "wall p50", "ratio", "cpu p50", "ref cpu", "")
    lines = [
        (
            str(row.containers),
            row.pair.label,
            f"{row.actr.wall_ms:.1f} ms",
            row.pair.reference_label,
            f"{row.reference.wall_ms:.1f} ms",
            f"{row.ratio:.2f}x",
            f"{row.actr.cpu_ms:.0f} ms",
            f"{row.reference.cpu_ms:.0f} ms",
            target_note(row),
        )
        for row in rows
    ]
    print(f"\nmedians of {runs} runs each, after one warm-up; the two commands of a line in turn")
    benchlib.print_columns(header, lines, right={2, 4, 5, 6, 7})
    for row in rows:
        for label, timing in ((row.pair.label, row.actr), (row.pair.reference_label, row.reference)):
            if timing.failures:
                print(f"{row.containers} containers: {label}: {len(timing.failures)} run(s) failed:")
                for failure in timing.failures:
                    print(f"    {failure}")


async def run(counts: Sequence[int], runs: int, top: Path, daemons: list[DaemonHandle]) -> list[Row]:
    daemon = await start_daemon(top / "state", log_path=top / "daemon.log", debug=False, own_session=True)
    daemons.append(daemon)
    try:
        bundle = make_bundle(top)
        rows: list[Row] = []
        async with Client.connect(daemon.address) as client:
            await client.create_container(TARGET_ID, str(bundle))
            running = 0
            for count in sorted(counts):
                running = await fill_up(client, bundle, running, count, prefix=f"fill-{os.getpid()}")
                for pair in pairs(daemon):
                    actr, reference = await trio.to_thread.run_sync(measure, pair, runs)
                    rows.append(Row(count, pair, actr, reference))
                    print(f"  {count} containers: {pair.label}: {actr.wall_ms:.1f} ms", flush=True)
        return rows
    finally:
        with trio.CancelScope(shield=True):
            await stop_daemon(daemon)
            errors = await empty_runc_root(daemon.runc_root)
            for error in errors:
                print(f"cleanup: {error}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--containers",
        type=int,
        nargs="+",
        default=[0, 1000],
        metavar="N",
        help="containers running besides the target, one table section each (default: 0 1000)",
    )
    parser.add_argument("-n", "--runs", type=int, default=15, help="timed runs of each command (default 15)")
    args = parser.parse_args(argv)
    if shutil.which("runc") is None:
        print("bench_cli: runc is not on PATH", file=sys.stderr)
        return 2
    print(f"compiled {' and '.join(compile_sources())}", flush=True)
    # Container inits outlive the daemon we stop; as their subreaper we reap them after deleting them.
    become_child_subreaper()
    top = Path(tempfile.mkdtemp(prefix="bench-cli-", dir="/tmp"))
    daemons: list[DaemonHandle] = []
    try:
        rows = trio.run(run, args.containers, args.runs, top, daemons)
    finally:
        for problem in sweep_leftovers(daemons, [top / "state" / "runc"]):
            print(f"cleanup: {problem}", file=sys.stderr)
        shutil.rmtree(top, ignore_errors=True)
    print_table(rows, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
