#!/usr/bin/env python3
"""Chaos: K cycles of mixed load against a real daemon, each cut short by a SIGKILL; does it stay true?

    .venv/bin/python scripts/chaos.py [-k 20] [--seed N] [--keep-logs]

One cycle is a burst of concurrent requests through the client library: starts (of ``sleep``
inits and of inits that exit 3 at once), execs (``sleep``, and ``sh -c 'exit 5'``), kills of
exec'd processes (SIGTERM or SIGKILL) and of inits (SIGKILL), a pause and resume, and a CRIU
checkpoint (left running in even cycles; with ``exit`` and then restored under the same id in odd
ones) where ``criu check`` passes, else skipped with CRIU's reason. The dump is the slowest request,
so a kill within the burst nearly always cuts it: in half of the cycles it runs just before the
burst, so that completed dumps and restores are exercised too. At a random moment of the burst
(after a random number of replies) the API server is killed with SIGKILL and the reaper restarts
it; every fifth cycle the whole daemon tree (reaper and server) is killed instead, a few processes
are killed by pid while nothing of the daemon runs, and a new daemon is started on the same state
directory.

Once the daemon serves again, the script checks, polling until they hold or a deadline passes:

- orphans (in ``runc --root <state>/runc list``, not in State) and ghosts (the reverse);
- unlisted processes (in ``runc ps``, not in State's processes of that container) and ghost
  processes (the reverse);
- lost exits: a pid a client was given that is neither listed nor has an ``exit`` event;

and then, from the whole journal (every page of ``Events``):

- seq gaps: seqs missing between the first available event and the last;
- made-up statuses: an exit status for a process that was alive when its reaper died (nobody
  could see it exit), or a status other than the one it must have (128+N for a kill by signal N,
  3 or 5 for the self-exiting ones);
- lost statuses: a null status for a process that died while its reaper ran and was untouched
  by a kill of the tree;
- the fds and RSS of the API server and of the reaper, against the bounds below.

Each problem is counted once, in the cycle that found it. It prints one table (a row per cycle,
then totals) on stdout; progress goes to stderr, what the load did to ``ops.log`` in the work dir.
The exit status is 0 only if every count is 0 and every sample is within its bound; otherwise the
work dir (state dir, daemon log, ops.log) is kept and its path printed.

Everything it starts is cleaned up by pid or container id (also on Ctrl-C): the daemon is stopped
by its pid, the containers left under its private runc root are deleted by id, and the script is
a child subreaper, so the processes that a killed daemon tree leaves behind become its children
and are reaped by pid as they die (a pid namespace's init finishes dying only once every process
of its namespace is reaped, and this host's pid 1 reaps nothing).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs
import trio

SCRIPTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS_DIR.parent))
sys.path.insert(0, str(SCRIPTS_DIR))

from benchlib import (  # noqa: E402
    own_children,
    progress,
    remove_workdir,
    rss_kib,
    run_cancelled_by_signals,
)
from support.bundles import make_bundle  # noqa: E402
from support.daemon import (  # noqa: E402
    DaemonHandle,
    force_delete_argv,
    remove_containers,
    runc_containers,
    start_daemon,
    stop_daemon,
    unique_id,
)

from containerd_actors import protocol as wire  # noqa: E402
from containerd_actors.client import Client, ClientError  # noqa: E402
from containerd_actors.host.reaping import become_child_subreaper  # noqa: E402
from containerd_actors.protocol import EventType  # noqa: E402

#: Every fifth cycle kills the whole tree (reaper and server) instead of the server alone.
TREE_EVERY = 5
SLEEP_STARTS = 6
EXITING_STARTS = 2
SLEEP_EXECS = 4
EXITING_EXECS = 2
EXEC_KILLS = 2
INIT_KILLS = 3
PAUSES = 1
#: Processes killed by pid while the whole tree is down (their exits nobody can observe).
DOWNTIME_KILLS = 2
INIT_EXIT_CODE = 3
EXEC_EXIT_CODE = 5
#: How long the daemon may take to come back and agree with runc; far above what it needs.
SETTLE_S = 30.0
CLIENT_TIMEOUT_S = 90.0
#: Bounds on the daemon's processes. The fds grow with the processes they track (pipes, pidfds,
#: logs), so the bound is a base plus an allowance per tracked process.
SERVER_FDS_BASE, SERVER_FDS_PER_PROCESS = 96, 12
REAPER_FDS_BASE, REAPER_FDS_PER_PROCESS = 32, 6
SERVER_RSS_MIB = 256
REAPER_RSS_MIB = 64

ANY = -1  # an expected status meaning: some status, whichever (a CRIU dump's end)


@attrs.define
class Proc:
    """A process a client was given (or one the daemon listed that the script did not start)."""

    cid: str
    pid: int
    exec: bool
    #: The daemon tree (0, 1, ...) whose reaper was its parent; None when not sure which.
    tree: int | None
    #: The statuses its exit may carry, filled as it is killed or told to exit.
    expected: set[int] = attrs.field(factory=set)
    #: True once it died (or was told to) in a way its reaper saw for sure; False once it was
    #: alive when its reaper died; None while undecided.
    seen: bool | None = None
    #: A kill whose reply was lost, or a death that raced a kill of the tree: any of the
    #: expected statuses, or null.
    maybe: bool = False
    paused: bool = False
    #: What the script did to it, for the report of a failed check.
    history: list[str] = attrs.field(factory=list)


@attrs.define
class Row:
    cycle: int
    kind: str
    killed_after: str
    seconds: float = 0.0
    orphans: int = 0
    ghosts: int = 0
    unlisted: int = 0
    ghost_procs: int = 0
    lost_exits: int = 0
    seq_gaps: int = 0
    made_up: int = 0
    lost_statuses: int = 0
    server_fds: int = 0
    server_rss: float = 0.0
    reaper_fds: int = 0
    reaper_rss: float = 0.0
    over_bounds: int = 0
    failed_requests: int = 0
    checkpoints: int = 0

    COUNTS = ("orphans", "ghosts", "unlisted", "ghost_procs", "lost_exits", "seq_gaps", "made_up",
              "lost_statuses", "over_bounds")  # fmt: skip


def server_pid(handle: DaemonHandle) -> int | None:
    try:
        return int((handle.state_dir / "server.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def runc_ps(runc_root: Path, cid: str) -> set[int] | None:
    result = subprocess.run(
        ["runc", "--root", str(runc_root), "ps", "--format", "json", cid], capture_output=True, text=True
    )
    if result.returncode != 0:
        return None  # being deleted as we look: the next poll decides
    return set(json.loads(result.stdout or "null") or [])


def reap_adopted_zombies(keep: set[int]) -> int:
    """Reap, by pid, the dead children the kernel gave us as the subreaper (inits and runc calls
    of a killed tree, its server), never one of trio's own (``keep``)."""
    reaped = 0
    for pid, state, _command in own_children():
        if state == "Z" and pid not in keep:
            try:
                os.waitpid(pid, 0)
                reaped += 1
            except ChildProcessError:
                pass
    return reaped


