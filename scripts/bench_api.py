#!/usr/bin/env python3
"""API benchmark: request round trips, `actr containers` with 1000 containers, and event fan-out.

Three measurements from the issue, each next to a yardstick taken in the same run, because this machine is
noisy and only same-run comparisons survive from one run to the next:

1. **Round-trip latency** of a no-op request (`Ping`, through the client library) against a bare pynng
   Req0/Rep0 echo of the same bytes. Every server is a separate process, so every round trip crosses a
   process boundary. There are two echoes: a plain synchronous Rep0 loop (the floor nng itself allows),
   which is the issue's yardstick, and a trio Rep0 with the daemon's number of contexts (the daemon's API
   server minus its own work), which splits the gap into "trio and pynng's async bridge" and "decode, ask
   an actor, encode". Requests run one after the other and from `--clients` concurrent tasks, in blocks
   that rotate the order of the servers, so that a burst of noise from other jobs lands on all of them.
2. **`actr containers` with 1000 containers**: a daemon runs `--containers` busybox `sleep` containers,
   and `actr --address ADDR containers` (and `--json`) runs as a subprocess several times; wall time and
   time to the first byte of stdout, read from the pipe (nothing is polled). Python's own start-up,
   `actr --version` (imports only) and the State request made in-process are measured alongside, so each
   share of the wall time is visible.
3. **Event fan-out** from the real `EventsActor` (with its journal, the `MetricsActor` it reports to and
   the daemon's API server beside it), run in this process and fed `EventDraft`s through its mailbox as
   fast as it takes them: the daemon emits events only on container start and exit, at ~60/s, which
   would measure runc rather than fan-out. 1, 10 and 100 subscriber *processes* of two kinds: *raw*, a
   bare pynng Sub0 that counts events and checks seq continuity (what nng alone delivers and drops), and
   *lossless*, `Client.subscribe()` as applications use it, which fills every gap from the journal
   with `Events` requests (the issue's "zero loss after gap filling"). Both read the *batch* stream
   (`EventBatch` messages of many events) by default; `--stream per-event` (or `both`) measures the
   stream of one nng message per event too, which costs every subscriber a wake-up per event.

The **tls+tcp column** measures the same things over mutual TLS beside ipc, in the same run: the daemon
also listens on `tls+tcp://127.0.0.1` with certificates made in the work directory (with openssl), and
a second client pings it in the same rotating blocks; containers are started from `--clients` tasks over
each transport (`--tls-starts` per round, rounds in the order ipc, tls, tls, ipc, each round's
containers killed before the next); and the fan-out rounds with `--tls-subscribers` subscribers are run
again with the subscribers on the tls+tcp streams (and gap filling through the tls+tcp API). The
issue's goals: within 1.3x of ipc on requests, and at least 0.8x of its fan-out rate.

Run it as root (the container part drives runc), with the project's venv:

    .venv/bin/python scripts/bench_api.py [--requests 2000] [--containers 1000] [--events 50000]
        [--lossless-events N] [--subscribers 0,1,10,100] [--stream batch|per-event|both]
        [--tls-starts 100] [--tls-subscribers 10]
        [--skip-latency|--skip-actr|--skip-events|--skip-tls]

Everything it starts is cleaned up by pid, or by container id under a private runc root, however the run
ends (Ctrl-C included).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pynng
import trio
from benchlib import (
    cpu_times,
    daemon_cpu_times,
    empty_runc_root,
    make_bundle,
    percentile,
    progress,
    remove_workdir,
    run_cancelled_by_signals,
    sweep_leftovers,
    wait_for_quiet_cpu,
)
from rich import box
from rich.console import Console
from rich.table import Table
from support.certs import free_port_run, make_ca, sign
from support.daemon import DaemonHandle, runc_containers, start_daemon, stop_daemon

from containerd_actors.client import Client, SubscriptionStats, TlsFiles
from containerd_actors.daemon.api import WORKER_CONTEXTS, ApiServer
from containerd_actors.daemon.config import DaemonConfig, RemoteStreams
from containerd_actors.daemon.events.actor import EventsActor
from containerd_actors.daemon.events.journal import EventJournal
from containerd_actors.daemon.events.messages import EventDraft, EventsStatus, GetStatus
from containerd_actors.daemon.mailbox import ask
from containerd_actors.daemon.metrics.actor import MetricsActor
from containerd_actors.daemon.wiring import events_actor
from containerd_actors.host.reaping import become_child_subreaper
from containerd_actors.protocol import MAX_MESSAGE_BYTES, EventType, Ping, encode_request

DAEMON = "daemon"
#: The same daemon, pinged over tls+tcp (the tls+tcp column).
DAEMON_TLS = "daemon-tls"
IPC = "ipc"
TLS = "tls+tcp"
ECHO_SYNC = "echo-sync"
ECHO_TRIO = "echo-trio"
SEQUENTIAL = "sequential"
CONCURRENT = "concurrent"
#: The issue's targets.
TARGET_PING_RATIO = 1.5
TARGET_ACTR_WALL_S = 0.4
TARGET_EVENTS_PER_S = 5000.0
TARGET_EVENTS_SUBSCRIBERS = 100
#: tls+tcp against ipc: requests at most this much slower, fan-out at least this share of the rate.
TARGET_TLS_REQUEST_RATIO = 1.3
TARGET_TLS_FANOUT_RATIO = 0.8
#: Unmeasured round trips per server before the first block: cattrs hooks, nng pipes, page cache.
WARM_UP_CALLS = 200
#: A child server that has not said "ready" by then is broken, not slow.
CHILD_READY_TIMEOUT_S = 30.0
#: All subscribers must be connected by then: the last of 100 may start 20 s after the first on two cores.
SUBSCRIBERS_CONNECT_TIMEOUT_S = 180.0
#: Events per lossless round on the per-event stream: 100 subscribers get a few hundred a second each.
PER_EVENT_LOSSLESS_EVENTS = 10_000
#: Subscribers stop this long after their last frame (when the tail was dropped).
SUBSCRIBER_IDLE_TIMEOUT_MS = 2_000
#: A lossless subscriber gives up after this long (it should have everything long before).
LOSSLESS_TIMEOUT_S = 600.0
#: Containers are started as bench_start does: from 100 client tasks, queueing on the daemon's -c.
START_CLIENTS = 100
START_TIMEOUT_S = 600.0
ID_PREFIX = "api"
#: A quiet machine is waited for this long before each part; the part runs anyway afterwards.
QUIET_TIMEOUT_S = 10.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Ping latency against a bare pynng echo, `actr containers` with many containers running,"
        " and event fan-out to many subscribers.",
        epilog="Run as root, with the project's venv: .venv/bin/python scripts/bench_api.py",
    )
    parser.add_argument(
        "--requests", type=int, default=2000, help="round trips per server and mode (default 2000)"
    )
    parser.add_argument(
        "--clients", type=int, default=10, help="client tasks in the concurrent mode (default 10)"
    )
    parser.add_argument(
        "--blocks",
        type=int,
        default=4,
        help="blocks the round trips are split into, rotating the order of the servers (default 4)",
    )
    parser.add_argument(
        "--containers", type=int, default=1000, help="containers running while actr lists them (default 1000)"
    )
    parser.add_argument("--actr-runs", type=int, default=10, help="runs of each actr command (default 10)")
    parser.add_argument("--events", type=int, default=50_000, help="events per fan-out run (default 50000)")
    parser.add_argument(
        "--subscribers",
        type=_counts,
        default=[0, 1, 10, 100],
        help="subscriber processes per fan-out run, comma-separated; 0 measures the publisher alone"
        " (default 0,1,10,100)",
    )
    parser.add_argument(
        "--lossless-events",
        type=int,
        default=None,
        help="events per lossless fan-out run (default: as --events on the batch stream, where a run of"
        " 10000 lasts under two seconds, a fifth of it the first batch's fill and the last one's"
        " processing; 10000 on the per-event stream, where every event wakes every subscriber)",
    )
    parser.add_argument(
        "--lossless-subscribers",
        type=_counts,
        default=[1, 10, 100],
        help="lossless (Client.subscribe, gap filling) subscriber processes per run (default 1,10,100)",
    )
    parser.add_argument(
        "--stream",
        choices=[BATCH, PER_EVENT, "both"],
        default=BATCH,
        help="which event stream the fan-out subscribers read: EventBatch messages (the default), one"
        " message per event (slow with 100 subscribers: minutes), or both, one after the other",
    )
    parser.add_argument(
        "--tls-starts",
        type=int,
        default=100,
        help="containers started per round in the ipc / tls+tcp start comparison (default 100)",
    )
    parser.add_argument(
        "--tls-subscribers",
        type=_counts,
        default=[10],
        help="subscriber counts whose fan-out rounds are run again over tls+tcp (default 10)",
    )
    parser.add_argument(
        "--skip-tls", action="store_true", help="skip the tls+tcp column (no TLS listener, no TLS rounds)"
    )
    parser.add_argument("--skip-latency", action="store_true", help="skip the round-trip part")
    parser.add_argument("--skip-actr", action="store_true", help="skip the `actr containers` part")
    parser.add_argument("--skip-events", action="store_true", help="skip the event fan-out part")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the daemon's log in the work directory (path printed)"
    )
    args = parser.parse_args(argv)
    for name in ("requests", "clients", "blocks", "containers", "actr_runs", "events", "tls_starts"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lossless_events is not None and args.lossless_events < 1:
        parser.error("--lossless-events must be at least 1")
    return args


def lossless_events(args: argparse.Namespace, stream: str) -> int:
    """Events per lossless round on ``stream`` (see --lossless-events)."""
    if args.lossless_events is not None:
        return args.lossless_events
    return args.events if stream == BATCH else PER_EVENT_LOSSLESS_EVENTS


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts such as 1,10,100, got {text!r}") from None
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError("subscriber counts must not be negative")
    return counts


# --- child processes ----------------------------------------------------------------------------------
#
# The echo servers and the subscribers run as `python -c SOURCE-OF-ONE-FUNCTION ARGS...`. A child that
# imported this file would pay for trio, rich, cattrs and the daemon's modules: 0.4 s of CPU each, measured,
# against 0.1 s for pynng alone, so 100 subscribers on two cores would take 20 s just to start. Each child
# function therefore imports what it needs itself and takes only string arguments.


def child_argv(
    function: Callable[..., None], *args: str, helpers: tuple[Callable[..., Any], ...] = ()
) -> list[str]:
    """The argv that runs `function(*args)` alone in a fresh interpreter (see the comment above), with
    the sources of the self-contained ``helpers`` it calls."""
    source = "\n".join(textwrap.dedent(inspect.getsource(f)) for f in (*helpers, function))
    # Postponed annotations, as in this file: a child's annotations may name what it imports itself.
    code = f"from __future__ import annotations\nimport sys\n{source}\n{function.__name__}(*sys.argv[1:])\n"
    return [sys.executable, "-c", code, *args]


def echo_sync_child(address: str) -> None:
    """The bare echo: one synchronous Rep0 socket answering every request with its own bytes.

    It is the floor for a Req/Rep round trip across processes with nng: no event loop, no decoding.
    """
    import pynng

    with pynng.Rep0(recv_max_size=1 << 20) as sock:
        sock.listen(address)
        print("ready", flush=True)
        while True:
            sock.send(sock.recv())


def subscriber_counts(received: int, unique: int, gaps: int, out_of_order: int) -> dict[str, float]:
    """The first keys of a subscriber process's report (one JSON line), whichever client it runs."""
    return {"received": received, "unique": unique, "gaps": gaps, "out_of_order": out_of_order}


