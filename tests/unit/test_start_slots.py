"""StartSlots: the --concurrency limit on runc starts, its order, its same-step hand-over and its end."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from containerd_actors.daemon.container.slots import StartSlots, StartsStopped


async def test_at_most_concurrency_run_at_once_in_the_order_they_asked() -> None:
    slots = StartSlots(2)
    running: list[int] = []
    most = 0
    began: list[int] = []
    release = trio.Event()

    async def start(n: int) -> int:
        nonlocal most
        began.append(n)
        running.append(n)
        most = max(most, len(running))
        await release.wait()
        running.remove(n)
        return n * 10

    results: dict[int, int] = {}

    async def ask(n: int) -> None:
        results[n] = await slots.run(lambda: start(n))

    async with trio.open_nursery() as nursery:
        await nursery.start(slots.serve)
        async with trio.open_nursery() as askers:
            for n in range(5):
                askers.start_soon(ask, n)
                await trio.testing.wait_all_tasks_blocked()
            assert began == [0, 1] and most == 2
            release.set()
        nursery.cancel_scope.cancel()
    assert began == [0, 1, 2, 3, 4] and most == 2
    assert results == {n: n * 10 for n in range(5)}


async def test_a_freed_slot_starts_the_next_in_the_same_step() -> None:
    """No scheduling pass between one start's end and the next one's beginning."""
    slots = StartSlots(1)
    events: list[str] = []
    first_done = trio.Event()

    async def first() -> None:
        await first_done.wait()
        events.append("first ends")

    async def second() -> None:
        events.append("second begins")

    async def bystander() -> None:
        await first_done.wait()
        events.append("bystander runs")

    async with trio.open_nursery() as nursery:
        await nursery.start(slots.serve)
        nursery.start_soon(slots.run, first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(slots.run, second)
        nursery.start_soon(bystander)
        await trio.testing.wait_all_tasks_blocked()
        first_done.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert events.index("second begins") == events.index("first ends") + 1


async def test_an_exception_is_the_askers_and_the_slot_is_freed() -> None:
    slots = StartSlots(1)

    async def fails() -> None:
        raise ValueError("runc said no")

    async def works() -> str:
        return "ok"

    async with trio.open_nursery() as nursery:
        await nursery.start(slots.serve)
        with pytest.raises(ValueError, match="runc said no"):
            await slots.run(fails)
        assert await slots.run(works) == "ok"
        nursery.cancel_scope.cancel()


async def test_starts_queued_or_asked_when_the_runners_stop_fail() -> None:
    slots = StartSlots(1)
    outcomes: list[str] = []

    async def forever() -> None:
        await trio.sleep_forever()

    async def ask() -> None:
        try:
            await slots.run(forever)
        except StartsStopped:
            outcomes.append("stopped")

    async with trio.open_nursery() as outer, trio.open_nursery() as runners:
        await runners.start(slots.serve)
        outer.start_soon(ask)  # runs, then is cancelled with the runners
        outer.start_soon(ask)  # still queued when they stop
        await trio.testing.wait_all_tasks_blocked()
        runners.cancel_scope.cancel()
    assert outcomes == ["stopped", "stopped"]
    with pytest.raises(StartsStopped):
        await slots.run(forever)
