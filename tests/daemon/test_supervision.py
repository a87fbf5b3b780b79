"""Supervision in-process: crashed actors are restarted and re-adopt what they managed.

Container actors run under the real supervisor with a fake runc (``support.actors``); the events
actor runs with the real API server and client over real nng sockets (``support.events_daemon``);
the metrics actor runs alone. Crashes come from the tests' fault hook (``daemon.faults``) or from
the fake runtime raising, i.e. from inside the actor's own loop, as a bug would.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio
import trio.testing
from support.actors import Harness, running, write_bundle
from support.events_daemon import PER_EVENT, daemon_in_process, read

from containerd_actors import protocol as wire
from containerd_actors.client import Client
from containerd_actors.daemon.container.stdio import OutputView
from containerd_actors.daemon.events.messages import EventDraft, GetStatus
from containerd_actors.daemon.faults import Fault, FaultHook, InjectedFault
from containerd_actors.daemon.mailbox import CommandError, ask, forward
from containerd_actors.daemon.metrics.actor import MetricsActor
from containerd_actors.daemon.metrics.messages import AddToCounter, TakeSnapshot
from containerd_actors.daemon.metrics.registry import ACTOR_RESTARTS, CONTAINERS
from containerd_actors.daemon.supervision import RestartLimitExceeded, RestartWindow, supervise
from containerd_actors.protocol import ErrorCode, EventType, MetricsSnapshot


def create(id: str, bundle: Path) -> wire.CreateContainer:
    return wire.CreateContainer(request_id="r", id=id, bundle=str(bundle))


def stats(id: str) -> wire.Stats:
    return wire.Stats(request_id="r", id=id)


def write(id: str, data: bytes, pid: int = 0) -> wire.WriteInput:
    return wire.WriteInput(request_id="r", id=id, pid=pid, data=data)


async def output_until(view: OutputView, expected: bytes) -> bytes:
    """The process's stdout once it holds ``expected`` (a long poll per step, no sleeps)."""
    seen = b""
    with trio.fail_after(5):
        while expected not in seen:
            chunk = await view.read(len(seen), 0, wait=1.0, max_bytes=1 << 16)
            seen += chunk.stdout
    return seen


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------------------- container actors


async def test_a_crashed_container_actor_is_restarted_and_its_container_stays_controllable(
    tmp_path: Path,
) -> None:
    faults = FaultHook([Fault("container=c1", "Stats", 1)])
    async with running(Harness(tmp_path / "state", faults=faults)) as harness:
        pid = await harness.ask(create("c1", write_bundle(tmp_path / "b", "cat")))
        assert (await harness.next_event()).type == EventType.START_CONTAINER
        exec_pid = await harness.ask(wire.AddProcess(request_id="r", id="c1", args=["cat"]))
        assert (await harness.next_event()).type == EventType.START_PROCESS
        await harness.ask(write("c1", b"before\n"))
        await output_until(await harness.ask(wire.ReadOutput(request_id="r", id="c1")), b"before\n")

        with pytest.raises(CommandError) as failure:
            await harness.ask(stats("c1"))
        assert failure.value.code == ErrorCode.INTERNAL

        restart = await harness.next_event()
        assert (restart.type, restart.id, restart.pid) == (EventType.ACTOR_RESTART, "c1", pid)
        assert restart.reason is not None and "InjectedFault" in restart.reason
        assert AddToCounter(ACTOR_RESTARTS) in harness.measurements()
        [info] = await harness.ask(wire.State(request_id="r"))
        assert (info.id, info.pid) == ("c1", pid)
        assert sorted(process.pid for process in info.processes) == sorted([pid, exec_pid])
        # The pipes survived the crash: both processes still read their stdin and their output
        # goes on in the same logs.
        await harness.ask(write("c1", b"after\n"))
        view = await harness.ask(wire.ReadOutput(request_id="r", id="c1"))
        assert await output_until(view, b"after\n") == b"before\nafter\n"
        await harness.ask(write("c1", b"exec'd\n", pid=exec_pid))
        await output_until(
            await harness.ask(wire.ReadOutput(request_id="r", id="c1", pid=exec_pid)), b"exec'd\n"
        )
        await harness.ask(wire.Signal(request_id="r", id="c1", pid=exec_pid, signal=signal.SIGKILL))
        exit_event = await harness.next_event()
        assert (exit_event.type, exit_event.pid, exit_event.status) == (EventType.EXIT, exec_pid, 137)
        await harness.ask(wire.Signal(request_id="r", id="c1", signal=signal.SIGKILL))
        exit_event = await harness.next_event()
        assert (exit_event.type, exit_event.pid, exit_event.status) == (EventType.EXIT, pid, 137)
        assert await harness.ask(wire.State(request_id="r")) == []
        # Every copy of the pipe ends kept for the successor is closed with the container.
        assert harness.supervisor.keeper.held() == 0


