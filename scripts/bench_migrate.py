#!/usr/bin/env python3
"""Measure live migration: frozen and total time between two daemons over tls+tcp, beside raw runc.

    .venv/bin/python scripts/bench_migrate.py [--sizes 16,64,256] [--rounds 3]

Two private daemons: A in this network namespace, B in one made for the run (``ip netns``), joined
by a veth pair with 198.18.0.0/15 addresses; they talk mutual TLS with certificates made for the
run. For each size, a container holds that many MiB of resident anonymous memory (``dd``'s block
buffer, filled from /dev/zero) beside a counter, and migrates A -> B, ``--rounds`` times (a new
container each round). The daemon's reply gives the breakdown: dump (freeze + CRIU dump; when
the pages stream to the destination's page server, as they do unless that cannot be set up, their
transfer too), transfer (the images on disk, in checksummed chunks over TLS), restore (the
destination's restore until the process runs); frozen is their sum, from the freeze to the
process running at B; total adds the checks before and the deletion after.

The floor beside it: raw ``runc pause`` + ``runc checkpoint --leave-running`` + ``runc restore -d``
into a second runc root on this host (images on the same disk, no network), the same container.
Medians are printed; the machine is shared, so compare the columns of one run.
``--compare-streaming`` runs two source daemons in turns, one streaming every dump's pages to the
destination's page server and one never (``--migration-stream-min``), and prints a table for each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import attrs
import trio

SCRIPTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS_DIR.parent))
sys.path.insert(0, str(SCRIPTS_DIR))

from benchlib import empty_runc_root  # noqa: E402
from support import netns  # noqa: E402
from support.certs import free_port_run, make_ca, sign  # noqa: E402
from support.daemon import start_daemon, stop_daemon  # noqa: E402

from containerd_actors.client import Client, TlsFiles  # noqa: E402

MAKE_BUNDLE = SCRIPTS_DIR / "make-bundle"
#: How long a container may take to fill its memory before a round gives up.
FILL_TIMEOUT_S = 60.0


def memory_command(mib: int) -> list[str]:
    return [
        "sh",
        "-c",
        f"dd if=/dev/zero bs={mib << 20} count=1 2>/dev/null | sleep 1000000 & "
        "i=0; while :; do echo $i; i=$((i+1)); usleep 10000; done",
    ]


def make_bundle(directory: Path, command: list[str]) -> Path:
    done = subprocess.run(
        [sys.executable, str(MAKE_BUNDLE), str(directory), "--", *command], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"make-bundle failed: {done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


@attrs.frozen
class Sample:
    frozen: float
    total: float
    dump: float
    transfer: float
    restore: float
    mib_sent: float = 0.0
    #: The pages went to the destination's page server during the dump (``pages_streamed``).
    streamed: bool = False


def median(samples: list[Sample], field: str) -> float:
    return statistics.median(getattr(sample, field) for sample in samples)


def tls_args(files: TlsFiles) -> list[str]:
    return ["--tls-cert", str(files.cert), "--tls-key", str(files.key), "--tls-ca", str(files.ca)]


async def wait_for_memory(client: Client, cid: str, size: int) -> None:
    with trio.fail_after(FILL_TIMEOUT_S):
        while True:
            stats = await client.stats(cid)
            memory = stats.cgroup.memory
            if memory is not None and memory.usage is not None and memory.usage.usage >= size:
                return
            await trio.sleep(0.05)


#: ``--compare-streaming``: two source daemons, migrating in turns, the one always streaming the
#: pages and the other never (``--migration-stream-min``), so that one run compares the two paths
#: under the same load.
COMPARED = {
    "pages streamed": ("--migration-stream-min", "0"),
    "dump to disk, then sent": ("--migration-stream-min", str(1 << 20)),
}


async def daemon_rounds(
    top: Path, sizes: list[int], rounds: int, sources: dict[str, tuple[str, ...]]
) -> dict[str, dict[int, list[Sample]]]:
    """Per source daemon (by name, with its extra arguments), per size, its rounds' samples."""
    veth = netns.create()
    handles = []
    try:
        certs_dir = top / "certs"
        make_ca(certs_dir, "ca")
        a_files = sign(certs_dir, "ca", "a", "daemon-a", ips=(veth.host_address,))
        b_files = sign(certs_dir, "ca", "b", "daemon-b", ips=(veth.ns_address,))
        b_remote = f"tls+tcp://{veth.ns_address}:{free_port_run(3)}"
        tag = uuid.uuid4().hex[:6]
        sources_up = {}
        for index, (name, extra) in enumerate(sources.items()):
            a_remote = f"tls+tcp://{veth.host_address}:{free_port_run(3)}"
            a = await start_daemon(
                top / f"a{index}", "--id", f"bench-a{index}-{tag}", "--listen", a_remote, *tls_args(a_files),
                *extra, debug=False, own_session=True,
            )  # fmt: skip
            handles.append(a)
            sources_up[name] = a
        b = await start_daemon(
            top / "b", "--id", f"bench-b-{tag}", "--listen", b_remote, *tls_args(b_files),
            debug=False, own_session=True, prefix=("nsenter", f"--net=/run/netns/{veth.name}"),
        )  # fmt: skip
        handles.append(b)
        results: dict[str, dict[int, list[Sample]]] = {name: {} for name in sources}
        async with Client.connect(b.address) as client_b:
            for mib in sizes:
                bundle = make_bundle(top / f"bundle-{mib}", memory_command(mib))
                for round_ in range(rounds):
                    for index, (name, a) in enumerate(sources_up.items()):
                        cid = f"bench-mig-{tag}-{mib}-{round_}-{index}"
                        async with Client.connect(a.address, timeout=120) as client_a:
                            await client_a.create_container(cid, str(bundle))
                            await wait_for_memory(client_a, cid, mib << 20)
                            reply = await client_a.migrate_container(cid, b_remote)
                        results[name].setdefault(mib, []).append(
                            Sample(
                                reply.frozen_s,
                                reply.total_s,
                                reply.dump_s,
                                reply.transfer_s,
                                reply.restore_s,
                                reply.bytes_sent / 2**20,
                                reply.pages_streamed,
                            )
                        )
                        await client_b.signal(cid, signal=9)
        return results
    finally:
        with trio.CancelScope(shield=True):
            for handle in handles:
                await empty_runc_root(handle.runc_root)
                await stop_daemon(handle)
        netns.remove(veth)


