"""The supervisor with real container actors and a fake runc (``support.actors``), in the test's loop."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import attrs
import pytest
import trio
from support.actors import Harness, RecordingReaper, write_bundle

from containerd_actors import protocol as wire
from containerd_actors.daemon.container.adopt import plan_adoptions
from containerd_actors.daemon.mailbox import CommandError
from containerd_actors.daemon.state.layout import ContainerRecord
from containerd_actors.protocol import ErrorCode, EventType


def create(id: str, bundle: Path, checkpoint: str | None = None) -> wire.CreateContainer:
    return wire.CreateContainer(request_id="r", id=id, bundle=str(bundle), checkpoint=checkpoint)


async def test_start_answers_with_the_pid_and_publishes_start_container(
    harness: Harness, tmp_path: Path
) -> None:
    bundle = write_bundle(tmp_path / "b", "sleep", "100")
    pid = await harness.ask(create("c1", bundle))
    os.kill(pid, 0)  # a real process
    event = await harness.next_event()
    assert (event.type, event.id, event.pid) == (EventType.START_CONTAINER, "c1", pid)
    [info] = await harness.ask(wire.State(request_id="r"))
    assert (info.id, info.pid, info.bundle, info.status) == ("c1", pid, str(bundle), "running")
    assert [process.args for process in info.processes] == [["sleep", "100"]]


async def test_a_duplicate_id_is_refused_even_while_the_first_is_starting(
    harness: Harness, tmp_path: Path
) -> None:
    bundle = write_bundle(tmp_path / "b", "sleep", "100")
    harness.runtime.hold["run"] = held = trio.Event()
    answers: list[object] = []

    async def start() -> None:
        try:
            answers.append(await harness.ask(create("c1", bundle)))
        except CommandError as error:
            answers.append(error.code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(CommandError) as failure:
            await harness.ask(attrs.evolve(create("c1", bundle), request_id="another"))
        assert failure.value.code == ErrorCode.ALREADY_EXISTS
        held.set()
    assert len(answers) == 1 and isinstance(answers[0], int)
    assert harness.runtime.calls.count(("run", "c1")) == 1


async def test_the_same_start_repeated_is_answered_with_the_pid_of_the_container_it_made(
    harness: Harness, tmp_path: Path
) -> None:
    """A client that lost the reply (a dropped connection) asks again with the same request id:
    it learns the pid, also while the first start still runs runc, and nothing starts twice."""
    bundle = write_bundle(tmp_path / "b", "sleep", "100")
    harness.runtime.hold["run"] = held = trio.Event()
    answers: list[object] = []

    async def start() -> None:
        answers.append(await harness.ask(create("c1", bundle)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(start)  # the repeat, while the first is still in runc
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []
        held.set()
    assert len(answers) == 2 and answers[0] == answers[1] and isinstance(answers[0], int)
    assert await harness.ask(create("c1", bundle)) == answers[0]  # and again once it runs
    with pytest.raises(CommandError) as failure:
        await harness.ask(create("c1", write_bundle(tmp_path / "other", "sleep", "100")))
    assert failure.value.code == ErrorCode.ALREADY_EXISTS
    assert harness.runtime.calls.count(("run", "c1")) == 1


async def test_signal_reaches_the_process_and_its_exit_is_published_with_the_status(
    harness: Harness, tmp_path: Path
) -> None:
    pid = await harness.ask(create("c1", write_bundle(tmp_path / "b", "sleep", "100")))
    assert (await harness.next_event()).type == EventType.START_CONTAINER
    await harness.ask(wire.Signal(request_id="r", id="c1", signal=signal.SIGKILL))
    event = await harness.next_event()
    assert (event.type, event.pid, event.status, event.reason) == (EventType.EXIT, pid, 128 + 9, None)
    assert await harness.ask(wire.State(request_id="r")) == []
    assert ("delete", "c1") in harness.runtime.calls
    with pytest.raises(CommandError) as failure:
        await harness.ask(wire.Signal(request_id="r", id="c1"))
    assert failure.value.code == ErrorCode.NOT_FOUND and "no such container" in failure.value.message
    # The id is free again.
    assert await harness.ask(create("c1", write_bundle(tmp_path / "b2", "sleep", "100"))) > 0


async def test_output_stays_readable_after_the_exit(harness: Harness, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", "sh", "-c", "echo out; echo err >&2; exit 3")
    pid = await harness.ask(create("c1", bundle))
    await harness.next_event()
    assert (await harness.next_event()).status == 3
    view = await harness.ask(wire.ReadOutput(request_id="r", id="c1"))
    chunk = await view.read(0, 0, wait=0, max_bytes=1024)
    assert (view.pid, chunk.stdout, chunk.stderr, chunk.exited, chunk.status) == (
        pid,
        b"out\n",
        b"err\n",
        True,
        3,
    )
    # Its stdin went with it; a client attached to it hears so.
    with pytest.raises(CommandError) as failure:
        await harness.ask(wire.WriteInput(request_id="r", id="c1", data=b"x"))
    assert failure.value.code == ErrorCode.INVALID_STATE and "closed" in failure.value.message
    with pytest.raises(CommandError) as failure:
        await harness.ask(wire.ResizeTerminal(request_id="r", id="c1"))
    assert failure.value.code == ErrorCode.INVALID_STATE
    with pytest.raises(CommandError) as failure:
        await harness.ask(wire.ReadOutput(request_id="r", id="c1", pid=pid + 1))
    assert failure.value.code == ErrorCode.NOT_FOUND


async def test_a_start_that_crashes_is_answered_and_its_actor_removed(
    harness: Harness, tmp_path: Path
) -> None:
    bundle = write_bundle(tmp_path / "b", "sleep", "100")
    harness.runtime.fail_next["run"] = RuntimeError("a bug in the start path")
    with pytest.raises(CommandError) as failure:
        await harness.ask(create("c1", bundle))
    assert failure.value.code == ErrorCode.INTERNAL and "a bug in the start path" in failure.value.message
    # The supervisor carries on, and the id is free.
    assert await harness.ask(wire.State(request_id="r")) == []
    assert await harness.ask(create("c1", bundle)) > 0


async def test_a_crashing_actor_is_restarted_without_taking_the_supervisor_down(
    harness: Harness, tmp_path: Path
) -> None:
    first = await harness.ask(create("c1", write_bundle(tmp_path / "b1", "sleep", "100")))
    await harness.ask(create("c2", write_bundle(tmp_path / "b2", "sleep", "100")))
    harness.runtime.fail_next["pause"] = RuntimeError("a bug in the pause path")
    with pytest.raises(CommandError) as failure:
        await harness.ask(wire.UpdateContainer(request_id="r", id="c1", status="paused"))
    assert failure.value.code == ErrorCode.INTERNAL
    await trio.testing.wait_all_tasks_blocked()
    # Its container is adopted by a new actor (test_supervision has the details); the other is served.
    assert [info.id for info in await harness.ask(wire.State(request_id="r"))] == ["c1", "c2"]
    await harness.ask(wire.Signal(request_id="r", id="c2", signal=signal.SIGCONT))
    await harness.ask(wire.Signal(request_id="r", id="c1", signal=signal.SIGKILL))
    events = [(event.type, event.pid) for event in [await harness.next_event() for _ in range(4)]]
    assert (EventType.ACTOR_RESTART, first) in events and (EventType.EXIT, first) in events


async def test_pipes_kept_for_no_record_are_closed_and_released() -> None:
    reaper = RecordingReaper()
    fds = [*os.pipe(), *os.pipe()]
    record = ContainerRecord(id="c1", bundle="/b", pid=1234, pid_start_time=None, created=0.0)
    kept = {"c1": fds[:2], "c1/77": fds[2:3], "gone": fds[3:], "gone/5": []}
    [adoption] = await plan_adoptions([record], kept, reaper)
    assert (adoption.init_fds, adoption.exec_fds) == (fds[:2], {"c1/77": fds[2:3]})
    assert sorted(reaper.calls) == [("drop", "gone", 0), ("drop", "gone/5", 0)]
    with pytest.raises(OSError):
        os.fstat(fds[3])
    for fd in fds[:3]:
        os.close(fd)


def store_checkpoint(bundle: Path, name: str) -> None:
    """A checkpoint as the daemon stores it (CRIU's images do not matter to a listing)."""
    directory = bundle / "checkpoints" / name
    directory.mkdir(parents=True)
    metadata = {"tcp": False, "unix_sockets": False, "shell": False, "exit": True, "created": 1.0}
    (directory / "checkpoint.json").write_text(json.dumps(metadata))


async def test_checkpoints_are_listed_and_deleted_after_the_exit(harness: Harness, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", "sh", "-c", "exit 0")
    store_checkpoint(bundle, "kept")
    store_checkpoint(bundle, "doomed")
    await harness.ask(create("c1", bundle))
    await harness.next_event()
    assert (await harness.next_event()).type == EventType.EXIT
    assert await harness.ask(wire.State(request_id="r")) == []

    def names(checkpoints: list[wire.Checkpoint]) -> list[str]:
        return sorted(checkpoint.name for checkpoint in checkpoints)

    assert names(await harness.ask(wire.ListCheckpoints(request_id="r", id="c1"))) == ["doomed", "kept"]
    await harness.ask(wire.DeleteCheckpoint(request_id="r", id="c1", name="doomed"))
    by_bundle = await harness.ask(wire.ListCheckpoints(request_id="r", bundle=str(bundle)))
    assert names(by_bundle) == ["kept"]
    for request, code in (
        (wire.DeleteCheckpoint(request_id="r", id="c1", name="doomed"), ErrorCode.NOT_FOUND),
        (wire.ListCheckpoints(request_id="r", id="never-ran"), ErrorCode.NOT_FOUND),
        (wire.ListCheckpoints(request_id="r", bundle=str(tmp_path / "nowhere")), ErrorCode.NOT_FOUND),
        (wire.ListCheckpoints(request_id="r"), ErrorCode.INVALID_REQUEST),
    ):
        with pytest.raises(CommandError) as failure:
            await harness.ask(request)
        assert failure.value.code == code, request