async def test_requests_queued_behind_the_crash_are_served_by_the_new_actor(
    harness: Harness, tmp_path: Path
) -> None:
    pid = await harness.ask(create("c1", write_bundle(tmp_path / "b", "sleep", "100")))
    await harness.next_event()
    harness.runtime.hold["pause"] = held = trio.Event()
    harness.runtime.fail_next["pause"] = RuntimeError("a bug in the pause path")
    answers: list[object] = []

    async def ask_and_keep(request: object) -> None:
        try:
            answers.append(await harness.ask(request))
        except CommandError as error:
            answers.append(error.code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask_and_keep, wire.UpdateContainer(request_id="r", id="c1", status="paused"))
        await trio.testing.wait_all_tasks_blocked()  # the actor waits in runc pause
        nursery.start_soon(ask_and_keep, wire.Signal(request_id="r", id="c1", signal=signal.SIGCONT))
        await trio.testing.wait_all_tasks_blocked()  # queued in the actor's mailbox
        held.set()
    assert answers == [ErrorCode.INTERNAL, None]
    assert (await harness.next_event()).type == EventType.ACTOR_RESTART
    [info] = await harness.ask(wire.State(request_id="r"))
    assert (info.pid, info.status) == (pid, "running")


async def test_an_exit_seen_by_the_crashed_actor_is_reported_by_its_successor(tmp_path: Path) -> None:
    """The daemon is its own subreaper here, so the crashed actor's watcher reaped the init with
    waitpid: only the supervisor's memory of that status lets the successor report it."""
    faults = FaultHook([Fault("container=c1", "InitExited", 1)])
    async with running(Harness(tmp_path / "state", faults=faults)) as harness:
        pid = await harness.ask(create("c1", write_bundle(tmp_path / "b", "sh", "-c", "read x; exit 7")))
        await harness.next_event()
        await harness.ask(write("c1", b"go\n"))
        restart = await harness.next_event()
        assert (restart.type, restart.pid) == (EventType.ACTOR_RESTART, pid)
        exit_event = await harness.next_event()
        assert (exit_event.type, exit_event.pid, exit_event.status) == (EventType.EXIT, pid, 7)
        assert await harness.ask(wire.State(request_id="r")) == []


async def test_an_actor_that_crashes_before_its_container_is_recorded_is_removed(
    harness: Harness, tmp_path: Path
) -> None:
    harness.runtime.fail_next["run"] = RuntimeError("a bug in the start path")
    with pytest.raises(CommandError):
        await harness.ask(create("c1", write_bundle(tmp_path / "b", "sleep", "100")))
    await trio.testing.wait_all_tasks_blocked()
    assert await harness.ask(wire.State(request_id="r")) == []
    assert [m for m in harness.events_so_far() if isinstance(m, EventDraft)] == []


async def test_past_its_restart_limit_a_container_actor_makes_the_supervisor_exit(tmp_path: Path) -> None:
    faults = FaultHook([Fault("container=c1", "Stats")])  # every Stats crashes it
    harness = Harness(tmp_path / "state", faults=faults, restarts_per_minute=2)
    fds_before = open_fds()
    with pytest.RaisesGroup(RestartLimitExceeded, flatten_subgroups=True):
        async with running(harness):
            pid = await harness.ask(create("c1", write_bundle(tmp_path / "b", "sleep", "100")))
            await harness.next_event()
            for restarts in (1, 2):
                with pytest.raises(CommandError):
                    await harness.ask(stats("c1"))
                event = await harness.next_event()
                assert (event.type, event.pid) == (EventType.ACTOR_RESTART, pid)
                assert f"({restarts} of 2 restarts" in (event.reason or "")
            with pytest.raises(CommandError):
                await harness.ask(stats("c1"))
            await trio.sleep_forever()  # the supervisor's exit ends this block
    # The container itself was never touched: the next server adopts it (here the harness kills it).
    assert ("delete", "c1") not in harness.runtime.calls
    assert open_fds() <= fds_before + 1


async def test_each_container_has_its_own_restart_limit(tmp_path: Path) -> None:
    faults = FaultHook([Fault("container=c1", "Stats"), Fault("container=c2", "Stats")])
    async with running(Harness(tmp_path / "state", faults=faults, restarts_per_minute=1)) as harness:
        for id in ("c1", "c2"):
            await harness.ask(create(id, write_bundle(tmp_path / id, "sleep", "100")))
            await harness.next_event()
        for id in ("c1", "c2"):
            with pytest.raises(CommandError):
                await harness.ask(stats(id))
            assert (await harness.next_event()).id == id
        assert sorted(info.id for info in await harness.ask(wire.State(request_id="r"))) == ["c1", "c2"]


# ---------------------------------------------------------------------------- events actor


