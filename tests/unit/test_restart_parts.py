"""The pieces of supervision without actors: restart windows, ``supervise``, the fault hook, and
the supervisor's copies of pipe ends."""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio
import trio.testing

from containerd_actors.daemon.faults import (
    ENABLE_VARIABLE,
    FAULTS_VARIABLE,
    Fault,
    FaultHook,
    InjectedFault,
    message_name,
)
from containerd_actors.daemon.mailbox import Ask
from containerd_actors.daemon.metrics.messages import AddToCounter
from containerd_actors.daemon.supervision import (
    RestartLimitExceeded,
    RestartWindow,
    crash_summary,
    root_cause,
    supervise,
)
from containerd_actors.daemon.supervisor.keeper import PipeKeeper
from containerd_actors.host.reaping import LocalSubreaper
from containerd_actors.protocol import Stats

# ---------------------------------------------------------------------------- restart window


def test_the_restart_window_forgets_restarts_older_than_a_minute() -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        window = RestartWindow(limit=2, window_s=60)
        assert window.record("a") == 1
        clock.jump(30)
        assert window.record("a") == 2
        clock.jump(31)  # the first is now more than a minute old
        assert window.record("a") == 2
        with pytest.raises(RestartLimitExceeded, match="a crashed 3 times within 60 s"):
            window.record("a")

    trio.run(main, clock=clock)


# ---------------------------------------------------------------------------- supervise


class Flaky:
    """An actor loop that crashes ``crashes`` times, before or after it is ready, then runs."""

    def __init__(self, crashes: int, before_ready: bool = False) -> None:
        self.crashes = crashes
        self.before_ready = before_ready
        self.runs = 0
        self.running = trio.Event()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        if self.before_ready and self.crashes:
            self.crashes -= 1
            raise ValueError(f"bug {self.runs}")
        task_status.started(self.runs)
        await trio.sleep(0)
        if self.crashes:
            self.crashes -= 1
            raise ValueError(f"bug {self.runs}")
        self.running.set()
        await trio.sleep_forever()


async def test_supervise_restarts_a_crashed_loop_and_tells_each_restart() -> None:
    flaky = Flaky(crashes=2)
    told: list[tuple[str, str, int]] = []
    async with trio.open_nursery() as nursery:
        assert (
            await nursery.start(supervise, "x", flaky.run, lambda *a: told.append((a[0], str(a[1]), a[2])))
            == 1
        )
        with trio.fail_after(5):
            await flaky.running.wait()
        nursery.cancel_scope.cancel()
    assert flaky.runs == 3
    assert told == [("x", "bug 1", 1), ("x", "bug 2", 2)]


async def test_a_crash_before_the_first_start_is_a_start_up_failure() -> None:
    flaky = Flaky(crashes=1, before_ready=True)
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="bug 1"), flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "x", flaky.run, lambda *_: None)
    assert flaky.runs == 1


async def test_supervise_gives_up_past_the_limit() -> None:
    flaky = Flaky(crashes=10)
    with pytest.RaisesGroup(RestartLimitExceeded, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervise, "x", flaky.run, lambda *_: None, RestartWindow(limit=3))
    assert flaky.runs == 4


def test_the_summary_of_a_crash_names_the_exception_inside_the_nurseries_groups() -> None:
    error = ExceptionGroup("nursery", [ExceptionGroup("inner", [KeyError("k")])])
    assert isinstance(root_cause(error), KeyError)
    assert crash_summary(error) == "KeyError: 'k'"


# ---------------------------------------------------------------------------- faults


def test_a_fault_fires_on_its_actor_and_message_only_as_often_as_told() -> None:
    hook = FaultHook([Fault.parse("container=web:Stats:2"), Fault.parse("metrics:AddToCounter")])
    stats = Ask(Stats(request_id="r", id="web"), reply_to=None)  # type: ignore[arg-type]
    assert message_name(stats) == "Stats" and message_name(AddToCounter("x")) == "AddToCounter"
    hook.check("container=other", stats)
    hook.check("events", stats)
    for _ in range(2):
        with pytest.raises(InjectedFault):
            hook.check("container=web", stats)
    hook.check("container=web", stats)  # spent
    for _ in range(3):
        with pytest.raises(InjectedFault):
            hook.check("metrics", AddToCounter("x"))


def test_faults_are_read_from_the_environment_only_when_enabled_for_tests() -> None:
    listed = {FAULTS_VARIABLE: "events:EventDraft:1, metrics:Metrics"}
    assert not FaultHook.from_environment(listed)
    assert not FaultHook.from_environment({ENABLE_VARIABLE: "yes", **listed})
    hook = FaultHook.from_environment({ENABLE_VARIABLE: "1", **listed})
    with pytest.raises(InjectedFault):
        hook.check("events", object.__new__(type("EventDraft", (), {})))
    assert not FaultHook.from_environment({ENABLE_VARIABLE: "1"})


@pytest.mark.parametrize("text", ["events", ":Stats", "events:Stats:0", "events:Stats:x", "a:b:1:2"])
def test_a_malformed_fault_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Fault.parse(text)


# ---------------------------------------------------------------------------- pipe keeper


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def test_the_keeper_holds_copies_until_dropped_and_hands_out_fresh_ones() -> None:
    keeper = PipeKeeper(LocalSubreaper())
    init_read, init_write = os.pipe()
    exec_read, exec_write = os.pipe()
    try:
        await keeper.keep("c1", [init_write, init_read])
        await keeper.keep("c1/42", [exec_read])
        keeper.hold("c10", [exec_read])  # another container whose id starts alike
        os.close(init_read)  # the actor's own end goes (a drain stopped): the copy stays
        init, execs = keeper.copies_for("c1")
        assert len(init) == 2 and list(execs) == ["c1/42"]
        os.write(init[0], b"x")
        assert os.read(init[1], 1) == b"x"  # the pipe is still whole through the copies
        for fd in [*init, *execs["c1/42"]]:
            os.close(fd)
        assert keeper.held() == 4
        await keeper.drop("c1/42")
        assert keeper.held() == 3
        keeper.forget("c1")
        assert keeper.held() == 1
        keeper.close_all()
        assert keeper.held() == 0
    finally:
        for fd in (init_write, exec_read, exec_write):
            os.close(fd)


async def test_the_keeper_remembers_an_exit_until_it_is_acknowledged() -> None:
    keeper = PipeKeeper(LocalSubreaper())
    pid = os.posix_spawnp("sh", ["sh", "-c", "exit 5"], dict(os.environ))
    pidfd = os.pidfd_open(pid)
    try:
        assert await keeper.wait_for_exit(pidfd, pid) == 5
    finally:
        os.close(pidfd)
    assert keeper.exited_while_away(pid) == 5  # what a crashed actor's successor asks first
    await keeper.acknowledge(pid)
    assert keeper.exited_while_away(pid) is None
