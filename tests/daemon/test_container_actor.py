"""Container actors driven through the supervisor, with a fake runc whose processes are real.

Each test synchronises on the daemon's own answers and events, or on every task being blocked
(``wait_all_tasks_blocked``): nothing waits for time to pass.
"""

from __future__ import annotations

import inspect
import json
import signal
from pathlib import Path

import pytest
import trio
import trio.testing
from support.actors import PATIENCE_S, FakeRuntime, Harness, kill_container, killed, running, write_bundle

from containerd_actors import protocol as wire
from containerd_actors.daemon.container.actor import EXEC_EXIT_UNSEEN_REASON, EXECS_EXIT_GRACE_S
from containerd_actors.daemon.container.adopt import plan_adoptions
from containerd_actors.daemon.container.deps import ContainerRuntime
from containerd_actors.daemon.mailbox import CommandError
from containerd_actors.daemon.metrics.messages import RecordDuration
from containerd_actors.daemon.metrics.registry import EXEC_PROCESS_TIME
from containerd_actors.daemon.state.layout import ContainerRecord, IntentOp, container_paths, read_intent
from containerd_actors.daemon.state.recovery import load_records
from containerd_actors.protocol import ErrorCode, EventType


async def start(harness: Harness, bundle_dir: Path, *args: str, id: str = "c1") -> int:
    pid = await harness.ask(
        wire.CreateContainer(request_id="r", id=id, bundle=str(write_bundle(bundle_dir, *args)))
    )
    assert (await harness.next_event()).type == EventType.START_CONTAINER
    return pid


async def exec(harness: Harness, *args: str, terminal: bool = False) -> int:
    pid = await harness.ask(wire.AddProcess(request_id="r", id="c1", args=list(args), terminal=terminal))
    event = await harness.next_event()
    assert (event.type, event.pid) == (EventType.START_PROCESS, pid)
    return pid


def write(data: bytes, pid: int = 0, close: bool = False) -> wire.WriteInput:
    return wire.WriteInput(request_id="r", id="c1", pid=pid, data=data, close=close)


async def output_of(harness: Harness, pid: int = 0) -> tuple[bytes, int | None]:
    """Everything the process wrote to stdout, once it has exited, and its status."""
    view = await harness.ask(wire.ReadOutput(request_id="r", id="c1", pid=pid))
    chunk = await view.read(0, 0, wait=PATIENCE_S, max_bytes=1 << 20)
    out = chunk.stdout
    while not chunk.exited:
        chunk = await view.read(
            chunk.stdout_offset + len(chunk.stdout), 0, wait=PATIENCE_S, max_bytes=1 << 20
        )
        out += chunk.stdout
    return out, chunk.status


async def processes(harness: Harness) -> list[int]:
    [info] = await harness.ask(wire.State(request_id="r"))
    return [process.pid for process in info.processes]


async def test_an_exec_exit_goes_through_the_actors_mailbox(harness: Harness, tmp_path: Path) -> None:
    init = await start(harness, tmp_path / "b", "sleep", "100")
    pid = await exec(harness, "sleep", "100")
    assert await processes(harness) == [init, pid]
    # Hold the actor in a request: the exit is reaped meanwhile, but nothing of it is announced.
    harness.runtime.hold["pause"] = held = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.ask, wire.UpdateContainer(request_id="r", id="c1", status="paused"))
        await trio.testing.wait_all_tasks_blocked()
        await killed(pid)
        assert harness.events_so_far() == []
        assert await processes(harness) == [init, pid]
        held.set()
    # The request in hand is finished first; then the exit is taken from the mailbox.
    paused, exit = await harness.next_event(), await harness.next_event()
    assert paused.type == EventType.PAUSE
    assert (exit.type, exit.pid, exit.status) == (EventType.EXIT, pid, 128 + 9)
    assert await processes(harness) == [init]
    assert ("drop", f"c1/{pid}", 0) in harness.reaper.calls


