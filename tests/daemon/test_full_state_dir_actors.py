"""A full state directory with real actors in the test's loop (fake runc, ``support.actors``):
containers stay managed, starts and record writes are refused cleanly, and the events actor
publishes live while its journal waits for room, then writes every event without a gap."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pynng
import pytest
import trio
from support.actors import PATIENCE_S, Harness, killed, running, write_bundle
from support.full_disk import FullDisk

from containerd_actors import protocol as wire
from containerd_actors.daemon.container import exec as exec_module
from containerd_actors.daemon.events.actor import EventsActor
from containerd_actors.daemon.events.journal import EventJournal
from containerd_actors.daemon.events.messages import EventDraft, GetStatus
from containerd_actors.daemon.mailbox import CommandError, ask
from containerd_actors.daemon.state import space as space_module
from containerd_actors.daemon.state.layout import ContainerPaths, ContainerRecord
from containerd_actors.daemon.state.space import PROBE_INTERVAL_S, StateDirSpace
from containerd_actors.protocol import ErrorCode, EventType, decode_event_payload

BIG = 1 << 30


def create(id: str, bundle: Path) -> wire.CreateContainer:
    return wire.CreateContainer(request_id="r", id=id, bundle=str(bundle))


@pytest.fixture
def disk() -> FullDisk:
    return FullDisk(free=BIG)


@pytest.fixture
def state_dir(tmp_path: Path, disk: FullDisk, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state directory whose space reports ``disk``'s room (writes themselves are real)."""
    state_dir = tmp_path / "state"
    root = Path(os.path.abspath(state_dir))
    monkeypatch.setitem(space_module._spaces, root, StateDirSpace(root, room=disk.room, clock=disk.clock))
    return state_dir


def space_of_dir(state_dir: Path) -> StateDirSpace:
    return space_module.state_dir_space(state_dir)


async def read_stdout(harness: Harness, id: str, wait: float = 0) -> bytes:
    view = await harness.ask(wire.ReadOutput(request_id="r", id=id))
    chunk = await view.read(0, 0, wait=wait, max_bytes=1 << 20)
    return chunk.stdout


async def wait_until(condition, what: str) -> None:
    with trio.move_on_after(PATIENCE_S):
        while not condition():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_container_whose_output_cannot_be_kept_stays_managed_and_its_log_says_what_was_lost(
    state_dir: Path, disk: FullDisk, tmp_path: Path
) -> None:
    async with running(Harness(state_dir)) as harness:
        space = space_of_dir(state_dir)
        pid = await harness.ask(create("c1", write_bundle(tmp_path / "b", "cat")))
        await harness.ask(wire.WriteInput(request_id="r", id="c1", data=b"kept\n"))
        assert await read_stdout(harness, "c1", wait=PATIENCE_S) == b"kept\n"

        disk.free = 0
        space.report_failure(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "a test")
        data = b"x" * 5000
        await harness.ask(wire.WriteInput(request_id="r", id="c1", data=data))
        await wait_until(lambda: space.lost_output_bytes == 5000, "cat's output to be dropped")

        [info] = await harness.ask(wire.State(request_id="r"))
        assert (info.id, info.pid, info.status) == ("c1", pid, "running")
        with pytest.raises(CommandError) as refused:
            await harness.ask(create("c2", write_bundle(tmp_path / "b2", "true")))
        assert refused.value.code == ErrorCode.RUNTIME_FAILED
        assert str(state_dir) in refused.value.message and "no space left on device" in refused.value.message
        assert ("run", "c2") not in harness.runtime.calls  # refused before runc

        await harness.ask(wire.Signal(request_id="r", id="c1", signal=9))
        events = []
        while not events or events[-1].type != EventType.EXIT:
            events.append(await harness.next_event())
        assert (events[-1].id, events[-1].pid, events[-1].status) == ("c1", pid, 137)
        assert await harness.ask(wire.State(request_id="r")) == []

        disk.free = BIG
        disk.now += PROBE_INTERVAL_S
        assert space.probe()
        assert await read_stdout(harness, "c1") == b"kept\n[5000 bytes lost: state dir full]\n"