def _runc(root: Path, *args: str, stdio: int | None = None) -> None:
    """One runc command (no timeout: ``subprocess`` timeouts poll, which would skew the times)."""
    if stdio is None:
        done = subprocess.run(["runc", "--root", str(root), *args], capture_output=True)
    else:
        done = subprocess.run(
            ["runc", "--root", str(root), *args], stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio
        )
    if done.returncode != 0:
        raise SystemExit(f"runc {args[0]} failed: {(done.stderr or b'').decode(errors='replace')}")


def _memory_usage(cgroup: str) -> int:
    try:
        return int(Path(f"/sys/fs/cgroup/memory{cgroup}/memory.usage_in_bytes").read_text())
    except OSError:
        return 0


def raw_round(top: Path, bundle: Path, mib: int, tag: str) -> Sample:
    """runc pause + checkpoint --leave-running + restore -d into a second root, as the daemons do."""
    cid = f"bench-raw-{tag}"
    source_root, target_root = top / "raw-a", top / "raw-b"
    config = json.loads((bundle / "config.json").read_text())
    source_bundle, target_bundle = top / f"raw-src-{tag}", top / f"raw-dst-{tag}"
    for directory, cgroup in ((source_bundle, f"/{cid}-src"), (target_bundle, f"/{cid}-dst")):
        directory.mkdir()
        config["root"]["path"] = str((bundle / config["root"]["path"]).resolve())
        config["linux"]["cgroupsPath"] = cgroup
        (directory / "config.json").write_text(json.dumps(config))
    # Pipes for stdio, as the daemon gives: CRIU dumps an external pipe and maps it back at restore.
    reader, writer = os.pipe()
    try:
        _runc(
            source_root,
            "run",
            "-d",
            "--bundle",
            str(source_bundle),
            cid,
            stdio=writer,
        )
        deadline = time.monotonic() + FILL_TIMEOUT_S
        while _memory_usage(f"/{cid}-src") < mib << 20:
            if time.monotonic() > deadline:
                raise SystemExit(f"raw container did not fill {mib} MiB")
            os.read(reader, 1 << 20)  # keep the counter's pipe from filling
            time.sleep(0.05)
        images = top / f"raw-images-{tag}"
        frozen_at = time.perf_counter()
        _runc(source_root, "pause", cid)
        _runc(
            source_root,
            "checkpoint",
            "--leave-running",
            "--image-path",
            str(images),
            "--work-path",
            str(top / f"raw-work-{tag}"),
            cid,
        )
        dumped_at = time.perf_counter()
        pid_file = top / f"raw-pid-{tag}"
        _runc(
            target_root, "restore", "-d", "--image-path", str(images),
            "--work-path", str(top / f"raw-work2-{tag}"),
            "--pid-file", str(pid_file), "--bundle", str(target_bundle), cid,
            stdio=writer,
        )  # fmt: skip
        running_at = time.perf_counter()
        return Sample(
            running_at - frozen_at, running_at - frozen_at, dumped_at - frozen_at, 0.0, running_at - dumped_at
        )
    finally:
        for root in (source_root, target_root):
            subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], capture_output=True)
        os.close(reader)
        os.close(writer)
        shutil.rmtree(top / f"raw-images-{tag}", ignore_errors=True)