async def test_exec_exits_are_published_before_the_inits(harness: Harness, tmp_path: Path) -> None:
    init = await start(harness, tmp_path / "b", "sleep", "100")
    first, second = await exec(harness, "sleep", "100"), await exec(harness, "sleep", "100")
    # The init's exit reaches the mailbox before the exec'd processes' exits do.
    harness.runtime.hold["pause"] = held = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.ask, wire.UpdateContainer(request_id="r", id="c1", status="paused"))
        await trio.testing.wait_all_tasks_blocked()
        await killed(init)
        await killed(first, second)  # the rest of the container, as the kernel ends a pid namespace
        held.set()
    events = [await harness.next_event() for _ in range(4)]
    assert [(e.type, e.pid) for e in events[1:]] in (
        [(EventType.EXIT, first), (EventType.EXIT, second), (EventType.EXIT, init)],
        [(EventType.EXIT, second), (EventType.EXIT, first), (EventType.EXIT, init)],
    )
    assert harness.runtime.calls[-1] == ("delete", "c1")
    assert await harness.ask(wire.State(request_id="r")) == []


async def test_stdin_reaches_the_process_and_close_gives_eof(harness: Harness, tmp_path: Path) -> None:
    await start(harness, tmp_path / "b", "sleep", "100")
    pid = await exec(harness, "sh", "-c", "cat; echo done; sleep 100")
    assert await harness.ask(write(b"hello\n", pid)) == 6
    assert await harness.ask(write(b"", pid, close=True)) == 0
    # cat saw EOF: sh carries on to "done" (and its output pipes stay with the reaper).
    view = await harness.ask(wire.ReadOutput(request_id="r", id="c1", pid=pid))
    received = b""
    while received != b"hello\ndone\n":
        chunk = await view.read(len(received), 0, wait=PATIENCE_S, max_bytes=1024)
        assert chunk.stdout, f"no more output after {received!r}"
        received += chunk.stdout
    await trio.testing.wait_all_tasks_blocked()
    key = f"c1/{pid}"
    assert [call for call in harness.reaper.calls if call[1] == key] == [
        ("keep", key, 3),
        ("drop", key, 0),
        ("keep", key, 2),
    ]
    with pytest.raises(CommandError) as failure:
        await harness.ask(write(b"late", pid))
    assert failure.value.code == ErrorCode.INVALID_STATE and "closed" in failure.value.message


async def test_the_inits_stdin_and_exit_status(harness: Harness, tmp_path: Path) -> None:
    await start(harness, tmp_path / "b", "sh", "-c", "cat; exit 7")
    assert await harness.ask(write(b"to the init", close=True)) == 11
    assert await output_of(harness) == (b"to the init", 7)
    event = await harness.next_event()
    assert (event.type, event.status) == (EventType.EXIT, 7)


async def test_an_exec_whose_exit_never_arrives_still_gets_an_exit_event(
    harness: Harness, tmp_path: Path
) -> None:
    """After a kill of the whole tree, an exec'd process's parent is neither the server nor its
    reaper, and its exit may not be told within the grace after the init's: the container's end
    announces it (with no status, and why) before the init's, instead of leaving a pid a client
    was given with no exit at all (scripts/chaos.py found such lost exits)."""
    init = await start(harness, tmp_path / "b", "sleep", "100")
    original = harness.reaper.wait_for_exit

    async def silent_for_execs(pidfd: int, pid: int, *, started_here: bool = False) -> int | None:
        if pid != init:
            await trio.sleep_forever()  # nobody tells this exit
        return await original(pidfd, pid, started_here=started_here)

    harness.reaper.wait_for_exit = silent_for_execs  # type: ignore[method-assign]
    pid = await exec(harness, "sleep", "100")
    await killed(init, pid)  # as the kernel ends a pid namespace
    events: list = []
    with trio.fail_after(PATIENCE_S + EXECS_EXIT_GRACE_S):
        while len(events) < 2:
            events += harness.events_so_far()
            await trio.sleep(0.05)  # the grace is real time; polled with a deadline
    assert [(e.type, e.pid, e.status) for e in events] == [
        (EventType.EXIT, pid, None),
        (EventType.EXIT, init, 128 + signal.SIGKILL),
    ]
    assert events[0].reason == EXEC_EXIT_UNSEEN_REASON
    assert await harness.ask(wire.State(request_id="r")) == []