async def test_a_record_that_cannot_be_written_undoes_the_start(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_room(record: ContainerRecord, paths: ContainerPaths) -> None:
        raise OSError(errno.ENOSPC, f"cannot write {paths.record}: No space left on device")

    monkeypatch.setattr(ContainerRecord, "write", no_room)
    async with running(Harness(state_dir)) as harness:
        with pytest.raises(CommandError) as refused:
            await harness.ask(create("c1", write_bundle(tmp_path / "b", "sleep", "100")))
        assert refused.value.code == ErrorCode.RUNTIME_FAILED
        assert "container.json" in refused.value.message and "No space left" in refused.value.message
        # runc was told to delete it (``runc delete --force`` kills a running container).
        assert harness.runtime.calls == [("run", "c1"), ("delete", "c1")]
        await killed(harness.runtime.inits["c1"])  # what runc's delete does to the real thing
        assert await harness.ask(wire.State(request_id="r")) == []
        assert os.listdir(state_dir / "containers") == [] and os.listdir(state_dir / "logs") == []


async def test_an_exec_whose_record_cannot_be_written_is_refused_and_its_process_killed(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = exec_module.write_json_atomically

    def no_room_for_records(path: Path, value: object) -> None:
        if path.name.endswith(".process.json"):
            raise OSError(errno.ENOSPC, f"cannot write {path}: No space left on device")
        real_write(path, value)

    monkeypatch.setattr(exec_module, "write_json_atomically", no_room_for_records)
    async with running(Harness(state_dir)) as harness:
        init = await harness.ask(create("c1", write_bundle(tmp_path / "b", "sleep", "100")))
        with pytest.raises(CommandError) as refused:
            await harness.ask(wire.AddProcess(request_id="r", id="c1", args=["sleep", "100"]))
        assert refused.value.code == ErrorCode.RUNTIME_FAILED
        assert "process.json" in refused.value.message and "killed" in refused.value.message
        exec_pidfd = harness.runtime.spawned[-1]
        with trio.fail_after(PATIENCE_S):
            await trio.lowlevel.wait_readable(exec_pidfd)  # it is dead
        [info] = await harness.ask(wire.State(request_id="r"))
        assert [process.pid for process in info.processes] == [init]  # the container carries on
        await harness.ask(wire.Signal(request_id="r", id="c1", signal=signal.SIGCONT))  # still served


async def test_events_are_published_live_while_the_journal_waits_and_written_without_gap_after(
    work_dir: Path, disk: FullDisk
) -> None:
    space = StateDirSpace(work_dir, room=disk.room, clock=disk.clock)
    journal = EventJournal(work_dir / "events", segment_events=1000, space=space, write=disk.write)
    metrics, _ = trio.open_memory_channel[object](1000)
    address = f"ipc://{work_dir}/events.sock"
    actor = EventsActor(address, journal, metrics)

    def on_disk() -> list[int]:
        seqs = []
        for segment in sorted((work_dir / "events").glob("*.jsonl")):
            seqs += [decode_event_payload(line).seq for line in segment.read_bytes().splitlines()]
        return seqs

    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        with pynng.Sub0(dial=address, topics=b"") as subscriber:
            await wait_until(lambda: actor.status.current.subscribers == 1, "the subscriber")

            async def tell(count: int, first: int) -> list[int]:
                """One by one, each received live before the next (pub/sub drops when queues fill)."""
                seen = []
                for n in range(count):
                    await actor.mailbox.send(EventDraft(EventType.EXIT, f"c{first + n}", 100 + n, 0))
                    with trio.fail_after(PATIENCE_S):
                        frame = await subscriber.arecv()
                    seen.append(decode_event_payload(frame.split(b" ", 1)[1]).seq)
                return seen

            assert await tell(3, 0) == [1, 2, 3]
            disk.free = 0
            assert await tell(20, 3) == list(range(4, 24))  # live, though not on disk
            assert on_disk() == [1, 2, 3] and journal.waiting == 20
            await ask(actor.mailbox, GetStatus)
            disk.free = BIG
            disk.now += PROBE_INTERVAL_S
            assert space.probe()  # what the daemon's space watcher does; the actor is told
            await wait_until(lambda: journal.waiting == 0, "the waiting events to be written")
            assert on_disk() == list(range(1, 24))
            assert await tell(2, 23) == [24, 25]
            assert on_disk() == list(range(1, 26))
        nursery.cancel_scope.cancel()
