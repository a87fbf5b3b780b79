#!/usr/bin/env python3
"""Measure exec and attach: exec latency, attach throughput and log (drain) throughput.

    .venv/bin/python scripts/bench_exec.py [-n 100] [--megabytes 50]

It starts a private daemon and one container, then:
  * exec latency: ``AddProcess`` of ``true`` N times in a row (request to reply, i.e. runc exec -d);
  * drain throughput: a process writes M MB of random bytes (prepared in /dev/shm first) with nobody
    attached; the time from its start to its exit event is the daemon draining it into the log;
  * log read throughput: reading those M MB back through ReadOutput;
  * attach throughput: ``follow_output`` of a process writing M MB, as ``exec -a`` does.
Byte counts and md5 sums are checked for the last two.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import trio

SCRIPTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS_DIR.parent))
sys.path.insert(0, str(SCRIPTS_DIR))

from benchlib import empty_runc_root, make_bundle, percentile  # noqa: E402
from support.daemon import start_daemon, stop_daemon  # noqa: E402

from containerd_actors.client import Client  # noqa: E402
from containerd_actors.protocol import EventType  # noqa: E402


async def run(count: int, megabytes: int) -> None:
    top = Path(tempfile.mkdtemp(prefix="bench-exec-", dir="/tmp"))
    daemon = await start_daemon(top / "state", log_path=top / "daemon.log", debug=False, own_session=True)
    try:
        bundle = make_bundle(top)
        size = megabytes << 20
        async with Client.connect(daemon.address) as client:
            await client.create_container("bench", str(bundle))
            latencies = []
            for _ in range(count):
                started = time.perf_counter()
                pid = await client.add_process("bench", ["true"])
                latencies.append((time.perf_counter() - started) * 1000)
                async for _chunk in client.follow_output("bench", pid):
                    pass
            latencies.sort()
            print(
                f"exec latency over {count}: p50 {percentile(latencies, 0.5):.1f} ms, "
                f"p95 {percentile(latencies, 0.95):.1f} ms, max {latencies[-1]:.1f} ms"
            )
            prepare = await client.add_process(
                "bench", ["sh", "-c", f"head -c {size} /dev/urandom > /dev/shm/blob; md5sum /dev/shm/blob"]
            )
            expected = b""
            async for chunk in client.follow_output("bench", prepare):
                expected += chunk.stdout
            expected_md5 = expected.split()[0].decode()

            async with client.subscribe() as events:
                started = time.perf_counter()
                pid = await client.add_process("bench", ["cat", "/dev/shm/blob"])
                async for event in events:
                    if event.type == EventType.EXIT and event.pid == pid:
                        break
                drain_s = time.perf_counter() - started
            rate = megabytes / drain_s
            print(f"drain to log, nobody attached: {megabytes} MB in {drain_s:.2f} s = {rate:.0f} MB/s")

            started = time.perf_counter()
            digest, total = hashlib.md5(), 0
            async for chunk in client.follow_output("bench", pid, follow=False):
                digest.update(chunk.stdout)
                total += len(chunk.stdout)
            read_s = time.perf_counter() - started
            assert (total, digest.hexdigest()) == (size, expected_md5), "logs differ from what was written"
            print(
                f"read back from the logs: {megabytes} MB in {read_s:.2f} s = {megabytes / read_s:.0f} MB/s"
            )

            started = time.perf_counter()
            pid = await client.add_process("bench", ["cat", "/dev/shm/blob"])
            digest, total = hashlib.md5(), 0
            async for chunk in client.follow_output("bench", pid):
                digest.update(chunk.stdout)
                total += len(chunk.stdout)
            attach_s = time.perf_counter() - started
            assert (total, digest.hexdigest()) == (size, expected_md5), "attach output differs"
            print(f"attach (live): {megabytes} MB in {attach_s:.2f} s = {megabytes / attach_s:.0f} MB/s")
    finally:
        with trio.CancelScope(shield=True):
            await stop_daemon(daemon)
            await empty_runc_root(daemon.runc_root)
        shutil.rmtree(top, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="execs for the latency figure")
    parser.add_argument("--megabytes", type=int, default=50, help="output size for the throughput figures")
    args = parser.parse_args()
    trio.run(run, args.n, args.megabytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