async def test_a_stdin_nobody_reads_never_holds_up_the_actor(harness: Harness, tmp_path: Path) -> None:
    init = await start(harness, tmp_path / "b", "sleep", "100")
    written: list[object] = []

    async def write_a_lot() -> None:
        try:
            written.append(await harness.ask(write(b"x" * (4 << 20))))
        except CommandError as error:
            written.append(error.code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_a_lot)
        await trio.testing.wait_all_tasks_blocked()
        assert written == []  # the pipe is full and nobody reads it
        with trio.fail_after(1):
            await harness.ask(wire.Signal(request_id="r", id="c1", signal=signal.SIGCONT))
            assert await processes(harness) == [init]
        kill_container(init)
    # The exit answers the waiting write: the pipe broke with the process.
    assert written == [ErrorCode.INVALID_STATE]


async def test_requests_that_race_with_the_exit_get_an_answer(harness: Harness, tmp_path: Path) -> None:
    init = await start(harness, tmp_path / "b", "sleep", "100")
    harness.runtime.hold["pause"] = held = trio.Event()
    answers: list[object] = []

    async def signal_it() -> None:
        try:
            answers.append(await harness.ask(wire.Signal(request_id="r", id="c1", signal=signal.SIGCONT)))
        except CommandError as error:
            answers.append((error.code, error.message))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(harness.ask, wire.UpdateContainer(request_id="r", id="c1", status="paused"))
        await trio.testing.wait_all_tasks_blocked()
        await killed(init)  # the exit waits in the mailbox
        for _ in range(5):
            nursery.start_soon(signal_it)
        await trio.testing.wait_all_tasks_blocked()
        held.set()
    assert answers == [(ErrorCode.NOT_FOUND, "container 'c1' has exited")] * 5