def subscriber_span(
    seqs: tuple[int, int], times: tuple[float, float], cpu_first: float, received: int
) -> dict[str, float]:
    """The span of a subscriber's report: first and last seq, their times, and the CPU it spent."""
    import os

    cpu = os.times()
    return {
        "first_seq": seqs[0],
        "last_seq": seqs[1],
        "t_first": times[0],
        "t_last": times[1],
        "cpu_s": cpu.user + cpu.system - cpu_first if received else 0.0,
    }


#: What both subscriber children call (``child_argv`` ships their sources along).
SUBSCRIBER_HELPERS = (subscriber_counts, subscriber_span)


def echo_trio_child(address: str, contexts: str) -> None:
    """An echo with the daemon's I/O shape: trio, one worker task per Rep0 context, arecv then asend.

    The daemon's API server does exactly this plus its own work, so the daemon minus this echo is the
    daemon's own per-request cost, and this echo minus the synchronous one is what trio and pynng's async
    bridge cost.
    """
    import pynng
    import trio

    async def worker(context: pynng.Context) -> None:
        while True:
            await context.asend(await context.arecv())

    async def serve() -> None:
        with pynng.Rep0(recv_max_size=1 << 20) as sock:
            sock.listen(address)
            async with trio.open_nursery() as nursery:
                for _ in range(int(contexts)):
                    nursery.start_soon(worker, sock.new_context())
                print("ready", flush=True)

    trio.run(serve)


def subscriber_child(
    address: str,
    expected: str,
    idle_timeout_ms: str,
    batched: str,
    cert: str = "",
    key: str = "",
    ca: str = "",
) -> None:
    """One raw event subscriber: count events, check seq continuity, print one JSON line, exit.

    A plain Sub0 with nng's default buffers, subscribed to everything, as `Client.subscribe` sets one up.
    On the per-event stream the seq is cut out of the frame's bytes instead of parsing the JSON (the
    daemon's encoder writes `"seq":N,` without spaces), so that the subscriber's own per-frame cost is as
    small as a Python subscriber's can be and what is measured is delivery. On the batch stream (`batched`
    "1") each message is one EventBatch: parsed (with orjson, as the client library does, or json),
    counted by its `first_seq` and the length of its columns, and not turned into events. It stops after
    `expected` distinct seqs, or `idle_timeout_ms` after its last message when the tail was dropped. Times
    are CLOCK_MONOTONIC, which is one clock for every process on the machine, so the parent can compare
    them with its own. With `cert`, `key` and `ca` it dials a tls+tcp:// stream with them.
    """
    import json
    import os
    import time

    import pynng

    loads: Any = json.loads
    try:
        import orjson

        loads = orjson.loads
    except ImportError:
        pass

    total = int(expected)
    batches = batched == "1"
    received = unique = gaps = out_of_order = messages = 0
    next_seq = first_seq = last_seq = 0
    t_first = t_last = cpu_first = 0.0
    tls: dict[str, Any] = {}
    if cert:
        with open(cert) as c, open(key) as k, open(ca) as a:
            tls["tls_config"] = pynng.TLSConfig(
                pynng.TLSConfig.MODE_CLIENT,
                server_name=address.split("://", 1)[1].rpartition(":")[0],
                ca_string=a.read(),
                own_cert_string=c.read(),
                own_key_string=k.read(),
                auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED,
            )
    with pynng.Sub0(recv_max_size=1 << 20, **tls) as sock:
        sock.subscribe(b"")
        sock.dial(address, block=True)
        print("ready", flush=True)
        while unique < total:
            try:
                frame = sock.recv()
            except pynng.Timeout:
                break
            now = time.monotonic()
            if batches:
                batch = loads(frame)
                seq, count = batch["first_seq"], len(batch["timestamps"])
            else:
                start = frame.index(b'"seq":') + 6
                seq, count = int(frame[start : frame.index(b",", start)]), 1
            if messages == 0:
                sock.recv_timeout = int(idle_timeout_ms)
                t_first, first_seq, next_seq = now, seq, seq
                times = os.times()
                cpu_first = times.user + times.system
            messages += 1
            received += count
            t_last = now
            if seq >= next_seq:
                gaps += seq > next_seq
                unique += count
                next_seq = seq + count
                last_seq = next_seq - 1
            else:
                out_of_order += 1
    report = {
        **subscriber_counts(received, unique, gaps, out_of_order),
        **subscriber_span((first_seq, last_seq), (t_first, t_last), cpu_first, received),
        "batches": messages if batches else 0,
    }
    print(json.dumps(report), flush=True)


