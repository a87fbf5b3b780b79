"""Crash consistency: the API server killed with SIGKILL at any moment leaves no orphan and no ghost.

The reaper restarts the server; the new one waits for the runc commands the old one left
working, reconciles the records and intents with ``runc list`` under its own root, and adopts.
After that, what runc runs under the daemon's root is exactly what the daemon lists, every pid a
client was given is listed, and every process in a container is one the daemon tracks.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import trio
from support.daemon import DaemonHandle, runc_containers, start_daemon, stop_daemon, unique_id
from support.restarts import server_pid, wait_for_new_server

from containerd_actors import protocol as wire
from containerd_actors.client import Client, ClientError
from containerd_actors.daemon.container.adopt import OUTPUT_LOST_MARKER
from containerd_actors.protocol import ErrorCode, EventType
from containerd_actors.runc.driver import Runc
from containerd_actors.transport.request import RawRequestSocket

ROUNDS = 3
STARTS = 100
EXECS = 30
EXEC_CONTAINERS = 6
#: How long the daemon may take to come back and settle after a kill, far above what it takes.
SETTLE_S = 60.0


class KillAfter:
    """Kills the server with SIGKILL once ``after`` replies have come back: a moment of the burst
    chosen at random, without guessing how long a start takes on this machine."""

    def __init__(self, handle: DaemonHandle, after: int) -> None:
        self.handle = handle
        self.after = after
        self.replies = 0
        self.killed = trio.Event()
        self.victim = server_pid(handle)

    def reply_came(self) -> None:
        self.replies += 1
        if self.replies >= self.after:
            self.kill()

    def kill(self) -> None:
        if not self.killed.is_set():
            os.kill(self.victim, signal.SIGKILL)
            self.killed.set()


async def agreed_listing(client: Client, handle: DaemonHandle) -> tuple[dict[str, int], dict[str, int]]:
    """The daemon's list and runc's, once they agree (adoptions report as they go); else both, late."""
    listed: dict[str, int] = {}
    in_runc: dict[str, int] = {}
    with trio.move_on_after(SETTLE_S):
        while True:
            listed = {c.id: c.pid for c in await client.containers()}
            in_runc = dict(runc_containers(handle.runc_root))
            if listed == in_runc:
                break
            await trio.sleep(0.05)  # polling the agreement, with a deadline
    return listed, in_runc


def reaper_exits(handle: DaemonHandle) -> list[str]:
    try:
        return (handle.state_dir / "reaper-exits.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []


async def reaper_exits_drained(handle: DaemonHandle) -> bool:
    with trio.move_on_after(SETTLE_S):
        while reaper_exits(handle):
            await trio.sleep(0.05)  # acknowledgements follow the exit events, with a deadline
        return True
    return False


def leftover_intents(handle: DaemonHandle) -> list[Path]:
    return sorted((handle.state_dir / "containers").glob("*/intent-*.json"))


async def kill_all_and_wait(client: Client, handle: DaemonHandle, pids: dict[str, int]) -> None:
    """SIGKILL every init (the daemon reaps them, deletes them from runc and forgets them)."""
    for pid in pids.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    with trio.fail_after(SETTLE_S):
        while await client.containers() or runc_containers(handle.runc_root):
            await trio.sleep(0.05)  # waiting for the exits to be handled, with a deadline


async def test_kill_9_during_concurrent_starts_leaves_no_orphan_and_no_ghost(
    state_dir: Path, sleep_bundle: Path
) -> None:
    handle = await start_daemon(state_dir)
    rng = random.Random()
    report = []
    try:
        async with Client.connect(handle.address, timeout=SETTLE_S) as client:
            for round in range(ROUNDS):
                kill = KillAfter(handle, after=rng.randrange(0, STARTS * 2 // 3))
                given: dict[str, int] = {}
                failed: dict[str, str] = {}

                async def start(cid: str, kill: KillAfter = kill, given=given, failed=failed) -> None:
                    try:
                        given[cid] = await client.create_container(cid, str(sleep_bundle))
                    except ClientError as exc:
                        failed[cid] = str(exc)
                    kill.reply_came()

                began = time.monotonic()
                async with trio.open_nursery() as nursery:
                    for n in range(STARTS):
                        nursery.start_soon(start, unique_id(f"k{round}-{n}"))
                    if kill.after == 0:
                        await trio.sleep(rng.uniform(0, 0.3))  # the moment of the kill, not a wait
                        kill.kill()
                await wait_for_new_server(handle, kill.victim, timeout=SETTLE_S, ping=False)
                listed, in_runc = await agreed_listing(client, handle)
                orphans = sorted(set(in_runc) - set(listed))
                ghosts = sorted(set(listed) - set(in_runc))
                lost = sorted(cid for cid, pid in given.items() if listed.get(cid) != pid)
                report.append(
                    f"round {round}: killed after {kill.after} replies; {len(given)} pids given, "
                    f"{len(failed)} failed, {len(listed)} listed, {len(orphans)} orphans, "
                    f"{len(ghosts)} ghosts, {len(lost)} lost, {time.monotonic() - began:.1f} s"
                )
                print(report[-1])
                assert orphans == [] and ghosts == [], (orphans, ghosts)
                assert listed == in_runc  # the same containers with the same pids
                assert lost == [], {cid: (given[cid], listed.get(cid)) for cid in lost}
                assert failed == {}, failed  # the client library repeats a start it lost
                assert leftover_intents(handle) == []
                await kill_all_and_wait(client, handle, listed)
                # Every exit the reaper saw was published and released, those of the runc
                # commands the kill orphaned too: nothing piles up in reaper-exits.jsonl.
                assert await reaper_exits_drained(handle), reaper_exits(handle)
    finally:
        await stop_daemon(handle)
        print("\n".join(report))
    log = handle.log_text()
    assert log.count("reaper: the API server died") == ROUNDS
    print_reconcile_counts(log, ("left working", "recorded nothing: adopted", "created"))


def print_reconcile_counts(log: str, phrases: tuple[str, ...]) -> None:
    """What the kills caught in flight: random, so printed rather than asserted."""
    lines = [line for line in log.splitlines() if "reconcile" in line]
    for phrase in phrases:
        print(f"reconcile lines with {phrase!r}: {sum(phrase in line for line in lines)}")


def runc_ps(handle: DaemonHandle, cid: str) -> set[int]:
    result = subprocess.run(
        ["runc", "--root", str(handle.runc_root), "ps", "--format", "json", cid],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(result.stdout or "null") or [])


async def test_kill_9_during_concurrent_execs_leaves_every_process_listed(
    state_dir: Path, sleep_bundle: Path
) -> None:
    """Execs into one container run one at a time, so they are spread over a few containers."""
    handle = await start_daemon(state_dir)
    ids = [unique_id(f"execs{n}") for n in range(EXEC_CONTAINERS)]
    try:
        async with Client.connect(handle.address, timeout=SETTLE_S) as client:
            inits = {cid: await client.create_container(cid, str(sleep_bundle)) for cid in ids}
            kill = KillAfter(handle, after=random.randrange(1, EXECS // 2))
            given: dict[int, str] = {}

            async def exec_one(cid: str) -> None:
                try:
                    given[await client.add_process(cid, ["sleep", "1000"])] = cid
                except ClientError:
                    pass  # lost with the server: its process, if runc made one, must be listed below
                kill.reply_came()

            async with trio.open_nursery() as nursery:
                for n in range(EXECS):
                    nursery.start_soon(exec_one, ids[n % len(ids)])
            await wait_for_new_server(handle, kill.victim, timeout=SETTLE_S, ping=False)

            untracked: dict[str, set[int]] = {}
            tracked: dict[str, set[int]] = {}
            with trio.move_on_after(SETTLE_S):
                while True:
                    tracked = {c.id: {p.pid for p in c.processes} for c in await client.containers()}
                    untracked = {cid: runc_ps(handle, cid) - tracked.get(cid, set()) for cid in ids}
                    if not any(untracked.values()):
                        break
                    await trio.sleep(0.05)  # the adoptions report once they have taken every process
            in_containers = sum(len(runc_ps(handle, cid)) for cid in ids)
            print(f"{len(given)} exec pids given; {in_containers} processes in {len(ids)} containers")
            assert untracked == {cid: set() for cid in ids}
            assert all(inits[cid] in tracked[cid] for cid in ids)
            assert all(pid in tracked[cid] for pid, cid in given.items())
            assert leftover_intents(handle) == []
            # Every adopted process is controllable: kill one exec'd process through the daemon.
            cid, execd = next(
                (cid, pids - {inits[cid]}) for cid, pids in tracked.items() if pids - {inits[cid]}
            )
            await client.signal(cid, signal.SIGKILL, pid=min(execd))
            await kill_all_and_wait(client, handle, inits)
    finally:
        await stop_daemon(handle)
    print_reconcile_counts(
        handle.log_text(), ("left working", "found by its exec's intent", "found by runc ps")
    )


async def raw_start(socket: RawRequestSocket, request: wire.CreateContainer) -> wire.Reply:
    with trio.fail_after(SETTLE_S):
        return wire.decode_reply(await socket.request(wire.encode_request(request)))


async def test_a_repeated_start_with_the_same_request_id_answers_with_the_original_pid(
    state_dir: Path, sleep_bundle: Path, bundle_factory
) -> None:
    """Also across a kill -9 of the server: the request id is in the container's record."""
    handle = await start_daemon(state_dir)
    cid = unique_id("again")
    request = wire.CreateContainer(request_id="start-once", id=cid, bundle=str(sleep_bundle))
    try:
        socket = RawRequestSocket(handle.address, recv_max_size=wire.MAX_MESSAGE_BYTES)
        with socket:
            first = await raw_start(socket, request)
            assert isinstance(first, wire.CreateContainerReply)
            assert await raw_start(socket, request) == first
            other = await raw_start(
                socket, wire.CreateContainer(request_id="other", id=cid, bundle=request.bundle)
            )
            assert isinstance(other, wire.ErrorReply) and other.code == ErrorCode.ALREADY_EXISTS
            victim = server_pid(handle)
            os.kill(victim, signal.SIGKILL)
            await wait_for_new_server(handle, victim, timeout=SETTLE_S, ping=False)
            assert await raw_start(socket, request) == first
            elsewhere = str(bundle_factory("sleep", "1000"))
            moved = await raw_start(
                socket, wire.CreateContainer(request_id="start-once", id=cid, bundle=elsewhere)
            )
            assert isinstance(moved, wire.ErrorReply) and moved.code == ErrorCode.ALREADY_EXISTS
        async with Client.connect(handle.address) as client:
            assert [(c.id, c.pid) for c in await client.containers()] == [(cid, first.pid)]
            await kill_all_and_wait(client, handle, {cid: first.pid})
    finally:
        await stop_daemon(handle)


