"""The restart matrix: every way the daemon can go away and come back, and what carries across.

One container set per way, made before the outage and checked after it:

- ``counter``: prints a numbered line every 10 ms, with an exec'd ``sleep`` (its own user, cwd, env)
  and an exec'd process that exited (status 5) before the outage;
- ``paused``: paused before the outage;
- ``quitter``: exits with 7 on SIGUSR1, which it gets while no server runs;
- ``early``: exited before the outage (status 3) after an exec'd process of its (status 4); its
  bundle holds a checkpoint;
- ``chatty``: wrote more than two log generations, so part of its log was rotated out.

The README's restart section holds the same matrix as a table.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio
from support.bundles import make_bundle
from support.daemon import DaemonHandle, start_daemon, stop_daemon, unique_id
from support.event_waits import journal_events
from support.fake_systemd import FakeSystemd
from support.restarts import server_pid, wait_for_exit, wait_for_new_server

from containerd_actors.client import Client
from containerd_actors.daemon.container.adopt import OUTPUT_LOST_MARKER
from containerd_actors.protocol import EventType, User

COUNTER = ["sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 0.01; done"]
#: Says ``ready`` once its trap is set: a SIGUSR1 before that would kill sh (138), not end it with 7.
QUITTER = ["sh", "-c", "trap 'exit 7' USR1; echo ready; while :; do sleep 0.05; done"]
EARLY = [
    "sh",
    "-c",
    "echo early out; echo early err >&2; trap 'exit 3' USR1; echo ready; while :; do sleep 0.05; done",
]
#: Past two generations of 64 MiB: the oldest part of its log is rotated out.
CHATTY_BYTES = 136_000_000
CHATTY = ["sh", "-c", f"yes 0123456789abcdef | head -c {CHATTY_BYTES}; exec sleep 1000000"]
EXEC_USER = User(uid=65534, gid=65534)

#: The ways a daemon goes away and comes back; what each keeps is in ``Way``.
WAYS = (
    "sighup",
    "server-kill-9",
    "tree-kill-9",
    "tree-kill-9-fdstore",
    "sigterm-then-start",
    "sigterm-then-start-fdstore",
    "upgrade",
)


@attrs.frozen
class Way:
    name: str

    @property
    def reaper_survives(self) -> bool:
        """The reaper holds the pipes and reaps the exits across the outage."""
        return self.name in ("sighup", "server-kill-9", "upgrade")

    @property
    def pipes_survive(self) -> bool:
        """The pipes are held across the outage: by the reaper, or by systemd's fd store."""
        return self.reaper_survives or self.under_systemd

    @property
    def under_systemd(self) -> bool:
        """The daemon runs under a (fake) systemd with an fd store, which a restart job keeps."""
        return self.name.endswith("-fdstore")


@attrs.frozen
class Output:
    stdout: bytes
    stderr: bytes
    skipped: int
    status: int | None


@attrs.frozen
class Window:
    """A running container's log as `logs` serves it: what was rotated out, the kept bytes' hash."""

    start: int
    end: int
    digest: str
    tail: bytes


@attrs.frozen
class Before:
    pids: dict[str, int]
    statuses: dict[str, str]
    counter_processes: list
    execd: int
    #: An exec'd process of the counter that exited before the outage, and its output.
    gone_exec: tuple[int, Output]
    early_outputs: dict[int, Output]
    early_checkpoints: list
    chatty: Window
    journal: list


@pytest.fixture(scope="module")
def bundles(bundles_dir: Path) -> dict[str, Path]:
    made = {
        name: make_bundle(bundles_dir / f"matrix-{name}", args)
        for name, args in (
            ("counter", COUNTER),
            ("paused", ["sleep", "1000000"]),
            ("quitter", QUITTER),
            ("early", EARLY),
            ("chatty", CHATTY),
        )
    }
    # A checkpoint as the daemon stores it: a listing reads its metadata, not CRIU's images.
    stored = made["early"] / "checkpoints" / "before-restart"
    stored.mkdir(parents=True, exist_ok=True)
    metadata = {"tcp": False, "unix_sockets": True, "shell": False, "exit": False, "created": 1.0}
    (stored / "checkpoint.json").write_text(json.dumps(metadata))
    return made