# --- shared state and helpers -------------------------------------------------------------------------


@attrs.define
class Context:
    """What the parts share, and everything that must be cleaned up however the run ends."""

    args: argparse.Namespace
    workdir: Path
    daemon: DaemonHandle | None = None
    daemons: list[DaemonHandle] = attrs.Factory(list)
    runc_roots: list[Path] = attrs.Factory(list)
    children: list[trio.Process] = attrs.Factory(list)
    interrupted: bool = False
    #: The server's and the client's certificates for the tls+tcp column (None: --skip-tls).
    tls_server: TlsFiles | None = None
    tls_client: TlsFiles | None = None
    #: The daemon's tls+tcp API address, once it runs.
    tls_address: str | None = None


def make_certificates(ctx: Context) -> None:
    """A CA, the daemon's certificate and a client's, made with openssl in the work directory."""
    directory = ctx.workdir / "certs"
    make_ca(directory, "ca")
    ctx.tls_server = sign(directory, "ca", "server", "localhost")
    ctx.tls_client = sign(directory, "ca", "client", "bench")


def tls_listen_args(files: TlsFiles, address: str) -> list[str]:
    return [
        "--listen", address,
        "--tls-cert", str(files.cert), "--tls-key", str(files.key), "--tls-ca", str(files.ca),
    ]  # fmt: skip


async def open_child(ctx: Context, argv: list[str]) -> trio.Process:
    """Start a server child in its own session (a terminal's Ctrl-C reaches only us); wait for "ready"."""
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
    )
    ctx.children.append(process)
    assert process.stdout is not None
    seen = b""
    with trio.fail_after(CHILD_READY_TIMEOUT_S):
        while b"ready\n" not in seen:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"child process {process.pid} exited before it was ready")
            seen += chunk
    return process


async def stop_child(process: trio.Process) -> None:
    """SIGTERM by pid (the echo loops have no other way out), SIGKILL if it lingers; close its pipe."""
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.stdout is not None:
        await process.stdout.aclose()


async def stop_children(ctx: Context) -> None:
    """Stop every server child started so far (stop_child is a no-op for one already stopped)."""
    for process in ctx.children:
        await stop_child(process)


async def ensure_daemon(ctx: Context) -> DaemonHandle:
    """One daemon serves the latency and the actr parts; started on first use, on a private state dir."""
    if ctx.daemon is None:
        extra: list[str] = []
        if ctx.tls_server is not None:
            ctx.tls_address = f"tls+tcp://127.0.0.1:{free_port_run(3)}"
            extra = tls_listen_args(ctx.tls_server, ctx.tls_address)
        daemon = await start_daemon(
            ctx.workdir / "state", *extra, log_path=ctx.workdir / "daemon.log", debug=False, own_session=True
        )
        ctx.daemon = daemon
        ctx.daemons.append(daemon)
        ctx.runc_roots.append(daemon.runc_root)
        progress(f"daemon pid {daemon.pid} ready on {daemon.address}")
    return ctx.daemon


async def retire_daemon(ctx: Context) -> None:
    """Stop the daemon by pid (it leaves its containers running, by design), then delete them by id."""
    daemon = ctx.daemon
    if daemon is None:
        return
    ctx.daemon = None
    code = await stop_daemon(daemon)
    if code != 0:
        tail = daemon.log_path.read_text(errors="replace").splitlines()[-12:]
        progress(f"warning: daemon pid {daemon.pid} exited with {code}; its log ends:")
        progress("\n".join(f"    {line}" for line in tail))
    left = runc_containers(daemon.runc_root)
    if left:
        progress(f"deleting {len(left)} containers under {daemon.runc_root}")
    errors = await empty_runc_root(daemon.runc_root)
    for error in errors[:5]:
        progress(f"warning: runc delete failed: {error}")


def cpu_s(pid: int) -> float:
    """utime+stime of one process, all its threads (nng's included), from /proc; 10 ms resolution."""
    return cpu_times(pid).own_s


def daemon_cpu_s(daemon: DaemonHandle) -> float:
    """The daemon's CPU: the reaper we started plus its API server child (see benchlib.daemon_pids)."""
    return daemon_cpu_times(daemon.pid).own_s


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine from /proc/stat: was a part CPU-bound?"""
    fields = [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    user, nice, system, idle, iowait, irq, softirq = fields
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else math.nan


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


async def quiet(label: str) -> None:
    if not await wait_for_quiet_cpu(timeout_s=QUIET_TIMEOUT_S):
        progress(f"warning: the CPU is busy (other jobs?); the {label} part runs anyway")


# --- part 1: round trips ------------------------------------------------------------------------------


@attrs.define
class RoundTrips:
    """One server in one mode, pooled over all blocks."""

    latencies: list[float] = attrs.Factory(list)
    block_p50s: list[float] = attrs.Factory(list)
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def calls(self) -> int:
        return len(self.latencies)

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies), q)

    @property
    def per_second(self) -> float:
        return self.calls / self.wall_s if self.wall_s else math.nan


@attrs.frozen
class Target:
    name: str
    call: Callable[[], Awaitable[object]]
    #: CPU seconds used so far by the server process(es) behind `call`.
    server_cpu: Callable[[], float]


LatencyResults = dict[tuple[str, str], RoundTrips]


async def run_calls(
    call: Callable[[], Awaitable[object]], count: int, tasks: int
) -> tuple[list[float], float]:
    """`count` round trips from `tasks` tasks, each task one call after another; latencies and wall time."""
    latencies: list[float] = []

    async def task(share: int) -> None:
        for _ in range(share):
            began = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(tasks):
            nursery.start_soon(task, count // tasks + (index < count % tasks))
    return latencies, time.perf_counter() - began


def echo_call(sock: pynng.Req0, payload: bytes) -> Callable[[], Awaitable[None]]:
    """A round trip the way `Client.call` makes one (a context per call, asend, arecv), minus the codec."""

    async def call() -> None:
        context = sock.new_context()
        try:
            await context.asend(payload)
            await context.arecv()
        finally:
            context.close()

    return call


def req_socket(address: str) -> pynng.Req0:
    """A client socket configured as the client library's (no resends), dialled at once."""
    sock = pynng.Req0(resend_time=0, recv_max_size=MAX_MESSAGE_BYTES)
    try:
        sock.dial(address, block=True)
    except BaseException:
        sock.close()
        raise
    return sock


async def latency_part(ctx: Context) -> LatencyResults:
    """Ping through the daemon against both echoes, interleaved block by block, sequential then concurrent."""
    args = ctx.args
    daemon = await ensure_daemon(ctx)
    sync_address = f"ipc://{ctx.workdir / 'echo-sync.sock'}"
    trio_address = f"ipc://{ctx.workdir / 'echo-trio.sock'}"
    # The echoes get the bytes of a real Ping request, so both sides move the same payload.
    payload = encode_request(Ping(request_id=f"{os.getpid()}-bench-0000001"))
    results: LatencyResults = {}
    try:
        echo_sync = await open_child(ctx, child_argv(echo_sync_child, sync_address))
        echo_trio = await open_child(ctx, child_argv(echo_trio_child, trio_address, str(WORKER_CONTEXTS)))
        with req_socket(sync_address) as sync_sock, req_socket(trio_address) as trio_sock:
            async with (
                Client.connect(daemon.address) as client,
                tls_client(ctx) as remote,
            ):
                targets = [
                    Target(DAEMON, client.ping, lambda: daemon_cpu_s(daemon)),
                    Target(ECHO_SYNC, echo_call(sync_sock, payload), lambda: cpu_s(echo_sync.pid)),
                    Target(ECHO_TRIO, echo_call(trio_sock, payload), lambda: cpu_s(echo_trio.pid)),
                ]
                if remote is not None:
                    targets.append(Target(DAEMON_TLS, remote.ping, lambda: daemon_cpu_s(daemon)))
                for target in targets:
                    await run_calls(target.call, WARM_UP_CALLS, 1)
                for mode, tasks in ((SEQUENTIAL, 1), (CONCURRENT, args.clients)):
                    await quiet(f"{mode} round-trip")
                    await run_blocks(targets, mode, tasks, args, results)
    finally:
        with trio.CancelScope(shield=True):
            await stop_children(ctx)
    return results