async def test_the_events_actor_is_restarted_without_losing_or_renumbering_an_event(work_dir: Path) -> None:
    # Only the test asks GetStatus (a Ping reads the published status): the crash comes mid-stream.
    faults = FaultHook([Fault("events", "GetStatus", 1)])
    async with (
        daemon_in_process(work_dir, PER_EVENT, faults=faults) as daemon,
        Client.connect(daemon.address) as client,
        client.subscribe() as subscription,
    ):
        await daemon.emit(50)
        with pytest.raises(CommandError) as failure:
            await ask(daemon.events.mailbox, GetStatus)
        assert failure.value.code == ErrorCode.INTERNAL
        await daemon.emit(50)
        events = await read(subscription, 100)
        assert [event.seq for event in events] == list(range(1, 101))
        assert [event.pid for event in events] == [1000 + n for n in range(50)] * 2
        assert [name for name, _ in daemon.restarts] == ["events"]
        assert daemon.journal.last_seq == 100
        # The old sockets' pipes were counted out as they closed; the subscriber's dialer
        # reconnects to the new socket by itself (after nng's reconnect delay).
        with trio.fail_after(5):
            while (status := await ask(daemon.events.mailbox, GetStatus)).subscribers != 1:
                await trio.sleep(0.02)
        assert status.last_seq == 100


async def test_an_event_that_crashed_the_events_actor_is_published_after_the_restart(work_dir: Path) -> None:
    faults = FaultHook([Fault("events", "EventDraft", 1)])  # the first event crashes it
    async with (
        daemon_in_process(work_dir, PER_EVENT, faults=faults) as daemon,
        Client.connect(daemon.address) as client,
        client.subscribe() as subscription,
    ):
        await daemon.emit(6)
        events = await read(subscription, 6)
        assert [(event.seq, event.pid) for event in events] == [(n + 1, 1000 + n) for n in range(6)]
        assert len(daemon.restarts) == 1


async def test_an_event_that_crashes_the_events_actor_twice_is_dropped(work_dir: Path) -> None:
    faults = FaultHook([Fault("events", "EventDraft", 2)])  # the first event crashes it twice
    async with daemon_in_process(work_dir, PER_EVENT, faults=faults) as daemon:
        await daemon.emit(2)
        await daemon.wait_for_seq(1)
        page = daemon.journal.read(1, 10)
        assert [event.pid for event in page.events] == [1001]
        assert len(daemon.restarts) == 2


# ---------------------------------------------------------------------------- metrics actor


async def test_the_metrics_actor_is_restarted_with_its_running_totals() -> None:
    metrics = MetricsActor(flush_interval=0, faults=FaultHook([Fault("metrics", "Metrics", 1)]))
    restarts: list[str] = []
    counted = trio.Event()

    def restarted(name: str, error: BaseException, count: int) -> None:
        assert isinstance(error, InjectedFault)
        restarts.append(name)
        metrics.mailbox.send_nowait(AddToCounter(ACTOR_RESTARTS))
        counted.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, "metrics", metrics.run, restarted)
        metrics.mailbox.send_nowait(AddToCounter(CONTAINERS, +3))
        with pytest.raises(CommandError) as failure:
            await forward(metrics.mailbox, wire.Metrics(request_id="r"))
        assert failure.value.code == ErrorCode.INTERNAL
        # The failed answer can reach us before the supervisor has counted the restart.
        await counted.wait()
        snapshot = await ask(metrics.mailbox, TakeSnapshot)
        counters = {counter.name: counter.count for counter in snapshot.counters}
        assert (counters[CONTAINERS], counters[ACTOR_RESTARTS]) == (3, 1)
        assert restarts == ["metrics"]
        # Answered again by the new incarnation.
        assert isinstance(await forward(metrics.mailbox, wire.Metrics(request_id="r")), MetricsSnapshot)
        nursery.cancel_scope.cancel()


async def test_past_its_restart_limit_the_metrics_actor_ends_its_supervisor() -> None:
    metrics = MetricsActor(flush_interval=0, faults=FaultHook([Fault("metrics", "AddToCounter")]))
    with pytest.RaisesGroup(RestartLimitExceeded, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "metrics", metrics.run, lambda *_: None, RestartWindow(limit=2))
            for _ in range(3):
                metrics.mailbox.send_nowait(AddToCounter(CONTAINERS))
            await trio.sleep_forever()


async def test_an_ask_in_flight_when_the_metrics_actor_crashes_gets_an_answer() -> None:
    metrics = MetricsActor(flush_interval=0, faults=FaultHook([Fault("metrics", "TakeSnapshot", 1)]))
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, "metrics", metrics.run, lambda *_: None)
        with pytest.raises(CommandError):
            await ask(metrics.mailbox, TakeSnapshot)
        assert isinstance(await ask(metrics.mailbox, TakeSnapshot), MetricsSnapshot)
        nursery.cancel_scope.cancel()
