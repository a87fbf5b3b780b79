"""Ordered WriteInputs (``writer`` and ``offset``, protocol revision 6): several in flight, in any
order and any number of times, reach the process's stdin once each and in order."""

from __future__ import annotations

import os

import pytest
import trio

from containerd_actors.daemon.container import stdin
from containerd_actors.daemon.container.stdin import StdinPort
from containerd_actors.daemon.mailbox import Answer, Ask
from containerd_actors.protocol import WriteInput


def ordered(data: bytes, offset: int, writer: str = "w1", close: bool = False) -> WriteInput:
    return WriteInput(request_id="r", id="c1", pid=7, data=data, close=close, writer=writer, offset=offset)


def send(port: StdinPort, request: WriteInput) -> trio.MemoryReceiveChannel[Answer]:
    """Hand the request over as the actor would; its answer comes on the returned channel."""
    reply_send, reply_receive = trio.open_memory_channel[Answer](1)
    port.offer(Ask(request, reply_send))
    return reply_receive


async def answered(reply: trio.MemoryReceiveChannel[Answer]) -> object:
    return (await reply.receive()).unwrap()


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    parts = []
    while True:
        try:
            part = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not part:
            break
        parts.append(part)
    return b"".join(parts)


async def test_writes_out_of_order_and_repeated_reach_stdin_once_in_order() -> None:
    stdin_read, stdin_write = os.pipe()
    actor_send, _ = trio.open_memory_channel[object](8)
    async with trio.open_nursery() as nursery:
        port = StdinPort("c1", 7, stdin_write, terminal=False, actor=actor_send, nursery=nursery)
        third = send(port, ordered(b"ghi", 6))
        second = send(port, ordered(b"def", 3))
        await trio.testing.wait_all_tasks_blocked()
        assert read_all(stdin_read) == b""  # both wait for the bytes before them
        first = send(port, ordered(b"abc", 0))
        assert [await answered(r) for r in (first, second, third)] == [3, 3, 3]
        again = send(port, ordered(b"def", 3))  # a duplicate: already written, counted, skipped
        overlap = send(port, ordered(b"hijk", 7))  # half old, half new
        assert [await answered(r) for r in (again, overlap)] == [3, 4]
        assert read_all(stdin_read) == b"abcdefghijk"
        port.close()
    os.close(stdin_read)


async def test_writers_are_ordered_each_in_its_own_stream_and_plain_writes_go_as_they_come() -> None:
    stdin_read, stdin_write = os.pipe()
    actor_send, _ = trio.open_memory_channel[object](8)
    async with trio.open_nursery() as nursery:
        port = StdinPort("c1", 7, stdin_write, terminal=False, actor=actor_send, nursery=nursery)
        later = send(port, ordered(b"2", 1, writer="a"))
        other = send(port, ordered(b"x", 0, writer="b"))
        plain = send(port, WriteInput(request_id="r", id="c1", pid=7, data=b"-"))
        assert [await answered(r) for r in (other, plain)] == [1, 1]
        first = send(port, ordered(b"1", 0, writer="a"))
        assert [await answered(r) for r in (first, later)] == [1, 1]
        assert read_all(stdin_read) == b"x-12"
        port.close()
    os.close(stdin_read)


async def test_a_write_ahead_of_a_gap_that_never_fills_answers_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stdin, "WRITE_INPUT_TIMEOUT_S", 0.05)
    stdin_read, stdin_write = os.pipe()
    actor_send, _ = trio.open_memory_channel[object](8)
    async with trio.open_nursery() as nursery:
        port = StdinPort("c1", 7, stdin_write, terminal=False, actor=actor_send, nursery=nursery)
        assert await answered(send(port, ordered(b"later", 5))) == 0
        # Resent in order, all of it goes.
        assert await answered(send(port, ordered(b"first", 0))) == 5
        assert await answered(send(port, ordered(b"later", 5, close=True))) == 5
        assert read_all(stdin_read) == b"firstlater"
        port.close()
    os.close(stdin_read)


async def test_the_close_of_an_ordered_writer_waits_for_its_bytes_and_parked_writes_are_refused_on_exit() -> (
    None
):
    stdin_read, stdin_write = os.pipe()
    actor_send, _ = trio.open_memory_channel[object](8)
    async with trio.open_nursery() as nursery:
        port = StdinPort("c1", 7, stdin_write, terminal=False, actor=actor_send, nursery=nursery)
        eof = send(port, ordered(b"", 3, close=True))
        await trio.testing.wait_all_tasks_blocked()
        assert await answered(send(port, ordered(b"abc", 0))) == 3
        assert await answered(eof) == 0
        assert read_all(stdin_read) == b"abc"  # and EOF
        port.close()

        stdin_read2, stdin_write2 = os.pipe()
        port2 = StdinPort("c1", 8, stdin_write2, terminal=False, actor=actor_send, nursery=nursery)
        parked = send(port2, ordered(b"z", 9))
        await trio.testing.wait_all_tasks_blocked()
        port2.close()  # the process exited
        with pytest.raises(Exception, match="closed"):
            await answered(parked)
    os.close(stdin_read)
    os.close(stdin_read2)


async def test_no_more_writes_wait_for_a_gap_than_the_queue_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stdin, "QUEUED_INPUTS", 2)
    stdin_read, stdin_write = os.pipe()
    actor_send, _ = trio.open_memory_channel[object](8)
    async with trio.open_nursery() as nursery:
        port = StdinPort("c1", 7, stdin_write, terminal=False, actor=actor_send, nursery=nursery)
        waiting = [send(port, ordered(b"x", offset)) for offset in (1, 2)]
        await trio.testing.wait_all_tasks_blocked()
        assert await answered(send(port, ordered(b"x", 3))) == 0  # a third is told to resend
        assert await answered(send(port, ordered(b"x", 0))) == 1
        assert [await answered(r) for r in waiting] == [1, 1]
        assert read_all(stdin_read) == b"xxx"
        port.close()
    os.close(stdin_read)