@contextlib.asynccontextmanager
async def tls_client(ctx: Context, timeout: float = 30.0) -> AsyncIterator[Client | None]:
    """A client of the daemon over tls+tcp, or None without the tls+tcp column."""
    if ctx.tls_address is None or ctx.tls_client is None:
        yield None
        return
    async with Client.connect(ctx.tls_address, timeout=timeout, tls=ctx.tls_client) as client:
        yield client


# --- the tls+tcp column: starts over ipc and over tls+tcp ----------------------------------------------


@attrs.define
class StartRounds:
    """Containers started per second, one entry per round, by transport."""

    rates: dict[str, list[float]] = attrs.Factory(dict)
    errors: list[str] = attrs.Factory(list)


async def start_round(
    client: Client, bundle: Path, prefix: str, n: int, tasks: int
) -> tuple[float, list[str]]:
    """Start n containers from `tasks` tasks and return the rate; then kill them and wait until they
    are gone, so that every round starts from the same empty daemon."""
    ids = iter(range(n))
    started: list[str] = []
    errors: list[str] = []

    async def worker() -> None:
        for index in ids:
            id = f"{prefix}-{index}"
            try:
                await client.create_container(id, str(bundle))
            except Exception as exc:
                errors.append(f"{id}: {exc}")
            else:
                started.append(id)

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(min(tasks, n)):
            nursery.start_soon(worker)
    rate = len(started) / (time.perf_counter() - began)
    for id in started:
        await client.signal(id, 9)
    with trio.fail_after(START_TIMEOUT_S):
        while await client.containers():
            await trio.sleep(0.1)
    return rate, errors


async def starts_part(ctx: Context) -> StartRounds:
    """Rounds of `--tls-starts` containers over ipc and over tls+tcp, in the order ipc, tls, tls, ipc."""
    args = ctx.args
    daemon = await ensure_daemon(ctx)
    bundle = make_bundle(ctx.workdir)
    result = StartRounds()
    async with (
        Client.connect(daemon.address, timeout=START_TIMEOUT_S) as local,
        tls_client(ctx, START_TIMEOUT_S) as remote,
    ):
        assert remote is not None
        await quiet("start")
        for round, transport in enumerate((IPC, TLS, TLS, IPC)):
            client = local if transport == IPC else remote
            rate, errors = await start_round(
                client, bundle, f"{ID_PREFIX}-s{round}", args.tls_starts, args.clients
            )
            result.rates.setdefault(transport, []).append(rate)
            result.errors += errors
            progress(f"start round {round + 1}/4 over {transport}: {rate:.1f} containers/s")
    return result


async def run_blocks(
    targets: list[Target], mode: str, tasks: int, args: argparse.Namespace, results: LatencyResults
) -> None:
    """`--blocks` blocks; each runs every target once, in an order rotated by one from the last block's."""
    for block in range(args.blocks):
        shift = block % len(targets)
        share = args.requests // args.blocks + (block < args.requests % args.blocks)
        for target in targets[shift:] + targets[:shift]:
            server_before, client_before = target.server_cpu(), own_cpu_s()
            latencies, wall = await run_calls(target.call, share, tasks)
            result = results.setdefault((mode, target.name), RoundTrips())
            result.latencies += latencies
            result.block_p50s.append(statistics.median(latencies))
            result.wall_s += wall
            result.server_cpu_s += target.server_cpu() - server_before
            result.client_cpu_s += own_cpu_s() - client_before
    progress(
        f"round trips, {mode}: "
        + ", ".join(f"{t.name} p50 {results[mode, t.name].p(0.5) * 1e3:.3f} ms" for t in targets)
    )


# --- part 2: actr containers -----------------------------------------------------------------------------


@attrs.frozen
class CommandRun:
    wall_s: float
    first_byte_s: float
    returncode: int
    stdout: bytes
    stderr: bytes