def raw_rounds(top: Path, sizes: list[int], rounds: int) -> dict[int, list[Sample]]:
    results: dict[int, list[Sample]] = {}
    for mib in sizes:
        bundle = make_bundle(top / f"raw-bundle-{mib}", memory_command(mib))
        for round_ in range(rounds):
            results.setdefault(mib, []).append(
                raw_round(top, bundle, mib, f"{uuid.uuid4().hex[:6]}-{round_}")
            )
    return results


def report(
    sizes: list[int], ours: dict[str, dict[int, list[Sample]]], raw: dict[int, list[Sample]], rounds: int
) -> None:
    print(
        f"\nmedians of {rounds} rounds, seconds"
        " (frozen = dump + transfer + restore; total adds the checks before and the delete after;"
        " with the pages streamed, dump includes their transfer)"
    )
    for name, samples in ours.items():
        if len(ours) > 1:
            print(f"\nsource daemon: {name}")
        header = (
            "| resident anon | daemons A->B frozen | dump | transfer | restore | total | MiB sent "
            "| pages streamed | raw runc frozen | raw dump | raw restore |"
        )
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        for mib in sizes:
            o, r = samples[mib], raw[mib]
            print(
                f"| {mib} MiB | {median(o, 'frozen'):.3f} | {median(o, 'dump'):.3f} "
                f"| {median(o, 'transfer'):.3f} "
                f"| {median(o, 'restore'):.3f} | {median(o, 'total'):.3f} | {median(o, 'mib_sent'):.1f} "
                f"| {sum(sample.streamed for sample in o)}/{len(o)} "
                f"| {median(r, 'frozen'):.3f} | {median(r, 'dump'):.3f} | {median(r, 'restore'):.3f} |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64,256", help="MiB of resident memory, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="migrations per size (median reported)")
    parser.add_argument(
        "--compare-streaming",
        action="store_true",
        help="two source daemons in turns, one always streaming the pages, one never (a table each)",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    sources: dict[str, tuple[str, ...]] = dict(COMPARED) if args.compare_streaming else {"default": ()}
    top = Path(tempfile.mkdtemp(prefix="bench-migrate-", dir="/tmp"))
    try:
        ours = trio.run(daemon_rounds, top, sizes, args.rounds, sources)
        raw = raw_rounds(top, sizes, args.rounds)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    report(sizes, ours, raw, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