#: Parallel ``runc delete --force`` calls at the end (each sleeps >= 100 ms in runc).
DELETE_CONCURRENCY = 8
#: How long deletes that failed (an init still waiting for its namespace) are tried again.
DELETE_DEADLINE_S = 60.0


def delete_all(runc_root: Path) -> None:
    """``runc delete --force`` every container left, by id, a few at a time, reaping meanwhile
    (an init waits for its namespace's processes to be reaped, and we are their parent)."""
    pending = [cid for cid, _pid in runc_containers(runc_root)]
    running: list[subprocess.Popen] = []
    deadline = time.monotonic() + DELETE_DEADLINE_S
    while True:
        if not pending and not running:
            # Listed again: a delete that failed (an init still dying) is tried once more.
            pending = [cid for cid, _pid in runc_containers(runc_root)]
            if not pending or time.monotonic() > deadline:
                return
        while pending and len(running) < DELETE_CONCURRENCY:
            running.append(
                subprocess.Popen(
                    force_delete_argv(runc_root, pending.pop()),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,  # a second Ctrl-C does not stop the cleanup
                )
            )
        running = [p for p in running if p.poll() is None]
        reap_adopted_zombies({p.pid for p in running})
        time.sleep(0.05)  # polling the deletes; this is the cleanup, not the measurement