async def close_process(process: trio.Process, *pipes: trio.abc.ReceiveStream) -> None:
    """Kill ``process`` if it still runs, wait for it, and close its ``pipes``; shielded, so that a
    cancelled run leaves nothing behind either."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pipe in pipes:
            await pipe.aclose()


async def time_command(argv: list[str]) -> CommandRun:
    """Wall time from spawn to exit and EOF, and time to the first byte on stdout, read from the pipe.

    trio waits for the exit on a pidfd, so nothing here is quantised by a polling interval.
    """
    out: list[bytes] = []
    err: list[bytes] = []
    first_byte = math.nan
    began = time.perf_counter()
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    stdout, stderr = process.stdout, process.stderr
    assert stdout is not None and stderr is not None
    try:

        async def drain_stderr() -> None:
            while chunk := await stderr.receive_some(65536):
                err.append(bytes(chunk))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_stderr)
            while chunk := await stdout.receive_some(65536):
                if not out:
                    first_byte = time.perf_counter() - began
                out.append(bytes(chunk))
        await process.wait()
        wall = time.perf_counter() - began
    finally:
        await close_process(process, stdout, stderr)
    assert process.returncode is not None
    return CommandRun(wall, first_byte, process.returncode, b"".join(out), b"".join(err))


@attrs.define
class Timings:
    """Repeated runs of one command; failures are kept as text, not as numbers."""

    runs: list[CommandRun] = attrs.Factory(list)
    problems: list[str] = attrs.Factory(list)

    @property
    def walls(self) -> list[float]:
        return [run.wall_s for run in self.runs if run.returncode == 0]

    @property
    def first_bytes(self) -> list[float]:
        return [
            run.first_byte_s for run in self.runs if run.returncode == 0 and not math.isnan(run.first_byte_s)
        ]


@attrs.define
class ActrResults:
    started: int = 0
    start_errors: list[str] = attrs.Factory(list)
    start_wall_s: float = math.nan
    python_start: Timings = attrs.Factory(Timings)
    actr_version: Timings = attrs.Factory(Timings)
    actr_empty: Timings = attrs.Factory(Timings)
    actr_table: Timings = attrs.Factory(Timings)
    actr_json: Timings = attrs.Factory(Timings)
    state_latencies: list[float] = attrs.Factory(list)
    daemon_cpu_per_state_s: float = math.nan


def actr_command() -> list[str]:
    """The installed `actr` beside this interpreter, as a user runs it; `python -m ctl` if there is none."""
    script = Path(sys.executable).parent / "actr"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ctl"]


async def start_containers(client: Client, bundle: Path, n: int) -> tuple[int, list[str], float]:
    """Start n containers from START_CLIENTS tasks; returns (started, error texts, wall seconds)."""
    ids = iter(range(n))
    errors: list[str] = []
    started = 0

    async def worker() -> None:
        nonlocal started
        for index in ids:  # one iterator shared by all tasks: each id is taken once
            try:
                await client.create_container(f"{ID_PREFIX}-{index}", str(bundle))
            except Exception as exc:  # a failed start is a result to report, not a crash
                errors.append(f"{ID_PREFIX}-{index}: {exc}")
            else:
                started += 1
                if started % 250 == 0:
                    progress(f"  {started}/{n} containers started")

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(min(START_CLIENTS, n)):
            nursery.start_soon(worker)
    return started, errors, time.perf_counter() - began


async def repeat(timings: Timings, argv: list[str], check: Callable[[CommandRun], str | None] | None) -> None:
    run = await time_command(argv)
    timings.runs.append(run)
    if run.returncode != 0:
        timings.problems.append(f"exit {run.returncode}: {run.stderr.decode(errors='replace').strip()[:200]}")
    elif check is not None and (problem := check(run)):
        timings.problems.append(problem)


async def actr_part(ctx: Context) -> ActrResults:
    """Baselines with no containers, then N containers, then `actr containers` and `--json` alternately."""
    args = ctx.args
    daemon = await ensure_daemon(ctx)
    bundle = make_bundle(ctx.workdir)
    actr = [*actr_command(), "--address", daemon.address]
    result = ActrResults()
    n = args.containers

    def table_check(run: CommandRun) -> str | None:
        rows = sum(1 for line in run.stdout.splitlines() if line.startswith(f"{ID_PREFIX}-".encode()))
        return (
            None if rows == result.started else f"table listed {rows} containers, expected {result.started}"
        )

    def json_check(run: CommandRun) -> str | None:
        listed = len(json.loads(run.stdout))
        return None if listed == result.started else f"--json listed {listed}, expected {result.started}"

    await quiet("actr")
    for _ in range(args.actr_runs):
        await repeat(result.python_start, [sys.executable, "-c", "pass"], None)
        await repeat(result.actr_version, [*actr_command(), "--version"], None)
        await repeat(result.actr_empty, [*actr, "containers"], None)

    progress(f"starting {n} containers through the daemon from {min(START_CLIENTS, n)} tasks")
    async with Client.connect(daemon.address, timeout=START_TIMEOUT_S) as client:
        result.started, result.start_errors, result.start_wall_s = await start_containers(client, bundle, n)
        progress(
            f"  {result.started} started in {result.start_wall_s:.1f} s, {len(result.start_errors)} failed"
        )
        await quiet("actr")
        before = daemon_cpu_s(daemon)
        for _ in range(args.actr_runs):
            began = time.perf_counter()
            await client.state()
            result.state_latencies.append(time.perf_counter() - began)
        result.daemon_cpu_per_state_s = (daemon_cpu_s(daemon) - before) / args.actr_runs

    for _ in range(args.actr_runs):
        await repeat(result.actr_table, [*actr, "containers"], table_check)
        await repeat(result.actr_json, [*actr, "--json", "containers"], json_check)
    progress(
        f"actr containers with {result.started} running: wall p50 {ms(median(result.actr_table.walls), 0)},"
        f" --json {ms(median(result.actr_json.walls), 0)}"
    )
    return result


# --- part 3: event fan-out ---------------------------------------------------------------------------------

RAW = "raw"
LOSSLESS = "lossless"
BATCH = "batch"
PER_EVENT = "per-event"


@attrs.frozen
class SubscriberReport:
    """What one subscriber process printed on its last line.

    A lossless subscriber adds its subscription's own counters (the client's ``SubscriptionStats``); a
    raw one only the batches it received, and its other counters stay 0.
    """

    received: int
    unique: int
    gaps: int
    out_of_order: int
    first_seq: int
    last_seq: int
    t_first: float
    t_last: float
    cpu_s: float
    subscription: SubscriptionStats = attrs.Factory(SubscriptionStats)

    @classmethod
    def from_json(cls, line: bytes) -> SubscriberReport:
        fields = json.loads(line)
        own = attrs.fields_dict(cls)
        subscription_only = attrs.fields_dict(SubscriptionStats).keys() - own.keys()
        counters = {name: fields.pop(name) for name in subscription_only if name in fields}
        return cls(**fields, subscription=SubscriptionStats(**counters))


@attrs.define
class FanoutResult:
    mode: str
    stream: str
    subscribers: int
    events: int
    #: Where the subscribers read: ``IPC`` or ``TLS`` (the tls+tcp column).
    transport: str = IPC
    publish_s: float = math.nan
    publisher_cpu_s: float = math.nan
    #: Share of the machine's CPU busy while publishing (anything's: the subscribers, other jobs).
    machine_busy: float = math.nan
    t_publish: float = math.nan
    #: From the first publish until the last subscriber had everything it was going to get.
    delivery_s: float = math.nan
    reports: list[SubscriberReport] = attrs.Factory(list)
    problems: list[str] = attrs.Factory(list)

    @property
    def published_per_s(self) -> float:
        return self.events / self.publish_s

    def delivered_per_s(self, report: SubscriberReport) -> float:
        """Distinct events received over the time from the first publish to this subscriber's last one."""
        span = report.t_last - self.t_publish
        return report.unique / span if report.unique and span > 0 else 0.0

    def lost(self, report: SubscriberReport) -> int:
        return self.events - report.unique