#: Stands in for runc: a ``runc run`` that takes 1.5 s longer, so a kill lands while it works.
WAITING_FOR_RUNC = "reconcile: waiting for 1 runc command(s) a previous server left working"
#: A runc whose `run` waits for the test's word (the file GO), so that a new server surely finds it working.
SLOW_RUN = """#!/bin/sh
case " $* " in *" run "*) i=0; while [ ! -e GO ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done;; esac
exec runc "$@"
"""


async def test_a_server_killed_while_runc_run_works_waits_for_it_and_adopts_the_container_with_its_pipes(
    state_dir: Path, bundle_factory
) -> None:
    slow_runc = state_dir.parent / "slow-runc"
    go = state_dir.parent / "go"
    slow_runc.write_text(SLOW_RUN.replace("GO", str(go)))
    slow_runc.chmod(0o755)
    bundle = bundle_factory("sh", "-c", "sleep 1; echo written-after-the-kill; exec sleep 1000")
    # The new server gives the runc it finds working --start-timeout to finish: under a loaded
    # machine (CI) the slowed runc run plus the real one took longer than the default 15 s once.
    handle = await start_daemon(state_dir, "--runtime", str(slow_runc), "--start-timeout", "60s")
    cid = unique_id("slow")
    runc = Runc(handle.runc_root, binary=str(slow_runc))
    try:
        async with Client.connect(handle.address, timeout=SETTLE_S) as client:
            given: list[int] = []
            async with trio.open_nursery() as nursery:

                async def start() -> None:
                    given.append(await client.create_container(cid, str(bundle)))

                nursery.start_soon(start)
                with trio.fail_after(SETTLE_S):
                    while not runc.working_processes():
                        await trio.sleep(0.01)  # until the daemon's runc run is under way
                victim = server_pid(handle)
                os.kill(victim, signal.SIGKILL)
                with trio.fail_after(SETTLE_S):
                    while WAITING_FOR_RUNC not in handle.log_text():
                        await trio.sleep(0.05)  # the new server's reconcile has found the runc working
                go.touch()
                await wait_for_new_server(handle, victim, timeout=SETTLE_S, ping=False)
            [pid] = given  # the client repeated its start and learnt the pid
            assert [(c.id, c.pid) for c in await client.containers()] == [(cid, pid)]
            # The reaper held the pipes from before runc ran: output written since is not lost.
            output = b""
            with trio.fail_after(SETTLE_S):
                async for chunk in client.follow_output(cid):
                    output += chunk.stdout
                    if b"written-after-the-kill" in output:
                        break
            assert output == b"written-after-the-kill\n"
            await kill_all_and_wait(client, handle, {cid: pid})
    finally:
        await stop_daemon(handle)
    log = handle.log_text()
    assert WAITING_FOR_RUNC in log
    assert f"reconcile: container {cid}: running, started by request" in log