async def output(client: Client, cid: str, pid: int = 0) -> Output:
    stdout, stderr, skipped, status = [], [], None, None
    async for read in client.follow_output(cid, pid, follow=False):
        stdout.append(read.stdout)
        stderr.append(read.stderr)
        skipped = read.skipped if skipped is None else skipped
        status = read.status
    return Output(b"".join(stdout), b"".join(stderr), skipped or 0, status)


async def wait_for_output(client: Client, cid: str, text: bytes, pid: int = 0, exited: bool = False) -> None:
    """Until the process has written ``text`` (or, with ``exited``, until it has exited)."""
    seen = b""
    with trio.fail_after(30):
        async for read in client.follow_output(cid, pid):
            seen = (seen + read.stdout)[-len(text) - 4096 :]  # text may span reads
            if text in seen and not exited:
                return
        assert exited, f"{cid} exited before it wrote {text!r}"


async def window(client: Client, cid: str) -> Window:
    """Where the log starts (what was rotated out) and ends, and the hash of its first and last pages."""
    first = await client.read_output(cid, stdout_offset=0)
    last = await client.read_output(cid, stdout_offset=first.stdout_offset, tail=100)
    head, tail = first.stdout, last.stdout
    assert first.skipped == first.stdout_offset
    digest = hashlib.sha256(head + b"..." + tail).hexdigest()
    return Window(first.stdout_offset, last.next_stdout_offset, digest, tail)


async def wait_for_chatty(client: Client, cid: str) -> None:
    with trio.fail_after(60):
        while (await client.read_output(cid, tail=0)).next_stdout_offset < CHATTY_BYTES:
            await trio.sleep(0.05)  # ~136 MB through a pipe into the log


def counted(text: bytes) -> list[int]:
    return [int(line) for line in text.decode().splitlines() if line.isdigit()]


async def prepare(client: Client, bundles: dict[str, Path], ids: dict[str, str]) -> Before:
    pids = {}
    for name in ("counter", "paused", "quitter", "early", "chatty"):
        pids[name] = await client.create_container(ids[name], str(bundles[name]))
    execd = await client.add_process(
        ids["counter"], ["sleep", "1000000"], cwd="/tmp", user=EXEC_USER, env=["MATRIX=1"]
    )
    await client.pause(ids["paused"])
    gone_exec = await client.add_process(ids["counter"], ["sh", "-c", "echo exec gone; exit 5"])
    await wait_for_output(client, ids["counter"], b"", pid=gone_exec, exited=True)
    early_exec = await client.add_process(ids["early"], ["sh", "-c", "echo from exec; exit 4"])
    await wait_for_output(client, ids["early"], b"", pid=early_exec, exited=True)
    await wait_for_output(client, ids["early"], b"ready")
    await client.signal(ids["early"], signal.SIGUSR1)
    await wait_for_output(client, ids["early"], b"", exited=True)
    await wait_for_output(client, ids["quitter"], b"ready")
    await wait_for_output(client, ids["counter"], b"\n20\n")
    await wait_for_chatty(client, ids["chatty"])
    listed = {info.id: info for info in await client.containers()}
    chatty = await window(client, ids["chatty"])
    assert chatty.start > 0, "chatty's log did not rotate twice"
    return Before(
        pids=pids,
        statuses={cid: info.status for cid, info in listed.items()},
        counter_processes=listed[ids["counter"]].processes,
        execd=execd,
        gone_exec=(gone_exec, await output(client, ids["counter"], gone_exec)),
        early_outputs={pid: await output(client, ids["early"], pid) for pid in (pids["early"], early_exec)},
        early_checkpoints=await client.list_checkpoints(ids["early"]),
        chatty=chatty,
        journal=await journal_events(client),
    )


