#!/usr/bin/env python3
"""Measure the migration's bulk channel alone: random bytes from a file to a receiver in its own process.

    .venv/bin/python scripts/bench_bulk_channel.py [--mib 256] [--chunks 1024,4096] [--rounds 3]

For each chunk size (KiB), ``bulk.connect`` + ``bulk.send_chunks`` into a ``BulkReceiver`` in a child
process (loopback, mutual TLS 1.3 with certificates made for the run), then the same bytes with
``trio.SSLStream`` over trio sockets in both processes (1 MiB pieces, sha256 and pwrite as well):
the alternative to blocking sockets in worker threads. Prints medians of wall time and of each
side's CPU time; CPU time is the steadier number on a shared machine.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.certs import make_test_certs

from containerd_actors.daemon.migration import bulk
from containerd_actors.daemon.migration.chunks import SourceFile, plan_chunks
from containerd_actors.transport.tls import TlsFiles

PIECE = 1 << 20


def _bulk_receiver(server: TlsFiles, out: Path, queue: Any) -> None:
    receiver = bulk.BulkReceiver(
        server, "127.0.0.1", "m01", "admin", lambda _k, name: out / name, lambda: None
    )
    queue.put((receiver.port, receiver.secret))
    cpu = time.process_time()
    receiver.run()
    queue.put(time.process_time() - cpu)


def bulk_round(certs: dict[str, TlsFiles], source: Path, out: Path, chunk: int) -> tuple[float, float, float]:
    queue: Any = multiprocessing.Queue()
    child = multiprocessing.Process(target=_bulk_receiver, args=(certs["server"], out, queue))
    child.start()
    port, secret = queue.get()
    conn = bulk.connect(certs["admin"], "localhost", port, secret)
    plans = plan_chunks([SourceFile("image", "pages-1.img", source)], chunk)
    started, cpu = time.monotonic(), time.process_time()
    with conn:
        bulk.send_chunks(conn, plans)
    wall, source_cpu = time.monotonic() - started, time.process_time() - cpu
    destination_cpu = queue.get()
    child.join()
    return wall, source_cpu, destination_cpu


def _trio_receiver(server: TlsFiles, out: Path, total: int, queue: Any) -> None:
    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        queue.put(listeners[0].socket.getsockname()[1])
        stream = trio.SSLStream(await listeners[0].accept(), bulk.server_context(server), server_side=True)
        cpu = time.process_time()
        fd = os.open(out / "trio.img", os.O_WRONLY | os.O_CREAT, 0o600)
        got, pending = 0, bytearray()
        while got < total:
            pending += await stream.receive_some(PIECE)
            if len(pending) >= PIECE or got + len(pending) >= total:
                hashlib.sha256(pending).hexdigest()
                os.pwrite(fd, pending, got)
                got, pending = got + len(pending), bytearray()
        os.close(fd)
        await stream.send_all(b"k")
        queue.put(time.process_time() - cpu)

    trio.run(main)


def trio_round(certs: dict[str, TlsFiles], source: Path, out: Path) -> tuple[float, float, float]:
    total = source.stat().st_size
    queue: Any = multiprocessing.Queue()
    child = multiprocessing.Process(target=_trio_receiver, args=(certs["server"], out, total, queue))
    child.start()
    port = queue.get()

    async def send() -> tuple[float, float]:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(tcp, bulk.client_context(certs["admin"]), server_hostname="localhost")
        await stream.do_handshake()
        started, cpu = time.monotonic(), time.process_time()
        fd = os.open(source, os.O_RDONLY)
        for offset in range(0, total, PIECE):
            data = os.pread(fd, PIECE, offset)
            hashlib.sha256(data).hexdigest()
            await stream.send_all(data)
        os.close(fd)
        await stream.receive_some(1)
        return time.monotonic() - started, time.process_time() - cpu

    wall, source_cpu = trio.run(send)
    destination_cpu = queue.get()
    child.join()
    return wall, source_cpu, destination_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--chunks", default="1024,4096", help="chunk sizes in KiB, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    try:
        certs = make_test_certs(directory)
        source = directory / "pages-1.img"
        with open(source, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        out = directory / "out"
        out.mkdir()
        cases: dict[str, list[tuple[float, float, float]]] = {}
        for _ in range(args.rounds):
            for kib in (int(k) for k in args.chunks.split(",")):
                cases.setdefault(f"bulk channel, {kib} KiB chunks", []).append(
                    bulk_round(certs, source, out, kib << 10)
                )
            cases.setdefault("trio.SSLStream, 1 MiB pieces", []).append(trio_round(certs, source, out))
        print(f"\n{args.mib} MiB of random bytes over loopback, medians of {args.rounds} rounds")
        print("| how | wall | MiB/s | source CPU | destination CPU |\n|---|---|---|---|---|")
        for name, rounds in cases.items():
            wall, source_cpu, destination_cpu = (statistics.median(r[i] for r in rounds) for i in range(3))
            rate = args.mib / wall
            print(f"| {name} | {wall:.3f} s | {rate:.0f} | {source_cpu:.3f} s | {destination_cpu:.3f} s |")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