async def test_a_checkpoint_with_exit_is_answered_once_the_container_is_gone(
    harness: Harness, tmp_path: Path
) -> None:
    init = await start(harness, tmp_path / "b", "sleep", "100")
    harness.runtime.checkpoint_kills = False
    answers: list[object] = []

    async def checkpoint() -> None:
        answers.append(
            await harness.ask(wire.CreateCheckpoint(request_id="r", id="c1", name="cp", exit=True))
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(checkpoint)
        assert (await harness.next_event()).type == EventType.CHECKPOINT
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []
        with pytest.raises(CommandError) as failure:
            await harness.ask(wire.Stats(request_id="r", id="c1"))
        assert (failure.value.code, failure.value.message) == (
            ErrorCode.NOT_FOUND,
            "container 'c1' is exiting",
        )
        # Its checkpoints are listed all the same: the one just taken is there.
        listed = await harness.ask(wire.ListCheckpoints(request_id="r", id="c1"))
        assert [c.name for c in listed] == ["cp"]
        kill_container(init)  # what CRIU does once the dump is written
        exit = await harness.next_event()
        assert (exit.type, exit.pid) == (EventType.EXIT, init)
    [checkpoint_record] = answers
    assert checkpoint_record.name == "cp" and checkpoint_record.exit
    # The id is free at once, and the container comes back from the checkpoint.
    restored = await harness.ask(
        wire.CreateContainer(request_id="r", id="c1", bundle=str(tmp_path / "b"), checkpoint="cp")
    )
    assert restored != init and ("restore", "c1") in harness.runtime.calls


async def test_exec_process_time_is_recorded(harness: Harness, tmp_path: Path) -> None:
    await start(harness, tmp_path / "b", "sleep", "100")
    harness.measurements()
    await exec(harness, "true")
    timed = [m for m in harness.measurements() if isinstance(m, RecordDuration)]
    assert [m.timer for m in timed] == [EXEC_PROCESS_TIME] and timed[0].nanoseconds > 0


async def test_a_terminal_is_resized(harness: Harness, tmp_path: Path) -> None:
    await start(harness, tmp_path / "b", "sleep", "100")
    pid = await exec(harness, "sh", "-c", "read line; stty size", terminal=True)
    await harness.ask(wire.ResizeTerminal(request_id="r", id="c1", pid=pid, rows=33, cols=77))
    await harness.ask(write(b"go\n", pid))
    out, status = await output_of(harness, pid)
    assert b"33 77" in out and status == 0


async def test_adopted_processes_are_tracked_again(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Harness(state)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.supervisor.run)
        init = await start(first, tmp_path / "b", "sleep", "100")
        pid = await exec(first, "sleep", "100")
        nursery.cancel_scope.cancel()  # the server goes; the container stays
    second = Harness(state)
    second.runtime.spawned = first.runtime.spawned
    records = load_records(state / "containers", state / "quarantine")
    async with running(second, await plan_adoptions(records, {}, second.reaper)):
        await trio.testing.wait_all_tasks_blocked()
        assert await processes(second) == [init, pid]
        await second.ask(wire.Signal(request_id="r", id="c1", pid=pid, signal=signal.SIGKILL))
        event = await second.next_event()
        assert (event.pid, event.status) == (pid, 128 + 9)
        kill_container(init)
        event = await second.next_event()
        assert (event.pid, event.status) == (init, 128 + 9)


def test_the_fake_runtime_takes_what_runc_takes() -> None:
    """These tests drive the actor through FakeRuntime: it must accept every call the actor makes of runc.

    ContainerRuntime is made of Runc's own methods, so the fake is compared with it: a parameter added to
    the driver and passed by the actor would otherwise fail only against real runc.
    """
    members = dict(inspect.getmembers(ContainerRuntime, inspect.isfunction))
    assert {"run_detached", "exec_detached", "checkpoint", "delete"} <= members.keys()
    for name, member in members.items():
        if name.startswith("_"):
            continue
        params = list(inspect.signature(member).parameters.values())[1:]
        positional = [object() for p in params if p.default is inspect.Parameter.empty]
        keywords = {p.name: object() for p in params if p.default is not inspect.Parameter.empty}
        fake = inspect.signature(getattr(FakeRuntime, name))
        fake.bind(object(), *positional, **keywords)  # raises TypeError where the fake lags behind


async def test_starts_and_execs_announce_their_intent_and_hand_the_pipes_over_before_runc_runs(
    harness: Harness, tmp_path: Path
) -> None:
    """What a server killed mid-step leaves for the next: the intent, and the pipes in the reaper."""
    paths = container_paths(harness.state_dir, "c1")
    harness.runtime.hold["run"] = run_held = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(start, harness, tmp_path / "b", "sleep", "100")
        await trio.testing.wait_all_tasks_blocked()
        intent = read_intent(paths.intent(IntentOp.START))
        assert (intent.op, intent.id, intent.request_id, intent.kept_key) == ("start", "c1", "r", "c1")
        assert harness.reaper.calls == [("keep", "c1", 3)]  # before runc run, not after the reply
        run_held.set()
    assert paths.intents() == []
    assert ContainerRecord.parse(json.loads(paths.record.read_bytes())).request_id == "r"

    harness.runtime.hold["exec"] = exec_held = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(exec, harness, "sleep", "100")
        await trio.testing.wait_all_tasks_blocked()
        [intent_path] = paths.intents()
        intent = read_intent(intent_path)
        assert (intent.op, intent.number, intent.kept_key) == ("exec", 1, "c1/exec-1")
        assert harness.reaper.calls[-1] == ("keep", "c1/exec-1", 3)
        exec_held.set()
    [(_, pid_key, _)] = [call for call in harness.reaper.calls[-2:] if call[0] == "keep"]
    assert harness.reaper.calls[-2:] == [("keep", pid_key, 3), ("drop", "c1/exec-1", 0)]
    assert paths.intents() == [] and not list(paths.directory.glob("exec-1.*"))