@attrs.define
class Tree:
    """The daemon under test, replaced by a new one where a way needs it."""

    handle: DaemonHandle
    #: The service manager the daemon runs under, for the way that uses its fd store.
    systemd: FakeSystemd | None = None


async def go_away_and_come_back(way: Way, tree: Tree, quitter_pid: int) -> None:
    """The outage; SIGUSR1 reaches the quitter while no server runs, and it has exited before one does."""
    handle = tree.handle
    reaper = handle.pid
    old_server = server_pid(handle)
    if way.name in ("sighup", "server-kill-9"):
        os.kill(reaper, signal.SIGSTOP)  # nothing restarts or reaps until the quitter is gone
        try:
            if way.name == "sighup":
                os.kill(reaper, signal.SIGHUP)  # taken when the reaper runs again
            else:
                os.kill(old_server, signal.SIGKILL)
            os.kill(quitter_pid, signal.SIGUSR1)
            await wait_for_exit(quitter_pid)
        finally:
            os.kill(reaper, signal.SIGCONT)
        await wait_for_new_server(handle, old_server)
    elif way.name == "upgrade":
        os.kill(reaper, signal.SIGSTOP)
        try:
            upgrade = await trio.lowlevel.open_process(
                [sys.executable, "-m", "containerd_actors.daemon.main", "upgrade", "--state-dir",
                 str(handle.state_dir)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            with trio.fail_after(30):
                while not signal_pending(reaper, signal.SIGUSR2):
                    await trio.sleep(0.01)  # the command's request waits in the stopped reaper
            os.kill(quitter_pid, signal.SIGUSR1)
            await wait_for_exit(quitter_pid)
        finally:
            os.kill(reaper, signal.SIGCONT)
        with trio.fail_after(60):
            await upgrade.wait()
        assert upgrade.returncode == 0
        assert server_pid(handle) != old_server and handle.process.returncode is None
    else:
        if way.name.startswith("tree-kill-9"):
            os.kill(old_server, signal.SIGKILL)
            os.kill(reaper, signal.SIGKILL)
            await handle.process.wait()
        else:
            assert await stop_daemon(handle) == 0
        os.kill(quitter_pid, signal.SIGUSR1)
        await wait_for_exit(quitter_pid)
        # Under systemd the new start gets back what the fd store holds (for the other ways, none).
        tree.handle = await start_daemon(handle.state_dir, systemd=tree.systemd)


def signal_pending(pid: int, signum: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("ShdPnd:"):
                return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


@pytest.fixture
async def tree(state_dir: Path, request: pytest.FixtureRequest) -> AsyncIterator[Tree]:
    systemd = None
    if Way(request.node.callspec.params["way"]).under_systemd:
        systemd = FakeSystemd(state_dir.parent / "systemd-notify", store_max=64)
    try:
        tree = Tree(await start_daemon(state_dir, systemd=systemd), systemd)
        try:
            yield tree
        finally:
            await stop_daemon(tree.handle)
    finally:
        if systemd is not None:
            systemd.close()


@pytest.mark.parametrize("way", WAYS)
async def test_what_carries_across_a_restart(way: str, tree: Tree, bundles: dict[str, Path]) -> None:
    how = Way(way)
    # Unique ids: a container's cgroup is named after its id, system-wide.
    ids = {name: unique_id(f"{name}-{way}") for name in bundles}
    async with Client.connect(tree.handle.address) as client:
        before = await prepare(client, bundles, ids)
    await go_away_and_come_back(how, tree, before.pids["quitter"])

    async with Client.connect(tree.handle.address, timeout=60) as client:
        # Running containers: listed with their pids, the paused one still paused, every exec'd
        # process listed as before (role, user, cwd, command, environment).
        with trio.fail_after(30):
            while len(listed := {info.id: info for info in await client.containers()}) != 3:
                await trio.sleep(0.05)  # the quitter's exit is published as it is adopted
        assert {cid: info.pid for cid, info in listed.items()} == {
            ids[name]: before.pids[name] for name in ("counter", "paused", "chatty")
        }
        assert {cid: info.status for cid, info in listed.items()} == {
            cid: status for cid, status in before.statuses.items() if cid != ids["quitter"]
        }
        assert listed[ids["paused"]].status == "paused"
        assert listed[ids["counter"]].processes == before.counter_processes

        # Exit statuses: the quitter's exit is published once, with its status where the reaper
        # saw it, else null with the reason.
        events = await journal_events(client)
        quits = [e for e in events if e.type == EventType.EXIT and e.id == ids["quitter"]]
        assert len(quits) == 1, quits
        if how.reaper_survives:
            assert (quits[0].status, quits[0].reason) == (7, None)
        else:
            assert quits[0].status is None and "reaper" in quits[0].reason

        # Events: every event before is kept as it was, and seq continues with no gap.
        assert events[: len(before.journal)] == before.journal
        assert [e.seq for e in events] == list(range(1, len(events) + 1))

        # An exited container: the same bytes and statuses, and its checkpoints still listed.
        for pid, was in before.early_outputs.items():
            assert await output(client, ids["early"], pid) == was
        assert [o.status for o in before.early_outputs.values()] == [3, 4]
        assert await client.list_checkpoints(ids["early"]) == before.early_checkpoints

        # An exec'd process that exited before the outage, in a container that runs on.
        gone_pid, gone_output = before.gone_exec
        assert gone_output.status == 5 and gone_output.stdout == b"exec gone\n"
        assert await output(client, ids["counter"], gone_pid) == gone_output

        # A rotated log: the same part rotated out and the same bytes kept (a marker after them
        # where the pipes could not be kept).
        chatty = await window(client, ids["chatty"])
        if how.pipes_survive:
            assert chatty == before.chatty
        else:
            assert chatty.start == before.chatty.start
            assert chatty.end == before.chatty.end + len(OUTPUT_LOST_MARKER)
            assert chatty.tail.endswith(before.chatty.tail[-1000:] + OUTPUT_LOST_MARKER)

        # Output: no gap where the pipes were kept; a 'lost' marker where they could not be.
        if how.pipes_survive:
            at_restart = counted((await output(client, ids["counter"])).stdout)[-1]
            await wait_for_output(client, ids["counter"], f"\n{at_restart + 30}\n".encode())
            numbers = counted((await output(client, ids["counter"])).stdout)
            assert numbers == list(range(len(numbers)))
        else:
            text = (await output(client, ids["counter"])).stdout
            kept, marker, _ = text.partition(OUTPUT_LOST_MARKER)
            assert marker, "no marker where the output was lost"
            assert counted(kept) == list(range(len(counted(kept))))
        os.kill(before.execd, 0)  # and no SIGPIPE killed the exec'd process

        # Still controllable: a new exec, a resume, a kill, each with its next event.
        last_seq = events[-1].seq
        probe = await client.add_process(ids["counter"], ["sh", "-c", "echo probe"])
        await wait_for_output(client, ids["counter"], b"probe", pid=probe)
        await client.resume(ids["paused"])
        for name in ("counter", "paused", "chatty"):
            await client.signal(ids[name], signal.SIGKILL)
        with trio.fail_after(30):
            while await client.containers():
                await trio.sleep(0.05)  # the exits are reaped and published
        assert await output(client, ids["counter"], gone_pid) == gone_output  # also once it exited
        after = (await journal_events(client))[len(events) :]
        assert [e.seq for e in after] == list(range(last_seq + 1, last_seq + 1 + len(after)))
        assert {(e.type, e.id) for e in after} >= {
            (EventType.RESUME, ids["paused"]),
            (EventType.EXIT, ids["counter"]),
            (EventType.EXIT, ids["chatty"]),
        }