async def test_a_container_adopted_without_its_pipes_says_in_its_log_that_output_was_lost(
    state_dir: Path, sleep_bundle: Path
) -> None:
    """Without the reaper nobody holds the pipes across a crash: the loss is marked, not hidden."""
    handle = await start_daemon(state_dir, "--no-reaper")
    cid = unique_id("lost")
    try:
        async with Client.connect(handle.address) as client:
            pid = await client.create_container(cid, str(sleep_bundle))
    finally:
        handle.process.kill()
        await handle.process.wait()
    handle = await start_daemon(state_dir, "--no-reaper")
    try:
        async with Client.connect(handle.address) as client:
            assert [(c.id, c.pid) for c in await client.containers()] == [(cid, pid)]
            read = await client.read_output(cid)
            assert read.stdout == OUTPUT_LOST_MARKER
            await kill_all_and_wait(client, handle, {cid: pid})
    finally:
        await stop_daemon(handle)


async def test_what_runc_holds_without_any_record_is_adopted_or_deleted(
    state_dir: Path, sleep_bundle: Path
) -> None:
    """Whatever the state directory lost, runc's root decides: a running container is listed, one
    left in ``created`` (its process never started) is deleted."""
    handle = await start_daemon(state_dir)
    await stop_daemon(handle)  # the root exists now; nothing runs
    running, created = unique_id("unrecorded"), unique_id("half-made")
    errors = state_dir.parent / "runc-errors"
    for command, cid in (("run", running), ("create", created)):
        # Not pipes: the container inherits runc's stdio, and a read to EOF would wait for it.
        with open(errors, "w") as stderr:
            made = subprocess.run(
                ["runc", "--root", str(handle.runc_root), command, *(["-d"] if command == "run" else []),
                 "--bundle", str(sleep_bundle), cid],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, check=False,
            )  # fmt: skip
        assert made.returncode == 0, errors.read_text()
    pid = dict(runc_containers(handle.runc_root))[running]
    handle = await start_daemon(state_dir)
    try:
        async with Client.connect(handle.address) as client:
            [info] = await client.containers()
            assert (info.id, info.pid, info.bundle, info.status) == (
                running,
                pid,
                str(sleep_bundle),
                "running",
            )
            assert [cid for cid, _ in runc_containers(handle.runc_root)] == [running]
            await client.signal(running, signal.SIGKILL)  # and it is managed: its exit is handled
            await kill_all_and_wait(client, handle, {})
    finally:
        await stop_daemon(handle)
    log = handle.log_text()
    assert f"reconcile: container {created}: left in created by an interrupted start: deleted" in log
    assert f"reconcile: container {running}: running in runc with no record: adopted" in log


