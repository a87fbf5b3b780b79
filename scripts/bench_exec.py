#!/usr/bin/env python3
"""Measure stdio through the daemon against ``runc exec`` piping the same bytes, side by side.

    .venv/bin/python scripts/bench_exec.py [--bytes 1G] [-n 3] [--latency-runs 15]

It starts a private daemon (the tests' launcher) with one container, then times, as separate
processes and in turn (A B A B ...), each ``actr`` command against its reference:

  * latency: ``actr containers exec --id X -a -- true``   against ``runc exec X true``;
  * in and out: ``exec -a -- cat`` with stdin a file of N random bytes, stdout a file;
                against ``runc exec X cat`` with the same stdin and stdout;
  * in only: ``exec -a -- md5sum`` of the same stdin           against ``runc exec X md5sum``;
  * out only: ``exec -a -- head -c N /dev/zero``           against ``runc exec X head -c N /dev/zero``;
  * logs: ``actr containers logs`` of a process that wrote the N random bytes (``cat`` of a file
          bind-mounted into the container) against ``runc exec X head -c M FILE``, M being what
          the logs still hold (they keep two generations of 64 MiB, so at most 128 MiB of N).

Every run's output goes to a file on /dev/shm, whose sha256 is compared with the expected one
after the run (outside the timing): a mismatch is reported as a failure. It prints one table:
the median wall time of each side, their ratio, the rate, and the median CPU of each command's
own process tree (actr's excludes the daemon's, which is shown in its own column: the daemon's
CPU during the actr runs, per run). A benchmark, not a test: it judges nothing, and a loaded
machine shows in its numbers; only the ratio of medians measured in the same run means much.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import trio

SCRIPTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS_DIR.parent))
sys.path.insert(0, str(SCRIPTS_DIR))

import benchlib  # noqa: E402
from bench_cli import actr_argv, compile_sources  # noqa: E402
from benchlib import daemon_cpu_times, empty_runc_root, make_bundle, sweep_leftovers  # noqa: E402
from support.daemon import DaemonHandle, start_daemon, stop_daemon  # noqa: E402

from containerd_actors.client import Client  # noqa: E402
from containerd_actors.host.reaping import become_child_subreaper  # noqa: E402
from containerd_actors.protocol import EventType  # noqa: E402

#: Where the container sees the host's data directory (a read-only bind mount).
DATA_MOUNT = "/data"
#: The issue's target: each stream within this many times the time of runc exec.
TARGET_RATIO = 1.5
_HASH_CHUNK = 8 << 20


@attrs.frozen
class Command:
    """One side of a line: what runs, its stdin, and the sha256 its stdout must have."""

    argv: list[str]
    stdin: Path | None
    expected_sha: str | None


@attrs.frozen
class Pair:
    label: str
    actr: Command
    reference_label: str
    reference: Command
    size: int


@attrs.frozen
class Timing:
    wall_s: float
    cpu_s: float
    daemon_cpu_s: float
    failures: tuple[str, ...] = ()


@attrs.frozen
class Row:
    pair: Pair
    actr: Timing
    reference: Timing

    @property
    def ratio(self) -> float:
        return self.actr.wall_s / self.reference.wall_s


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of_zeros(size: int) -> str:
    digest, zeros = hashlib.sha256(), bytes(_HASH_CHUNK)
    while size > 0:
        digest.update(zeros[: min(size, _HASH_CHUNK)])
        size -= _HASH_CHUNK
    return digest.hexdigest()


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            chunk = os.urandom(min(left, _HASH_CHUNK))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(command: Command, out_path: Path, daemon_pid: int) -> tuple[float, float, float, str | None]:
    """Wall, own CPU and daemon CPU (s) of one run, and what went wrong (exit code or sha256)."""
    import subprocess

    stdin = open(command.stdin, "rb") if command.stdin else open(os.devnull, "rb")  # noqa: SIM115
    with stdin, open(out_path, "wb") as out:
        daemon_before = daemon_cpu_times(daemon_pid).own_s
        cpu_before = _children_cpu_s()
        started = time.perf_counter()
        result = subprocess.run(command.argv, stdin=stdin, stdout=out, stderr=subprocess.PIPE, check=False)
        wall = time.perf_counter() - started
        cpu = _children_cpu_s() - cpu_before
        daemon_cpu = daemon_cpu_times(daemon_pid).own_s - daemon_before
    failure = None
    if result.returncode != 0:
        failure = f"exit {result.returncode} {result.stderr.decode(errors='replace').strip()[:200]}"
    elif command.expected_sha is not None:
        got = sha256_of(out_path)
        if got != command.expected_sha:
            failure = (
                f"sha256 {got[:16]}... (size {out_path.stat().st_size}) != {command.expected_sha[:16]}..."
                f" {result.stderr.decode(errors='replace').strip()[:200]}"
            )
    out_path.unlink(missing_ok=True)
    return wall, cpu, daemon_cpu, failure


def _timing(samples: list[tuple[float, float, float, str | None]]) -> Timing:
    return Timing(
        statistics.median(s[0] for s in samples),
        statistics.median(s[1] for s in samples),
        statistics.median(s[2] for s in samples),
        tuple(s[3] for s in samples if s[3] is not None),
    )


def measure(pair: Pair, runs: int, out_path: Path, daemon_pid: int) -> Row:
    """``runs`` runs of each side in turn, after one warm-up of each (not counted, but checked)."""
    actr, reference = [], []
    warm_actr = run_once(pair.actr, out_path, daemon_pid)
    warm_reference = run_once(pair.reference, out_path, daemon_pid)
    for _ in range(runs):
        actr.append(run_once(pair.actr, out_path, daemon_pid))
        reference.append(run_once(pair.reference, out_path, daemon_pid))
    failures = [("warm-up", warm) for warm in (warm_actr, warm_reference) if warm[3] is not None]
    for label, warm in failures:
        print(f"  {pair.label}: {label} failed: {warm[3]}", flush=True)
    return Row(pair, _timing(actr), _timing(reference))


def bind_data(bundle: Path, data: Path) -> None:
    """Mount the host's ``data`` read-only at /data in the bundle's containers."""
    (bundle / "rootfs" / DATA_MOUNT.lstrip("/")).mkdir(exist_ok=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["mounts"].append(
        {"destination": DATA_MOUNT, "type": "bind", "source": str(data), "options": ["rbind", "ro"]}
    )
    config_path.write_text(json.dumps(config, indent=2))


async def wrote_everything(client: Client, id: str, argv: list[str]) -> int:
    """Exec ``argv`` detached and wait for its exit: its output is then all in the logs."""
    async with client.subscribe() as events:
        pid = await client.add_process(id, argv)
        async for event in events:
            if event.type == EventType.EXIT and event.pid == pid:
                return pid
    raise RuntimeError("the event stream ended")


async def logs_window(client: Client, id: str, pid: int) -> tuple[int, int]:
    """(first offset, size) of the stdout the logs still hold."""
    reply = await client.read_output(id, pid, max_bytes=1)
    end = reply.stdout_offset
    while True:
        last = await client.read_output(id, pid, stdout_offset=end, max_bytes=1 << 20)
        if not last.next_stdout_offset > last.stdout_offset:
            return reply.stdout_offset, end - reply.stdout_offset
        end = last.next_stdout_offset


def pairs(daemon: DaemonHandle, id: str, size: int, blob: Path, blob_sha: str) -> list[Pair]:
    actr = [*actr_argv(), "--address", daemon.address, "containers"]
    runc = ["runc", "--root", str(daemon.runc_root), "exec", id]
    zeros = sha256_of_zeros(size)
    md5_line = hashlib.sha256(f"{md5_of(blob)}  -\n".encode()).hexdigest()
    return [
        Pair(
            "exec -a -- true",
            Command([*actr, "exec", "--id", id, "-a", "--", "true"], None, None),
            "runc exec true",
            Command([*runc, "true"], None, None),
            0,
        ),
        Pair(
            "exec -a -- cat (in and out)",
            Command([*actr, "exec", "--id", id, "-a", "--", "cat"], blob, blob_sha),
            "runc exec cat",
            Command([*runc, "cat"], blob, blob_sha),
            size,
        ),
        Pair(
            "exec -a -- md5sum (in only)",
            Command([*actr, "exec", "--id", id, "-a", "--", "md5sum"], blob, md5_line),
            "runc exec md5sum",
            Command([*runc, "md5sum"], blob, md5_line),
            size,
        ),
        Pair(
            f"exec -a -- head -c {size} /dev/zero",
            Command(
                [*actr, "exec", "--id", id, "-a", "--", "head", "-c", str(size), "/dev/zero"], None, zeros
            ),
            "runc exec head",
            Command([*runc, "head", "-c", str(size), "/dev/zero"], None, zeros),
            size,
        ),
    ]


async def logs_pair(daemon: DaemonHandle, client: Client, id: str, blob: Path, data: Path) -> Pair:
    """``logs`` of a process that wrote the blob, against runc exec piping what the logs hold."""
    pid = await wrote_everything(client, id, ["cat", f"{DATA_MOUNT}/{blob.name}"])
    start, held = await logs_window(client, id, pid)
    tail = data / "held"
    with open(blob, "rb") as source, open(tail, "wb") as target:
        source.seek(start)
        shutil.copyfileobj(source, target, _HASH_CHUNK)
    tail_sha = sha256_of(tail)
    actr = [*actr_argv(), "--address", daemon.address, "containers"]
    runc = ["runc", "--root", str(daemon.runc_root), "exec", id]
    return Pair(
        f"logs (the last {held >> 20} MiB held)",
        Command([*actr, "logs", "--pid", str(pid), id], None, tail_sha),
        "runc exec cat",
        Command([*runc, "cat", f"{DATA_MOUNT}/held"], None, tail_sha),
        held,
    )


def print_table(rows: Sequence[Row], runs: int, latency_runs: int) -> None:
    header = ("actr", "wall p50", "reference", "wall p50", "ratio", "rate", "cpu", "daemon", "ref cpu", "")
    lines = []
    for row in rows:
        rate = f"{row.pair.size / row.actr.wall_s / (1 << 20):.0f} MiB/s" if row.pair.size else ""
        note = (
            f"<= {TARGET_RATIO:g}x: {'met' if row.ratio <= TARGET_RATIO else 'missed'}"
            if row.pair.size
            else ""
        )
        lines.append(
            (
                row.pair.label,
                f"{row.actr.wall_s * 1000:.0f} ms",
                row.pair.reference_label,
                f"{row.reference.wall_s * 1000:.0f} ms",
                f"{row.ratio:.2f}x",
                rate,
                f"{row.actr.cpu_s:.2f} s",
                f"{row.actr.daemon_cpu_s:.2f} s",
                f"{row.reference.cpu_s:.2f} s",
                note,
            )
        )
    print(
        f"\nmedians of {latency_runs} (latency) or {runs} (throughput) runs each, after one warm-up, in turn;"
        " cpu: actr's process tree; daemon: the daemon's own CPU during an actr run"
    )
    benchlib.print_columns(header, lines, right={1, 3, 4, 5, 6, 7, 8})
    for row in rows:
        for label, timing in ((row.pair.label, row.actr), (row.pair.reference_label, row.reference)):
            for failure in timing.failures:
                print(f"FAILED {label}: {failure}")


async def run(
    size: int, runs: int, latency_runs: int, top: Path, data: Path, daemons: list[DaemonHandle], only: str
) -> list[Row]:
    blob = data / "blob"
    blob_sha = write_random(blob, size)
    daemon = await start_daemon(top / "state", log_path=top / "daemon.log", debug=False, own_session=True)
    daemons.append(daemon)
    id = f"bench-exec-{os.getpid()}"
    out_path = data / "out"
    try:
        bundle = make_bundle(top)
        bind_data(bundle, data)
        rows: list[Row] = []
        async with Client.connect(daemon.address) as client:
            await client.create_container(id, str(bundle))
            chosen = pairs(daemon, id, size, blob, blob_sha)
            if "logs" in only:
                chosen.append(await logs_pair(daemon, client, id, blob, data))
            for pair in chosen:
                if not any(word in pair.label for word in only):
                    continue
                count = latency_runs if pair.size == 0 else runs
                measure_one: Callable[[], Row] = lambda p=pair, n=count: measure(p, n, out_path, daemon.pid)  # noqa: E731
                row = await trio.to_thread.run_sync(measure_one)
                rows.append(row)
                print(f"  {pair.label}: {row.actr.wall_s * 1000:.0f} ms, ratio {row.ratio:.2f}x", flush=True)
        return rows
    finally:
        with trio.CancelScope(shield=True):
            await stop_daemon(daemon)
            for error in await empty_runc_root(daemon.runc_root):
                print(f"cleanup: {error}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bytes", type=parse_size, default=1 << 30, help="stream size (e.g. 64M; default 1G)"
    )
    parser.add_argument("-n", "--runs", type=int, default=3, help="timed runs of each stream (default 3)")
    parser.add_argument("--latency-runs", type=int, default=15, help="timed runs of exec -a -- true")
    parser.add_argument(
        "--only",
        nargs="+",
        default=["true", "cat", "md5sum", "head", "logs"],
        help="lines to run: true cat md5sum head logs",
    )
    args = parser.parse_args(argv)
    if shutil.which("runc") is None:
        print("bench_exec: runc is not on PATH", file=sys.stderr)
        return 2
    print(f"compiled {' and '.join(compile_sources())}", flush=True)
    become_child_subreaper()
    top = Path(tempfile.mkdtemp(prefix="bench-exec-", dir="/tmp"))
    data = Path(tempfile.mkdtemp(prefix="bench-exec-", dir="/dev/shm"))
    daemons: list[DaemonHandle] = []
    try:
        rows = trio.run(run, args.bytes, args.runs, args.latency_runs, top, data, daemons, args.only)
    finally:
        for problem in sweep_leftovers(daemons, [top / "state" / "runc"]):
            print(f"cleanup: {problem}", file=sys.stderr)
        shutil.rmtree(top, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    print_table(rows, args.runs, args.latency_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
