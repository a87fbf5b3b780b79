"""``OutputView.read_spans(gather=True)``: a caught-up local reader of a busy pipe gets more per reply,
and a short write (a line typed) is answered at once."""

from __future__ import annotations

import trio
import trio.testing

from containerd_actors.daemon.container import stdio
from containerd_actors.daemon.container.stdio import ProcessOutput

BUSY = stdio.BUSY_WRITE_BYTES


async def read_after(output: ProcessOutput, *writes: bytes) -> tuple[int, float]:
    """Start a waiting read, then make ``writes`` one after another, each once the reader waits
    again (as drain rounds come), all at the same instant of a clock that moves only when told;
    then the clock is moved past any gathering. The bytes the read answered with, and the time
    it took."""
    result: list[tuple[int, float]] = []

    async def reader() -> None:
        started = trio.current_time()
        spans = await output.view.read_spans(0, 0, wait=10, max_bytes=16 << 20, gather=True)
        result.append((spans.stdout.length + spans.stderr.length, trio.current_time() - started))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        for data in writes:
            output.stdout.write(data)
            await trio.testing.wait_all_tasks_blocked()
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock)
        clock.jump(stdio.GATHER_S)
    return result[0]


async def test_a_short_write_is_answered_at_once(tmp_path, mock_clock) -> None:
    output = ProcessOutput(1, tmp_path / "out", tmp_path / "err", new=True)
    got, took = await read_after(output, b"a line typed\n", b"x" * BUSY)
    assert (got, took) == (len(b"a line typed\n"), 0)


async def test_a_busy_pipe_s_writes_are_gathered(tmp_path, mock_clock) -> None:
    output = ProcessOutput(1, tmp_path / "out", tmp_path / "err", new=True)
    got, took = await read_after(output, b"x" * BUSY, b"y" * BUSY, b"z" * 100)
    assert got == 2 * BUSY + 100
    assert took <= stdio.GATHER_S


async def test_gathering_stops_at_its_deadline_or_its_size(tmp_path, mock_clock) -> None:
    output = ProcessOutput(1, tmp_path / "out", tmp_path / "err", new=True)
    got, took = await read_after(output, b"x" * BUSY)  # nothing more comes
    assert (got, took) == (BUSY, stdio.GATHER_S)
    output = ProcessOutput(2, tmp_path / "out2", tmp_path / "err2", new=True)
    big = b"x" * stdio.GATHER_BYTES
    got, took = await read_after(output, big, b"never waited for")
    assert (got, took) == (len(big), 0)