@attrs.define
class Subscriber:
    """One subscriber child as the round sees it: started, ready (subscribed), then its report."""

    argv: list[str]
    log: Path
    ready: trio.Event = attrs.Factory(trio.Event)
    output: bytes = b""
    failure: str | None = None

    async def run(self) -> None:
        """Run the child, watching its stdout for "ready" and keeping the rest; kill it if cancelled."""
        with open(self.log, "ab") as log:
            process = await trio.lowlevel.open_process(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        stdout = process.stdout
        assert stdout is not None
        try:
            while chunk := await stdout.receive_some(65536):
                self.output += chunk
                if not self.ready.is_set() and b"ready\n" in self.output:
                    self.ready.set()
            await process.wait()
        finally:
            await close_process(process, stdout)
        if process.returncode != 0 or not self.report_line():
            self.failure = f"subscriber exited with {process.returncode} (see {self.log.name})"

    def report_line(self) -> bytes:
        lines = [line for line in self.output.splitlines() if line.startswith(b"{")]
        return lines[-1] if lines else b""


def lossless_subscriber_child(
    api_address: str, expected: str, timeout_s: str, batched: str, cert: str = "", key: str = "", ca: str = ""
) -> None:
    """A subscriber as applications write one: `Client.subscribe()`, lossless by default (gap filling).

    It reads every event through the client library (trio, nng's async receive, decoding into `Event`s),
    which fills each gap it sees in `seq` from the daemon's journal with `Events` requests, from the batch
    stream (`batched` "1") or the per-event one. It stops at seq `expected` (the run's last event) or after
    `timeout_s`, and prints the subscription's own counters. With `cert`, `key` and `ca` it connects
    over tls+tcp, and so subscribes to the streams beside that listener.
    """
    import json
    import os
    import time
    from pathlib import Path

    import attrs
    import trio

    from containerd_actors.client import Client, TlsFiles

    tls = TlsFiles(Path(cert), Path(key), Path(ca)) if cert else None

    async def run() -> dict[str, float]:
        # Counters in locals, not in the report dict: this loop is the application's share of the
        # per-event cost, and it should be as small as an application's can be.
        total = int(expected)
        received = out_of_order = first_seq = last_seq = 0
        t_first = t_last = cpu_first = 0.0
        stats: dict[str, int] = {}
        with trio.move_on_after(float(timeout_s)):
            async with (
                Client.connect(api_address, timeout=60, tls=tls) as client,
                client.subscribe(batched=batched == "1") as subscription,
            ):
                print("ready", flush=True)
                async for event in subscription:
                    seq = event.seq
                    t_last = time.monotonic()
                    if not received:
                        times = os.times()
                        cpu_first = times.user + times.system
                        t_first, first_seq = t_last, seq
                    elif seq != last_seq + 1:
                        out_of_order += 1
                    received += 1
                    last_seq = seq
                    if seq >= total:
                        break
                stats = attrs.asdict(subscription.stats)
        report: dict[str, float] = {
            **subscriber_counts(received, received, 0, out_of_order),
            **subscriber_span((first_seq, last_seq), (t_first, t_last), cpu_first, received),
        }
        report.update(stats)
        return report

    print(json.dumps(trio.run(run)), flush=True)


def mini_daemon_config(ctx: Context, tag: str, tls: bool = False) -> DaemonConfig:
    """The daemon's events actor and API server, in this process: enough for Ping, Events and pub/sub.

    Both streams are published, as by the daemon; the subscribers pick theirs. With ``tls``, the
    API and both streams also listen on tls+tcp://127.0.0.1, as the daemon's do.
    """
    remote: dict[str, Any] = {}
    if tls:
        port = free_port_run(3)
        streams = RemoteStreams(*(f"tls+tcp://127.0.0.1:{port + n}" for n in range(3)))
        remote = {
            "remote_listen": (streams.api,),
            "tls": ctx.tls_server,
            "remote_events_address": streams.events,
            "remote_events_batch_address": streams.batch,
            "remote_streams": (streams,),
        }
    return DaemonConfig(
        id="bench-api",
        debug=False,
        state_dir=ctx.workdir,
        concurrency=1,
        metrics_interval=0,
        listen=f"ipc://{ctx.workdir / f'api-{tag}.sock'}",
        events_address=f"ipc://{ctx.workdir / f'events-{tag}.sock'}",
        events_batch_address=f"ipc://{ctx.workdir / f'batch-{tag}.sock'}",
        oom_notify=False,
        **remote,
    )


async def wait_until_subscribed(actor: EventsActor, subscribers: list[Subscriber]) -> None:
    """Every child says "ready" (subscribed) and the actor counts as many pipes; or one died first."""
    with trio.fail_after(SUBSCRIBERS_CONNECT_TIMEOUT_S):
        while True:
            failed = [s.failure for s in subscribers if s.failure]
            if failed:
                raise RuntimeError(f"a subscriber failed before publishing began: {failed[0]}")
            if all(s.ready.is_set() for s in subscribers):
                status: EventsStatus = await ask(actor.mailbox, GetStatus)
                if status.subscribers >= len(subscribers):
                    return
            await trio.sleep(0.05)


async def fanout_round(
    ctx: Context, mode: str, stream: str, count: int, n: int, transport: str = IPC
) -> FanoutResult:
    """A fresh journal and events actor (with the daemon's API server beside it), `count` subscriber
    processes of one kind on one stream, and `n` drafts fed through the actor's mailbox as fast as it
    takes them. Over ``TLS`` the subscribers (and their gap filling) use the tls+tcp listeners."""
    result = FanoutResult(mode, stream, count, n, transport)
    tag = f"{mode}-{stream}-{count}-{'tls' if transport == TLS else 'ipc'}"
    config = mini_daemon_config(ctx, tag, tls=transport == TLS)
    # As the daemon wires them: the events actor journals every event, then publishes it and tells a
    # metrics actor; the API server answers Ping and Events (gap filling) from the events actor.
    metrics = MetricsActor(flush_interval=0)
    journal = EventJournal(ctx.workdir / f"journal-{tag}")
    actor = events_actor(config, journal, metrics.mailbox)
    supervisor, _unused = trio.open_memory_channel[Any](0)  # no container requests in this part
    server = ApiServer(config, supervisor, actor.mailbox, metrics.mailbox)
    batched = "1" if stream == BATCH else "0"
    tls_args: list[str] = []
    if transport == TLS:
        assert ctx.tls_client is not None
        tls_args = [str(ctx.tls_client.cert), str(ctx.tls_client.key), str(ctx.tls_client.ca)]
    if mode == RAW:
        if transport == TLS:
            address = config.remote_events_batch_address if stream == BATCH else config.remote_events_address
        else:
            address = config.events_batch_address if stream == BATCH else config.events_address
        assert address is not None
        argv = child_argv(
            subscriber_child,
            *(address, str(n), str(SUBSCRIBER_IDLE_TIMEOUT_MS), batched, *tls_args),
            helpers=SUBSCRIBER_HELPERS,
        )
    else:
        api = config.remote_listen[0] if transport == TLS else config.listen
        argv = child_argv(
            lossless_subscriber_child,
            *(api, str(n), str(LOSSLESS_TIMEOUT_S), batched, *tls_args),
            helpers=SUBSCRIBER_HELPERS,
        )
    subscribers = [Subscriber(argv, ctx.workdir / f"subscribers-{tag}.log") for _ in range(count)]
    async with trio.open_nursery() as nursery:
        await nursery.start(metrics.run)
        await nursery.start(actor.run)
        await nursery.start(server.run)
        async with trio.open_nursery() as children:
            for subscriber in subscribers:
                children.start_soon(subscriber.run)
            await wait_until_subscribed(actor, subscribers)
            draft = EventDraft(type=EventType.EXIT, id="bench", pid=1, status=0)
            cpu_before, ticks_before = own_cpu_s(), machine_ticks()
            result.t_publish = time.monotonic()
            for _ in range(n):
                await actor.mailbox.send(draft)
            # The mailbox is first in, first out: once this is answered, every draft has been published.
            await ask(actor.mailbox, GetStatus)
            result.publish_s = time.monotonic() - result.t_publish
            result.publisher_cpu_s = own_cpu_s() - cpu_before
            result.machine_busy = busy_fraction(ticks_before, machine_ticks())
        result.delivery_s = time.monotonic() - result.t_publish
        nursery.cancel_scope.cancel()
    for subscriber in subscribers:
        if line := subscriber.report_line():
            result.reports.append(SubscriberReport.from_json(line))
        if subscriber.failure:
            result.problems.append(subscriber.failure)
    return result


async def events_part(ctx: Context) -> list[FanoutResult]:
    args = ctx.args
    streams = [BATCH, PER_EVENT] if args.stream == "both" else [args.stream]
    tls_counts = [] if ctx.tls_client is None else [c for c in args.tls_subscribers if c > 0]
    rounds = []
    for stream in streams:
        rounds += [(RAW, stream, count, args.events, IPC) for count in args.subscribers]
        # The tls+tcp column: the same round again right after the ipc one, on the tls+tcp streams.
        rounds += [(RAW, stream, count, args.events, TLS) for count in tls_counts]
        n = lossless_events(args, stream)
        rounds += [(LOSSLESS, stream, count, n, IPC) for count in args.lossless_subscribers]
        rounds += [(LOSSLESS, stream, count, n, TLS) for count in tls_counts]
    results = []
    for mode, stream, count, n, transport in rounds:
        await quiet(f"fan-out ({mode} {stream}, {count} subscribers, {transport})")
        result = await fanout_round(ctx, mode, stream, count, n, transport)
        delivered = [result.delivered_per_s(r) for r in result.reports]
        lost = [result.lost(r) for r in result.reports]
        deciles = statistics.quantiles(delivered, n=10) if len(delivered) > 1 else delivered
        progress(
            f"fan-out {mode} {stream} to {count} over {transport}: published {result.published_per_s:,.0f}/s,"
            f" delivered per subscriber p50 {median(delivered):,.0f}/s"
            f" (min {min(delivered, default=0):,.0f}, p10 {deciles[0] if deciles else 0:,.0f}),"
            f" lost p50 {median(lost):,.0f} of {n}"
        )
        results.append(result)
    return results


# --- running -----------------------------------------------------------------------------------------------


@attrs.define
class Results:
    latency: LatencyResults | None = None
    starts: StartRounds | None = None
    actr: ActrResults | None = None
    fanout: list[FanoutResult] = attrs.Factory(list)
    load_before: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    load_after: tuple[float, float, float] = (math.nan, math.nan, math.nan)


async def run_parts(ctx: Context) -> Results:
    """Latency first (on an idle daemon), fan-out next, and last the part that leaves 1000 containers."""
    args = ctx.args
    # Container inits orphaned by the stopped daemon are re-parented to us, to be reaped by pid.
    become_child_subreaper()
    results = Results(load_before=os.getloadavg())
    if not args.skip_tls:
        make_certificates(ctx)
    try:
        if not args.skip_latency:
            results.latency = await latency_part(ctx)
            if not args.skip_tls:
                results.starts = await starts_part(ctx)
        if not args.skip_events:
            results.fanout = await events_part(ctx)
        if not args.skip_actr:
            results.actr = await actr_part(ctx)
    finally:
        with trio.CancelScope(shield=True):
            await stop_children(ctx)
            await retire_daemon(ctx)
    results.load_after = os.getloadavg()
    return results


async def run_until_interrupted(ctx: Context) -> Results | None:
    """Run the parts until done or interrupted (see benchlib.run_cancelled_by_signals)."""

    def interrupted() -> None:
        ctx.interrupted = True

    return await run_cancelled_by_signals(
        lambda: run_parts(ctx), None, interrupted, "cleaning up what was started"
    )


# --- report --------------------------------------------------------------------------------------------


def ms(seconds: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.{digits}f} ms"


def us(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    return f"{seconds * 1e6:.{1 if seconds < 1e-5 else 0}f} µs"


def ratio(a: float, b: float) -> str:
    return "n/a" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}x"


def verdict(ok: bool, target: str) -> str:
    return f"{target}: {'met' if ok else 'MISSED'}"


def median_max(values: Sequence[float]) -> str:
    return f"{ms(median(values), 0)} (max {ms(max(values), 0)})" if values else "n/a"


class Rows:
    """The report's one table, with the tls+tcp column beside the ipc one.

    Rows are added as before, (label, containerd-actors over ipc, reference, ratio, target), and a
    row's tls+tcp cell by keyword: its value over tls+tcp, its ratio to ipc, and the issue's goal.
    """

    def __init__(self, table: Table) -> None:
        self.table = table

    def add_row(
        self,
        label: str,
        value: str = "",
        reference: str = "",
        ratio: str = "",
        target: str = "",
        *,
        tls: str = "",
    ) -> None:
        self.table.add_row(label, value, tls, reference, ratio, target)

    def add_section(self) -> None:
        self.table.add_section()


def tls_cell(value: str, tls: float, ipc: float, goal: str | None = None, ok: bool = True) -> str:
    """A tls+tcp cell: the value, its ratio to ipc, and whether the goal was met (short: it shares
    the row with the ipc value and its reference)."""
    cell = f"{value} {ratio(tls, ipc)}"
    return cell if goal is None else f"{cell} {'met' if ok else 'MISSED'} {goal}"


def latency_rows(table: Rows, latency: LatencyResults, clients: int) -> None:
    goal = f"<= {TARGET_TLS_REQUEST_RATIO}x"
    for mode in (SEQUENTIAL, CONCURRENT):
        daemon, sync, trio_echo = (latency[mode, name] for name in (DAEMON, ECHO_SYNC, ECHO_TRIO))
        remote = latency.get((mode, DAEMON_TLS))
        label = "sequential" if mode == SEQUENTIAL else f"{clients} tasks"
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            d, s, t = daemon.p(q), sync.p(q), trio_echo.p(q)
            target = verdict(d <= TARGET_PING_RATIO * s, f"<= {TARGET_PING_RATIO}x") if q == 0.5 else ""
            tls = ""
            if remote is not None:
                r = remote.p(q)
                tls = tls_cell(ms(r, 3), r, d, goal if q == 0.5 else None, r <= TARGET_TLS_REQUEST_RATIO * d)
            table.add_row(
                f"Ping {name}, {label}", ms(d, 3), f"{ms(s, 3)} bare echo", ratio(d, s), target, tls=tls
            )
            table.add_row("  against the trio echo", "", f"{ms(t, 3)} trio echo", ratio(d, t), "")
        table.add_row(
            "  requests/s",
            f"{daemon.per_second:,.0f}",
            f"{sync.per_second:,.0f} / {trio_echo.per_second:,.0f}",
            ratio(sync.per_second, daemon.per_second) + " slower",
            "",
            tls=""
            if remote is None
            else tls_cell(f"{remote.per_second:,.0f}", remote.per_second, daemon.per_second),
        )
        for side in ("server", "client"):
            d, s, t = (
                getattr(timings, f"{side}_cpu_s") / timings.calls for timings in (daemon, sync, trio_echo)
            )
            tls = ""
            if remote is not None:
                r = getattr(remote, f"{side}_cpu_s") / remote.calls
                tls = tls_cell(us(r), r, d)
            table.add_row(f"  {side} CPU/request", us(d), f"{us(s)} / {us(t)}", ratio(d, s), "", tls=tls)


def starts_rows(table: Rows, starts: StartRounds, n: int, clients: int) -> None:
    ipc, tls = median(starts.rates.get(IPC, [])), median(starts.rates.get(TLS, []))
    rounds = " / ".join(f"{x:.1f}" for x in starts.rates.get(IPC, []))
    tls_rounds = " / ".join(f"{x:.1f}" for x in starts.rates.get(TLS, []))
    table.add_row(
        f"starts/s ({n} a round, {clients} tasks)",
        f"{ipc:.1f}/s",
        f"rounds ipc {rounds}; tls {tls_rounds}",
        "",
        f"{len(starts.errors)} failed",
        tls=tls_cell(
            f"{tls:.1f}/s",
            tls,
            ipc,
            f">= {1 / TARGET_TLS_REQUEST_RATIO:.2f}x",
            tls * TARGET_TLS_REQUEST_RATIO >= ipc,
        ),
    )


def actr_rows(table: Rows, actr: ActrResults) -> None:
    n = actr.started
    rate = n / actr.start_wall_s if actr.start_wall_s else math.nan
    table.add_row(
        "containers started (100 tasks)",
        f"{n} in {actr.start_wall_s:.1f} s",
        f"{rate:.0f}/s",
        "",
        f"{len(actr.start_errors)} failed",
    )
    table.add_row("python -c pass, wall", median_max(actr.python_start.walls), "interpreter floor", "", "")
    table.add_row("actr --version, wall", median_max(actr.actr_version.walls), "imports, no request", "", "")
    table.add_row("actr containers, 0 running, wall", median_max(actr.actr_empty.walls), "", "", "")
    table.add_row(
        f"State in-process, {n} running",
        median_max(actr.state_latencies),
        f"daemon CPU {ms(actr.daemon_cpu_per_state_s)}",
        "",
        "",
    )
    empty = median(actr.actr_empty.walls)
    for label, timings in (
        (f"actr containers, {n} running", actr.actr_table),
        ("actr --json containers", actr.actr_json),
    ):
        walls = timings.walls
        ok = bool(walls) and median(walls) <= TARGET_ACTR_WALL_S and not timings.problems
        table.add_row(
            f"{label}, wall",
            median_max(walls),
            f"{ms(empty, 0)} with 0 running",
            ratio(median(walls), empty),
            verdict(ok, f"<= {TARGET_ACTR_WALL_S * 1000:.0f} ms (median)"),
        )
        table.add_row("  time to first byte", median_max(timings.first_bytes), "", "", "")


def fanout_rows(table: Rows, fanout: Sequence[FanoutResult]) -> None:
    """One block of rows per round; a tls+tcp round fills the tls+tcp column of its ipc twin's rows."""
    twins = {(r.mode, r.stream, r.subscribers): r for r in fanout if r.transport == TLS}
    has_twin = {(r.mode, r.stream, r.subscribers) for r in fanout if r.transport == IPC}
    for result in fanout:
        key = (result.mode, result.stream, result.subscribers)
        if result.transport == TLS and key in has_twin:
            continue  # shown in its ipc twin's rows
        twin = twins.get(key) if result.transport == IPC else None
        k, lossless = result.subscribers, result.mode == LOSSLESS
        over = " over tls+tcp" if result.transport == TLS else ""
        table.add_row(
            f"{result.mode} {result.stream}{over}, {k} sub{'' if k == 1 else 's'},"
            f" {result.events // 1000}k events: published",
            f"{result.published_per_s:,.0f}/s",
            f"publisher CPU {us(result.publisher_cpu_s / result.events)}/event",
            "",
            f"machine {100 * result.machine_busy:.0f}% busy",
            tls=""
            if twin is None
            else tls_cell(f"{twin.published_per_s:,.0f}/s", twin.published_per_s, result.published_per_s),
        )
        if k == 0:
            continue
        delivered = [result.delivered_per_s(r) for r in result.reports]
        lost = [result.lost(r) for r in result.reports]
        lossless_count = sum(1 for x in lost if x == 0)
        target = ""
        if k == TARGET_EVENTS_SUBSCRIBERS:
            ok = len(delivered) == k and min(delivered) >= TARGET_EVENTS_PER_S and lossless_count == k
            target = verdict(ok, f">= {TARGET_EVENTS_PER_S:,.0f}/s each, 0 loss")
        tls_delivered = tls_loss = ""
        if twin is not None:
            remote = [twin.delivered_per_s(r) for r in twin.reports]
            r, d = median(remote), median(delivered)
            tls_delivered = tls_cell(
                f"{r:,.0f}/s", r, d, f">= {TARGET_TLS_FANOUT_RATIO}x", r >= TARGET_TLS_FANOUT_RATIO * d
            )
            remote_lost = [100 * twin.lost(x) / twin.events for x in twin.reports]
            if remote_lost:
                tls_loss = f"{median(remote_lost):.1f}% ({max(remote_lost):.1f}%)"
        table.add_row(
            "  delivered/subscriber p50 (min)",
            f"{median(delivered):,.0f}/s ({min(delivered, default=0):,.0f})" if delivered else "n/a",
            f"{sum(delivered):,.0f}/s in total",
            ratio(median(delivered), result.published_per_s) + " of published",
            target,
            tls=tls_delivered,
        )
        loss_pct = [100 * x / result.events for x in lost]
        gaps = median([r.gaps for r in result.reports])
        table.add_row(
            "  loss after gap filling p50 (max)" if lossless else "  raw loss/subscriber p50 (max)",
            f"{median(loss_pct):.1f}% ({max(loss_pct, default=math.nan):.1f}%)" if lost else "n/a",
            f"{lossless_count}/{k} lossless, {gaps:,.0f} gaps p50",
            "",
            "" if lossless else "nng alone, no gap filling",
            tls=tls_loss,
        )
        if lossless:
            replayed = median([r.subscription.replayed / r.unique for r in result.reports if r.unique])
            table.add_row(
                "  replayed from journal p50",
                f"{100 * replayed:.0f}%",
                f"{median([r.subscription.pages for r in result.reports]):,.0f} Events pages p50",
                "",
                f"all delivered after {result.delivery_s:.1f} s",
            )
        frames = sum(r.received for r in result.reports)
        batches = sum(r.subscription.batches for r in result.reports)
        live_events = sum(r.subscription.live if lossless else r.received for r in result.reports)
        table.add_row(
            "  subscriber CPU/event",
            us(sum(r.cpu_s for r in result.reports) / frames) if frames else "n/a",
            f"{len(result.reports)}/{k} reported",
            "",
            f"{live_events / batches:,.0f} live events per batch" if batches else "",
        )


def machine_line(results: Results) -> str:
    runc = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout.splitlines()
    load = " -> ".join(f"{r[0]:.2f}" for r in (results.load_before, results.load_after))
    return (
        f"{os.cpu_count()} CPUs, Linux {platform.release()}, {runc[0] if runc else 'runc ?'},"
        f" pynng {pynng.__version__}, trio {trio.__version__}; load average (1 min) {load}"
    )


def report(args: argparse.Namespace, results: Results) -> None:
    console = Console(width=None if sys.stdout.isatty() else 180, highlight=False)
    console.print(machine_line(results))
    if results.latency is not None:
        console.print(
            f"Round trips: {args.requests} per server and mode after {WARM_UP_CALLS} unmeasured,"
            f" in {args.blocks} blocks rotating daemon / bare echo (sync Rep0) / trio echo"
            f" (Rep0, one task per context, {WORKER_CONTEXTS} contexts). Daemon = `await client.ping()`;"
            " echoes = a context per call, the Ping's bytes back. Block p50s, ms:"
        )
        for mode in (SEQUENTIAL, CONCURRENT):
            line = "; ".join(
                f"{name} " + " ".join(f"{x * 1e3:.3f}" for x in results.latency[mode, name].block_p50s)
                for name in (DAEMON, ECHO_SYNC, ECHO_TRIO)
            )
            console.print(f"  {mode}: {line}")
    if results.fanout:
        console.print(
            "Fan-out: EventDrafts fed to an in-process EventsActor (journal, metrics and the daemon's API"
            " server beside it). Subscribers are separate processes. raw: a bare pynng Sub0 (default"
            " buffers) counting events, no gap filling. lossless: `Client.subscribe()`, which fills every"
            " gap from the journal with Events requests. batch: the EventBatch stream (many events a"
            " message); per-event: one message per event. Delivered/s = distinct events / (its last event -"
            " first publish)."
        )
    if not args.skip_tls:
        console.print(
            "tls+tcp column: the same daemon (or events actor) over mutual TLS on 127.0.0.1, measured in the"
            " same run as ipc (Pings in the same rotating blocks; start rounds ipc, tls, tls, ipc; each"
            " fan-out round again on the tls+tcp streams, gap filling through the tls+tcp API)."
            f" Goals: requests <= {TARGET_TLS_REQUEST_RATIO}x ipc, fan-out >= {TARGET_TLS_FANOUT_RATIO}x."
        )
    table = Table(title="bench_api (medians unless stated)", box=box.SIMPLE_HEAD)
    table.add_column("", no_wrap=True)
    table.add_column("containerd-actors (ipc)", justify="right")
    table.add_column("tls+tcp", justify="right")
    table.add_column("reference", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("target")
    rows = Rows(table)
    if results.latency is not None:
        latency_rows(rows, results.latency, args.clients)
        if results.starts is not None:
            starts_rows(rows, results.starts, args.tls_starts, args.clients)
        table.add_section()
    if results.actr is not None:
        actr_rows(rows, results.actr)
        table.add_section()
    if results.fanout:
        fanout_rows(rows, results.fanout)
    console.print(table)
    problems: list[str] = []
    if results.actr is not None:
        for name, timings in (
            ("python -c pass", results.actr.python_start),
            ("actr --version", results.actr.actr_version),
            ("actr containers (0)", results.actr.actr_empty),
            ("actr containers", results.actr.actr_table),
            ("actr --json containers", results.actr.actr_json),
        ):
            problems += [f"{name}: {problem}" for problem in timings.problems[:3]]
        problems += [f"start: {error}" for error in results.actr.start_errors[:3]]
    if results.starts is not None:
        problems += [f"start round: {error}" for error in results.starts.errors[:3]]
    for result in results.fanout:
        problems += [
            f"fan-out {result.mode} {result.stream} {result.subscribers} {result.transport}: {p}"
            for p in result.problems[:3]
        ]
    for problem in problems:
        print(f"problem: {problem}")


# --- main ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    starts = not args.skip_tls and not args.skip_latency
    if os.geteuid() != 0 and (not args.skip_actr or starts):
        print(
            "bench_api: the actr and start parts start containers with runc, which needs root",
            file=sys.stderr,
        )
        print("           (run as root, or pass --skip-actr --skip-tls)", file=sys.stderr)
        return 1
    # IPC socket paths must stay under ~107 bytes, so a short directory directly in /tmp.
    ctx = Context(args, Path(tempfile.mkdtemp(prefix="cba-", dir="/tmp")))
    results: Results | None = None
    try:
        results = trio.run(run_until_interrupted, ctx)
    finally:
        for problem in sweep_leftovers(ctx.daemons, ctx.runc_roots, ctx.children):
            progress(f"cleanup: {problem}")
        pids = ", ".join(str(p.pid) for p in [*(d.process for d in ctx.daemons), *ctx.children]) or "none"
        progress(f"cleanup: {len(ctx.runc_roots)} runc roots emptied; processes stopped (pids {pids})")
        remove_workdir(ctx.workdir, args.keep_logs)
    if ctx.interrupted or results is None:
        return 130
    report(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