class Chaos:
    def __init__(self, top: Path, cycles: int, rng: random.Random, criu: str | None) -> None:
        self.top = top
        self.state_dir = top / "state"
        self.cycles = cycles
        self.rng = rng
        self.criu_reason = criu  # None: checkpoints run
        self.handle: DaemonHandle | None = None
        self.handles: list[DaemonHandle] = []
        self.tree = 0
        self.reaped = 0
        #: Checkpoints that completed (with ``exit``: and were restored) in the current cycle.
        self.rows_pending_checkpoints = 0
        self.procs: dict[tuple[str, int], Proc] = {}
        self.bundles: dict[str, Path] = {}
        self.rows: list[Row] = []
        self.journal_ids: set[str] = set()
        #: Problems reported already (by kind and key), and the exit events judged already.
        self.reported: set[tuple] = set()
        self.judged: set[int] = set()
        self.notes: list[str] = []
        self.failures: list[str] = []

    def log(self, line: str) -> None:
        """What the load did, in order, to ``ops.log`` in the work dir (kept when a check fails)."""
        with open(self.top / "ops.log", "a") as file:
            file.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    # ------------------------------------------------------------------ model

    def inits(self) -> list[Proc]:
        return [p for p in self.procs.values() if not p.exec]

    def alive(self, proc: Proc) -> bool:
        return not proc.expected and not proc.maybe

    def alive_sleep_containers(self) -> list[Proc]:
        """Inits still running ``sleep`` (not killed, not told to exit, not paused)."""
        return [p for p in self.inits() if self.alive(p) and not p.paused and p.tree is not None]

    def execs_of(self, cid: str) -> list[Proc]:
        return [p for p in self.procs.values() if p.exec and p.cid == cid]

    def died(self, proc: Proc, status: int, sure: bool, tree_cycle: bool) -> None:
        """``proc`` is dying with ``status`` (or may be); its exec'd processes die with it."""
        proc.history.append(f"dying with {status} ({'sure' if sure else 'maybe'}, tree cycle {tree_cycle})")
        proc.expected.add(status)
        # A process alive when its reaper died (seen False) stays unobservable whatever comes.
        if not sure or tree_cycle:
            proc.maybe = True
        elif proc.seen is None and proc.tree == self.tree:
            proc.seen = True
        if not proc.exec:
            for child in self.execs_of(proc.cid):
                self.died(child, 128 + signal.SIGKILL, sure, tree_cycle)

    def surely(self, proc: Proc, tree_cycle: bool) -> None:
        """A kill marked as maybe (before it was sent) was answered: its reaper saw the death,
        unless a kill of the tree raced it."""
        if tree_cycle or proc.seen is not None or proc.tree != self.tree:
            return
        proc.maybe, proc.seen = False, True
        if not proc.exec:
            for child in self.execs_of(proc.cid):
                self.surely(child, tree_cycle)

    def tree_died(self) -> None:
        """Every process not yet known dead was alive when its reaper died: no status is observable."""
        for proc in self.procs.values():
            if proc.tree == self.tree and proc.seen is None and not proc.expected:
                proc.seen = False

    # ------------------------------------------------------------------ load

    async def run(self) -> None:
        become_child_subreaper()
        self.bundles["sleep"] = make_bundle(self.top / "bundle-sleep", ["sleep", "1000000"])
        self.bundles["exit"] = make_bundle(self.top / "bundle-exit", ["sh", "-c", f"exit {INIT_EXIT_CODE}"])
        self.handle = await start_daemon(self.state_dir, log_path=self.top / "daemon.log", own_session=True)
        self.handles.append(self.handle)
        async with (
            Client.connect(self.handle.address, timeout=CLIENT_TIMEOUT_S) as client,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self.reap_meanwhile)
            for cycle in range(1, self.cycles + 1):
                await self.cycle(client, cycle)
            nursery.cancel_scope.cancel()

    async def reap_meanwhile(self) -> None:
        """Reap what a killed tree left to us, as it dies: the init of a pid namespace finishes
        dying only once every process of the namespace is reaped, and after a kill of the tree
        the script is the parent of the exec'd processes (pid 1 here reaps nothing)."""
        while True:
            self.reaped += reap_adopted_zombies({h.pid for h in self.handles})
            await trio.sleep(0.1)

    async def cycle(self, client: Client, cycle: int) -> None:
        tree_cycle = cycle % TREE_EVERY == 0
        began = time.monotonic()
        ops: list = []
        ahead: list = []
        busy: set[str] = set()
        pool = self.alive_sleep_containers()
        self.rng.shuffle(pool)

        def take(predicate=lambda p: True) -> Proc | None:
            for p in pool:
                if p.cid not in busy and predicate(p):
                    busy.add(p.cid)
                    return p
            return None

        for n in range(SLEEP_STARTS):
            ops.append(("start", unique_id(f"s{cycle}-{n}"), "sleep"))
        for n in range(EXITING_STARTS):
            ops.append(("start", unique_id(f"x{cycle}-{n}"), "exit"))
        if self.criu_reason is None:
            target = take(lambda p: not self.execs_of(p.cid))
            if target is not None:
                # The dump is the slowest request, so a kill inside the burst nearly always cuts
                # it: in half of the cycles it runs (and restores) before the burst instead.
                (ahead if cycle % 4 in (1, 2) else ops).append(("checkpoint", target, cycle % 2 == 1))
        for _ in range(PAUSES):
            target = take()
            if target is not None:
                ops.append(("pause", target))
        for _ in range(INIT_KILLS):
            target = take()
            if target is not None:
                ops.append(("kill", target, signal.SIGKILL))
        live_execs = [
            p for p in self.procs.values()
            if p.exec and self.alive(p) and p.cid not in busy and p.tree is not None
        ]  # fmt: skip
        self.rng.shuffle(live_execs)
        for target in live_execs[:EXEC_KILLS]:
            ops.append(("kill", target, self.rng.choice([signal.SIGTERM, signal.SIGKILL])))
        exec_hosts = [p for p in pool if p.cid not in busy] or pool[:0]
        for n in range(SLEEP_EXECS + EXITING_EXECS):
            if exec_hosts:
                ops.append(("exec", self.rng.choice(exec_hosts), n >= SLEEP_EXECS))
        self.rng.shuffle(ops)

        replies = 0
        kill_after = self.rng.randrange(0, max(1, len(ops) * 2 // 3))
        killed = trio.Event()
        row = Row(cycle, "tree" if tree_cycle else "server", "")
        row.killed_after = f"{kill_after}/{len(ops)}"

        async def kill() -> None:
            if killed.is_set():
                return
            killed.set()
            if tree_cycle:
                await self.kill_tree(busy)
            else:
                assert self.handle is not None
                victim = server_pid(self.handle)
                if victim is not None:
                    os.kill(victim, signal.SIGKILL)
                    self.log(f"server {victim} killed")
                    await self.wait_for_new_server(victim)

        async def op(spec: tuple) -> None:
            nonlocal replies
            what = " ".join(f"{x.cid}/{x.pid}" if isinstance(x, Proc) else str(x) for x in spec)
            try:
                await self.do(client, spec, cycle, tree_cycle, killed)
                self.log(f"cycle {cycle}: {what}: done")
            except ClientError as exc:
                row.failed_requests += 1
                self.log(f"cycle {cycle}: {what}: failed: {exc}")
            replies += 1
            if replies >= kill_after:
                nursery.start_soon(kill)

        for spec in ahead:
            try:
                await self.do(client, spec, cycle, tree_cycle, killed)
                self.log(f"cycle {cycle}: {spec[0]} {spec[1].cid} {spec[2]} before the burst: done")
            except ClientError as exc:
                self.failures.append(f"cycle {cycle}: {spec[0]} of {spec[1].cid} with no kill failed: {exc}")
        async with trio.open_nursery() as nursery:
            for spec in ops:
                nursery.start_soon(op, spec)
            if kill_after == 0:
                await trio.sleep(self.rng.uniform(0, 0.3))  # the moment of the kill, not a wait
                nursery.start_soon(kill)
        if not killed.is_set():
            await kill()
        await self.settle_and_check(client, row)
        await self.resume_paused(client)
        row.seconds = time.monotonic() - began
        row.checkpoints, self.rows_pending_checkpoints = self.rows_pending_checkpoints, 0
        self.rows.append(row)
        reaped, self.reaped = self.reaped, 0
        counts = " ".join(f"{name} {getattr(row, name)}" for name in Row.COUNTS if getattr(row, name))
        progress(
            f"cycle {cycle} ({row.kind} killed after {row.killed_after} replies): {row.seconds:.1f} s, "
            f"{len(self.inits())} inits / {len(self.procs)} pids given so far, reaped {reaped}; "
            f"{counts or 'all checks 0'}"
        )

    async def do(self, client: Client, spec: tuple, cycle: int, tree_cycle: bool, killed: trio.Event) -> None:
        if isinstance(spec[1], Proc):
            spec[1].history.append(f"cycle {cycle}: {spec[0]} {spec[2:]}")
        match spec:
            case ("start", cid, kind):
                tree = self.tree
                pid = await client.create_container(cid, str(self.bundles[kind]))
                # A start that outlived a kill of the tree: which reaper was its parent is unknown.
                proc = Proc(cid, pid, False, tree if tree == self.tree else None)
                self.procs[(cid, pid)] = proc
                if kind == "exit":
                    self.died(proc, INIT_EXIT_CODE, True, tree_cycle)
                elif proc.tree is None:
                    proc.maybe = True
            case ("exec", host, exits):
                args = ["sh", "-c", f"exit {EXEC_EXIT_CODE}"] if exits else ["sleep", "1000000"]
                tree = self.tree
                pid = await client.add_process(host.cid, args)
                proc = Proc(host.cid, pid, True, tree if tree == self.tree else None)
                self.procs[(host.cid, pid)] = proc
                if exits:
                    self.died(proc, EXEC_EXIT_CODE, True, tree_cycle)
                elif proc.tree is None:
                    proc.maybe = True
            case ("kill", target, signum):
                # Marked before it is sent: a kill of the tree may come while it is under way.
                self.died(target, 128 + signum, False, tree_cycle)
                await client.signal(target.cid, signum, pid=target.pid if target.exec else 0)
                self.surely(target, tree_cycle)
            case ("pause", target):
                target.paused = True
                await client.pause(target.cid)
                await trio.sleep(self.rng.uniform(0, 0.2))  # paused for a moment of the burst
                await client.resume(target.cid)
                target.paused = False
            case ("checkpoint", target, exit):
                name = f"ck{cycle}"
                if not exit:
                    await client.create_checkpoint(target.cid, name)
                    self.rows_pending_checkpoints += 1
                    return
                target.paused = True  # kept out of other operations until restored
                self.died(target, ANY, False, tree_cycle)
                await client.create_checkpoint(target.cid, name, exit=True)
                self.surely(target, tree_cycle)
                tree = self.tree
                pid = await client.create_container(target.cid, str(self.bundles["sleep"]), checkpoint=name)
                proc = Proc(target.cid, pid, False, tree if tree == self.tree else None)
                self.procs[(target.cid, pid)] = proc
                self.rows_pending_checkpoints += 1  # the dump and its restore
            case _:
                raise AssertionError(spec)

    # ------------------------------------------------------------------ kills

    async def wait_for_new_server(self, old_pid: int) -> None:
        assert self.handle is not None
        with trio.fail_after(SETTLE_S):
            while server_pid(self.handle) in (old_pid, None):
                await trio.sleep(0.05)  # the reaper's restart announces itself in server.pid

    async def kill_tree(self, busy: set[str]) -> None:
        """SIGKILL the server and the reaper, kill a few processes by pid, start a new daemon."""
        assert self.handle is not None
        victim = server_pid(self.handle)
        self.handle.process.kill()
        if victim is not None:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await self.handle.process.wait()
        self.tree_died()
        self.tree += 1
        downtime = [p for p in self.alive_sleep_containers() if p.cid not in busy]
        downtime += [p for p in self.procs.values() if p.exec and self.alive(p) and p.cid not in busy]
        self.log(f"tree {self.tree - 1} killed (reaper {self.handle.pid}, server {victim})")
        for proc in self.rng.sample(downtime, min(DOWNTIME_KILLS, len(downtime))):
            self.log(f"killed {proc.cid}/{proc.pid} by pid while the tree was down")
            try:
                os.kill(proc.pid, signal.SIGKILL)  # by the pid the daemon gave us
            except ProcessLookupError:
                pass
            proc.expected.add(128 + signal.SIGKILL)  # what it is, though nobody may say so
            proc.history.append("killed by pid while the tree was down")
            if not proc.exec:
                for child in self.execs_of(proc.cid):
                    child.expected.add(128 + signal.SIGKILL)
        self.handle = await start_daemon(self.state_dir, log_path=self.top / "daemon.log", own_session=True)
        self.handles.append(self.handle)

    # ------------------------------------------------------------------ checks

    async def settle_and_check(self, client: Client, row: Row) -> None:
        assert self.handle is not None
        runc_root = self.handle.runc_root
        with trio.fail_after(SETTLE_S):
            while True:
                try:
                    await client.ping()
                    break
                except ClientError:
                    await trio.sleep(0.1)  # the new server is getting ready
        deadline = trio.current_time() + SETTLE_S
        while True:
            listing = await client.containers()
            events = await self.journal(client, row_for_gaps=None)
            in_runc = dict(runc_containers(runc_root))
            listed = {c.id: c for c in listing}
            # What an earlier cycle reported already is not counted again (nor waited for).
            orphans = {("orphan", cid) for cid in in_runc if cid not in listed} - self.reported
            ghosts = {
                ("ghost", cid) for cid in listed if cid not in in_runc or in_runc[cid] != listed[cid].pid
            } - self.reported
            unlisted: set[tuple] = set()
            ghost_procs: set[tuple] = set()
            for cid, info in listed.items():
                if cid not in in_runc:
                    continue
                ps = runc_ps(runc_root, cid)
                if ps is None:
                    continue
                tracked = {p.pid for p in info.processes}
                unlisted |= {("unlisted", cid, pid) for pid in ps - tracked}
                ghost_procs |= {("ghost-process", cid, pid) for pid in tracked - ps}
            unlisted -= self.reported
            ghost_procs -= self.reported
            exited = {(e.id, e.pid) for e in events if e.type == EventType.EXIT}
            listed_pids = {(c.id, p.pid) for c in listing for p in c.processes}
            lost = {
                ("lost-exit", *key) for key in self.procs if key not in listed_pids and key not in exited
            } - self.reported
            found = orphans | ghosts | unlisted | ghost_procs | lost
            if not found or trio.current_time() > deadline:
                break
            await trio.sleep(0.2)  # adoptions and exits report as they go; polled with a deadline
        row.orphans, row.ghosts = len(orphans), len(ghosts)
        row.unlisted, row.ghost_procs, row.lost_exits = len(unlisted), len(ghost_procs), len(lost)
        self.reported |= found
        for kind, cid, *pid in sorted(found):
            history = self.procs[(cid, pid[0])].history if pid and (cid, pid[0]) in self.procs else []
            self.failures.append(f"cycle {row.cycle}: {kind} {cid} {' '.join(map(str, pid))} {history}")
        # Processes the daemon lists that no client was given (an exec whose reply the kill ate).
        for info in listing:
            for p in info.processes:
                if (info.id, p.pid) not in self.procs:
                    self.procs[(info.id, p.pid)] = Proc(info.id, p.pid, p.pid != info.pid, None, maybe=True)
                    self.notes.append(f"cycle {row.cycle}: {info.id} pid {p.pid} listed, never given")
        for info in listing:
            if info.status == "paused":
                for key in ((info.id, p.pid) for p in info.processes):
                    if key in self.procs and not self.procs[key].exec:
                        self.procs[key].paused = True
        await self.journal(client, row_for_gaps=row)
        self.sample(row, listing)

    async def journal(self, client: Client, row_for_gaps: Row | None) -> list[wire.Event]:
        """Every event of the journal, page by page; with a row, counts gaps and judges statuses."""
        events: list[wire.Event] = []
        next_seq = 1
        first = last = 0
        journal_id = ""
        while True:
            page = await client.events_page(from_seq=next_seq)
            journal_id = page.journal_id
            if next_seq == 1:
                first = page.first_available_seq
            events += page.events
            last = page.last_seq
            if page.next_seq > page.last_seq or not page.events:
                break
            next_seq = page.next_seq
        if row_for_gaps is None:
            return events
        row = row_for_gaps
        self.journal_ids.add(journal_id)
        seqs = [e.seq for e in events]
        expected = list(range(first, last + 1))
        gaps = {("seq-gap", seq) for seq in set(expected) - set(seqs)}
        gaps |= {("seq-twice", seq) for seq, n in collections.Counter(seqs).items() if n > 1}
        gaps -= self.reported
        row.seq_gaps = len(gaps)
        self.reported |= gaps
        if gaps:
            self.failures.append(f"cycle {row.cycle}: journal seqs {first}..{last}: {sorted(gaps)[:20]}")
        for event in events:
            if event.type != EventType.EXIT or event.seq in self.judged:
                continue
            self.judged.add(event.seq)
            proc = self.procs.get((event.id, event.pid))
            if proc is None:
                continue
            verdict = self.judge(proc, event.status)
            if verdict == "made-up":
                row.made_up += 1
            elif verdict == "lost":
                row.lost_statuses += 1
            if verdict:
                self.failures.append(
                    f"cycle {row.cycle}: {verdict} status: exit of {event.id} pid {event.pid} "
                    f"(exec {proc.exec}, tree {proc.tree}, expected {sorted(proc.expected)}, seen "
                    f"{proc.seen}, maybe {proc.maybe}) has status {event.status} ({event.reason})"
                )
        return events

    def judge(self, proc: Proc, status: int | None) -> str:
        """'' if ``status`` is a true report of ``proc``'s exit, else 'made-up' or 'lost'."""
        if status is None:
            return "lost" if proc.seen is True and not proc.maybe else ""
        if proc.seen is False:
            return "made-up"  # nobody could see it: a status can only be invented
        if not proc.expected or ANY in proc.expected or status in proc.expected:
            return ""  # no expectation (it was never killed nor told to exit): taken as reported
        return "made-up"

    def sample(self, row: Row, listing: list[wire.ContainerInfo]) -> None:
        assert self.handle is not None
        tracked = sum(len(c.processes) for c in listing)
        server, reaper = server_pid(self.handle), self.handle.pid
        if server is not None:
            row.server_fds, row.server_rss = fd_count(server), rss_kib(server) / 1024
        row.reaper_fds, row.reaper_rss = fd_count(reaper), rss_kib(reaper) / 1024
        bounds = [
            (row.server_fds, SERVER_FDS_BASE + SERVER_FDS_PER_PROCESS * tracked, "server fds"),
            (row.reaper_fds, REAPER_FDS_BASE + REAPER_FDS_PER_PROCESS * tracked, "reaper fds"),
            (row.server_rss, SERVER_RSS_MIB, "server RSS MiB"),
            (row.reaper_rss, REAPER_RSS_MIB, "reaper RSS MiB"),
        ]
        for value, bound, what in bounds:
            if value > bound:
                row.over_bounds += 1
                self.failures.append(f"cycle {row.cycle}: {what} {value:.0f} over its bound {bound}")

    async def resume_paused(self, client: Client) -> None:
        """A pause whose resume the kill ate leaves its container paused: resumed before the next cycle."""
        for info in await client.containers():
            if info.status == "paused":
                await client.resume(info.id)
                self.log(f"{info.id} was left paused: resumed")
                self.notes.append(f"{info.id} was left paused by a kill: resumed")
        for proc in self.inits():
            proc.paused = False

    # ------------------------------------------------------------------ cleanup

    async def stop(self) -> None:
        if self.handle is not None:
            code = await stop_daemon(self.handle)
            if code not in (0, None):
                progress(f"the daemon exited with {code}; its log: {self.top / 'daemon.log'}")
        for handle in self.handles:
            if handle.process.returncode is None:
                handle.process.kill()
                await handle.process.wait()
        delete_all(self.state_dir / "runc")
        remove_containers(self.state_dir / "runc")


def criu_unusable() -> str | None:
    """None if ``criu check`` passes, else why the checkpoints are skipped."""
    try:
        result = subprocess.run(["criu", "check"], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        return "criu is not installed (scripts/install-criu)"
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        return f"criu check failed: {lines[-1] if lines else 'no output'}"
    return None


def print_table(rows: list[Row]) -> None:
    head = (f"{'cycle':>5} {'kill':>6} {'after':>6} {'s':>5} {'orphans':>7} {'ghosts':>6} "
            f"{'unlisted':>8} {'ghost-p':>7} {'lost-ex':>7} {'seq-gap':>7} {'made-up':>7} {'lost-st':>7} "
            f"{'srv-fds':>7} {'srv-MiB':>7} {'rpr-fds':>7} {'rpr-MiB':>7} {'over':>4} "
            f"{'failed':>6} {'ckpt':>4}")  # fmt: skip
    print(head)
    for r in rows:
        print(
            f"{r.cycle:>5} {r.kind:>6} {r.killed_after:>6} {r.seconds:>5.1f} {r.orphans:>7} {r.ghosts:>6} "
            f"{r.unlisted:>8} {r.ghost_procs:>7} {r.lost_exits:>7} {r.seq_gaps:>7} {r.made_up:>7} "
            f"{r.lost_statuses:>7} {r.server_fds:>7} {r.server_rss:>7.1f} {r.reaper_fds:>7} "
            f"{r.reaper_rss:>7.1f} {r.over_bounds:>4} {r.failed_requests:>6} {r.checkpoints:>4}"
        )
    if not rows:
        return
    total = {name: sum(getattr(r, name) for r in rows) for name in Row.COUNTS}
    print(
        f"{'total':>5} {'':>6} {'':>6} {sum(r.seconds for r in rows):>5.0f} {total['orphans']:>7} "
        f"{total['ghosts']:>6} {total['unlisted']:>8} {total['ghost_procs']:>7} {total['lost_exits']:>7} "
        f"{total['seq_gaps']:>7} {total['made_up']:>7} {total['lost_statuses']:>7} "
        f"{max(r.server_fds for r in rows):>7} {max(r.server_rss for r in rows):>7.1f} "
        f"{max(r.reaper_fds for r in rows):>7} {max(r.reaper_rss for r in rows):>7.1f} "
        f"{total['over_bounds']:>4} {sum(r.failed_requests for r in rows):>6} "
        f"{sum(r.checkpoints for r in rows):>4}"
    )
    print(
        "(max for the fd and MiB columns; 'failed': requests the kills cut off, not counted as errors; "
        "'ckpt': checkpoints completed, a dump with exit counted with its restore)"
    )


async def chaos(cycles: int, seed: int, keep_logs: bool) -> int:
    top = Path(tempfile.mkdtemp(prefix="chaos-", dir="/tmp"))
    criu = criu_unusable()
    if criu is not None:
        progress(f"checkpoints skipped: {criu}")
    run = Chaos(top, cycles, random.Random(seed), criu)
    stopped = False
    began = time.monotonic()

    def stop() -> None:
        nonlocal stopped
        stopped = True

    try:
        await run_cancelled_by_signals(run.run, None, stop, "stopping the daemon and deleting its containers")
    finally:
        with trio.CancelScope(shield=True):
            await run.stop()
    reaped = reap_adopted_zombies(set())
    print_table(run.rows)
    print(f"{len(run.rows)} cycles in {time.monotonic() - began:.0f} s (seed {seed}); "
          f"{len(run.procs)} pids given or found; journal ids seen: {len(run.journal_ids)}; "
          f"zombies reaped at the end: {reaped}")  # fmt: skip
    for note in run.notes:
        progress(f"note: {note}")
    for failure in run.failures:
        progress(f"FAILED: {failure}")
    failed = bool(run.failures) or len(run.journal_ids) > 1 or stopped or len(run.rows) < cycles
    if failed:
        progress(f"the state dir and the daemon's log are kept in {top}")
    else:
        remove_workdir(top, keep_logs)
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", "--cycles", type=int, default=20, help="cycles (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the daemon's log in the work dir")
    args = parser.parse_args()
    if os.geteuid() != 0:
        progress("warning: not root; runc will likely refuse to create containers")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    progress(f"seed {seed}")
    raise SystemExit(trio.run(chaos, args.cycles, seed, args.keep_logs))


if __name__ == "__main__":
    main()
