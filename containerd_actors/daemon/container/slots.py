"""The ``--concurrency`` limit on runc starts: as many runner tasks as slots, taking starts in order.

Why not a ``trio.CapacityLimiter``: a slot given back to a limiter wakes the next waiting start,
which runs only in trio's next scheduling pass, after every other task that is ready; under a
burst of starts that pass is long (each start's own work, other runc spawns), and a slot stayed
idle 4-10 ms (median) between one runc's exit and the next runc's spawn, for runs of ~150 ms. A
runner that sees its runc exit takes the next queued start in that same step and spawns it
before anything else runs.

A start's work runs in a runner's task, so the start's own task waits for its outcome whatever
happens to it (shielded): runc may already be running, and only the start that asked knows how
to undo it. Runners stop with the supervisor; starts still queued then fail, and none can queue
after.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")


class StartsStopped(Exception):
    """The daemon is stopping: a start still queued will not run."""


class _Job:
    __slots__ = ("done", "result", "work")

    def __init__(self, work: Callable[[], Awaitable[Any]]) -> None:
        self.work = work
        self.result: outcome.Outcome[Any] | None = None
        self.done = trio.Event()

    def finish(self, result: outcome.Outcome[Any]) -> None:
        self.result = result
        self.done.set()


class StartSlots:
    """At most ``concurrency`` starts' work at once, in the order they asked (see the module docstring)."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._queue_send, self._queue = trio.open_memory_channel[_Job](math.inf)

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` in a slot once one is free; its result or its exception is this call's."""
        job = _Job(work)
        try:
            self._queue_send.send_nowait(job)
        except trio.ClosedResourceError:
            raise StartsStopped("the daemon is stopping") from None
        with trio.CancelScope(shield=True):
            await job.done.wait()
        assert job.result is not None
        result: T = job.result.unwrap()
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancel that came while shielded, delivered here
        return result

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The runners, until cancelled; then the starts still queued fail."""
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.concurrency):
                    nursery.start_soon(self._runner)
                task_status.started()
        finally:
            self._queue_send.close()
            while True:
                try:
                    job = self._queue.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                job.finish(outcome.Error(StartsStopped("the daemon is stopping")))

    async def _runner(self) -> None:
        while True:
            try:
                # The next start in this very step when one waits (the point of this module).
                job = self._queue.receive_nowait()
            except trio.WouldBlock:
                job = await self._queue.receive()
            result = await outcome.acapture(job.work)
            if isinstance(result, outcome.Error) and isinstance(result.error, trio.Cancelled):
                # The runners are being cancelled (the daemon stops): that cancel is this task's.
                job.finish(outcome.Error(StartsStopped("the daemon is stopping")))
                raise result.error
            job.finish(result)