async def journal_exits(client: Client) -> list[tuple[str, int, int | None]]:
    """(id, pid, status) of every ``exit`` in the journal, all pages."""
    exits, next_seq = [], 1
    while True:
        page = await client.events_page(from_seq=next_seq)
        exits += [(e.id, e.pid, e.status) for e in page.events if e.type == EventType.EXIT]
        if page.next_seq > page.last_seq or not page.events:
            return exits
        next_seq = page.next_seq


def exit_notes(handle: DaemonHandle) -> list[str]:
    return sorted(path.name for path in (handle.state_dir / "exits").glob("*.json"))


async def test_an_exit_the_killed_server_had_not_journalled_is_published_once_from_its_note(
    state_dir: Path, sleep_bundle: Path
) -> None:
    """A server killed after it removed a container's record but before its exit reached the
    journal used to lose the exit for good (scripts/chaos.py found it): the record was gone, runc
    had forgotten the container, and the reaper's status, filed by pid, was released as unclaimed.
    The note written before the record goes lets the next server publish it, once."""
    handle = await start_daemon(state_dir)
    done, running = unique_id("done"), unique_id("running")
    try:
        async with Client.connect(handle.address, timeout=SETTLE_S) as client:
            done_pid = await client.create_container(done, str(sleep_bundle))
            running_pid = await client.create_container(running, str(sleep_bundle))
            await client.signal(done, signal.SIGKILL)
            with trio.fail_after(SETTLE_S):
                while (done, done_pid, 137) not in await journal_exits(client) or exit_notes(handle):
                    await trio.sleep(0.05)  # the note goes once the exit is journalled
    finally:
        await stop_daemon(handle)  # containers keep running
    # What a server killed in the window leaves: the note of an exit the journal lacks (its
    # record and runc's container already gone), beside notes a kill a moment later leaves.
    notes = state_dir / "exits"
    lost = unique_id("lost")
    for id, pid, status, exec in (
        (lost, 4_000_001, 137, False),  # journal lacks it: published
        (lost, 4_000_002, 143, True),  # an exec'd process's: published
        (done, done_pid, 137, False),  # already journalled: not again
        (running, running_pid, 137, False),  # its record is still there: the adoption decides
    ):
        note = {"id": id, "pid": pid, "status": status, "reason": None, "time": time.time(), "exec": exec}
        (notes / f"{id}.{pid}.json").write_text(json.dumps(note))
    handle = await start_daemon(state_dir)
    try:
        async with Client.connect(handle.address, timeout=SETTLE_S) as client:
            exits = await journal_exits(client)
            assert exits.count((lost, 4_000_001, 137)) == 1, exits
            assert exits.count((lost, 4_000_002, 143)) == 1, exits
            assert exits.count((done, done_pid, 137)) == 1, exits
            assert not [e for e in exits if e[0] == running], exits
            assert [(c.id, c.pid) for c in await client.containers()] == [(running, running_pid)]
            assert exit_notes(handle) == []
            await kill_all_and_wait(client, handle, {running: running_pid})
            # The stopped daemon's reaper was its parent: nobody could see the status now.
            assert (running, running_pid, None) in await journal_exits(client)
            assert exit_notes(handle) == []
    finally:
        await stop_daemon(handle)
    published = f"reconcile: container {lost}: the exit of 4000001 (status 137) was not journalled"
    assert published in handle.log_text()
