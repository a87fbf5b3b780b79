"""RotatingLog's offsets across rotation, tail, the output long poll and the stdin port, without a daemon."""

from __future__ import annotations

import fcntl
import gc
import os
import weakref
from pathlib import Path

import pytest
import trio
from support.logs import read_to_end

from containerd_actors.daemon.container import stdin
from containerd_actors.daemon.container.logs import RotatingLog, drain_to_log
from containerd_actors.daemon.container.messages import InputClosed
from containerd_actors.daemon.container.stdin import StdinPort
from containerd_actors.daemon.container.stdio import ProcessOutput
from containerd_actors.daemon.mailbox import Answer, Ask, CommandError
from containerd_actors.protocol import ErrorCode, ResizeTerminal, WriteInput

F_GETPIPE_SZ = 1032


def test_offsets_survive_rotation_and_old_output_is_reported_as_skipped(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "out.log", rotate_bytes=100)
    written = b""
    for n in range(30):
        chunk = f"line {n:03}\n".encode()  # 9 bytes
        log.write(chunk)
        written += chunk
    assert log.end == len(written)
    # Two generations are kept: whatever starts at or after log.start reads back exactly.
    assert 0 < log.start < log.end - 100
    first, data = read_to_end(log, log.start)
    assert data == written[log.start :]
    # A reader whose offset was rotated away moves up to the oldest byte kept.
    first, data = read_to_end(log, 0)
    assert first == log.start and data == written[log.start :]
    # A reader in the middle of the rotated generation continues byte-exact into the current one.
    middle = log.start + 5
    assert read_to_end(log, middle) == (middle, written[middle:])
    log.close()
    assert log.finished


def test_tail_offsets(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "out.log", rotate_bytes=64)
    text = b"".join(f"{n}\n".encode() for n in range(1, 41))
    log.write(text[:50])
    log.write(text[50:])
    assert read_to_end(log, log.tail_offset(3))[1] == b"38\n39\n40\n"
    assert log.tail_offset(0) == log.end
    assert log.tail_offset(10**6) == log.start
    log.write(b"no newline yet")
    assert read_to_end(log, log.tail_offset(2))[1] == b"40\nno newline yet"


async def test_output_long_poll_wakes_on_output_and_on_exit(tmp_path: Path) -> None:
    out_read, out_write = os.pipe()
    output = ProcessOutput(7, tmp_path / "o.log", tmp_path / "e.log")
    view = output.view
    results = []

    async def reader(offset: int = 0) -> None:
        results.append(await view.read(offset, 0, wait=10, max_bytes=1024))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_to_log, out_read, output.stdout)
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert results == []
        os.write(out_write, b"hello")
        await trio.testing.wait_all_tasks_blocked()
        assert results[0].stdout == b"hello" and not results[0].exited
        nursery.start_soon(reader, 5)
        await trio.testing.wait_all_tasks_blocked()
        os.close(out_write)
        await trio.testing.wait_all_tasks_blocked()
        output.stderr.close()
        output.mark_exited(3)
    last = results[1]
    assert (last.stdout, last.exited, last.status) == (b"", True, 3)
    # Everything read: the end is reported at once.
    done = await view.read(5, 0, wait=10, max_bytes=1024)
    assert (done.stdout, done.exited, done.status) == (b"", True, 3)
    assert view.pid == 7 and not view.terminal


def test_a_forgotten_output_is_freed_without_the_garbage_collector(tmp_path: Path) -> None:
    """No reference cycle: the soak forgets an exited container's output every cycle, and a
    cycle would keep each until a collection (thousands of them, MiB of RSS, at a time)."""
    output = ProcessOutput(7, tmp_path / "o.log", tmp_path / "e.log")
    output.stdout.write(b"some output\n")
    output.close_logs()
    output.mark_exited(0)
    view = output.view
    del output
    gc.disable()
    try:
        gone = weakref.ref(view._output)
        assert gone() is not None
        del view
        assert gone() is None  # freed by reference counting alone
    finally:
        gc.enable()


def write_input(data: bytes, close: bool = False) -> WriteInput:
    return WriteInput(request_id="r", id="c1", pid=7, data=data, close=close)


async def offer(port: StdinPort, request: WriteInput | ResizeTerminal) -> object:
    """What the container actor does with a stdin request: hand it over, and the port answers."""
    reply_send, reply_receive = trio.open_memory_channel[Answer](1)
    port.offer(Ask(request, reply_send))
    return (await reply_receive.receive()).unwrap()


async def test_stdin_reaches_the_pipe_and_eof_closes_it() -> None:
    stdin_read, stdin_write = os.pipe()
    actor_send, actor_receive = trio.open_memory_channel[object](8)
    async with trio.open_nursery() as nursery:
        port = StdinPort("c1", 7, stdin_write, terminal=False, actor=actor_send, nursery=nursery)
        assert await offer(port, write_input(b"typed")) == 5
        assert os.read(stdin_read, 10) == b"typed"
        assert await offer(port, write_input(b"", close=True)) == 0
        assert os.read(stdin_read, 10) == b""
        # The actor is told, so that the reaper lets go of its copy of the pipe end.
        assert await actor_receive.receive() == InputClosed(7)
        with pytest.raises(CommandError) as failure:
            await offer(port, write_input(b"late"))
        assert failure.value.code == ErrorCode.INVALID_STATE and "closed" in failure.value.message
        with pytest.raises(CommandError) as failure:
            await offer(port, ResizeTerminal(request_id="r", id="c1", pid=7, rows=5, cols=5))
        assert failure.value.code == ErrorCode.INVALID_STATE and "no terminal" in failure.value.message
        port.close()
    os.close(stdin_read)


async def test_a_stdin_nobody_reads_gives_up_and_closing_answers_the_waiting_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stdin_read, stdin_write = os.pipe()
    capacity = fcntl.fcntl(stdin_write, F_GETPIPE_SZ)
    monkeypatch.setattr(stdin, "WRITE_INPUT_TIMEOUT_S", 0.05)
    actor_send, _ = trio.open_memory_channel[object](8)
    answers: list[object] = []
    async with trio.open_nursery() as nursery:
        port = StdinPort("c1", 7, stdin_write, terminal=False, actor=actor_send, nursery=nursery)
        # More than the pipe holds: the write reports what got in once the time is up.
        assert await offer(port, write_input(b"x" * (capacity + 100))) == capacity

        async def write_more() -> None:
            try:
                answers.append(await offer(port, write_input(b"y" * 100)))
            except CommandError as error:
                answers.append(error.code)

        monkeypatch.setattr(stdin, "WRITE_INPUT_TIMEOUT_S", 60)
        nursery.start_soon(write_more)
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []
        # The process exits while the write waits: it is answered at once, not after the timeout.
        with trio.fail_after(1):
            port.close()
            await trio.testing.wait_all_tasks_blocked()
    # Nothing of it got in, so the writer hears that the stdin is closed.
    assert answers == [ErrorCode.INVALID_STATE]
    os.close(stdin_read)


def test_a_new_log_makes_its_file_with_the_first_byte(tmp_path: Path) -> None:
    """A container's logs are made only once it writes: most of a burst of starts never do."""
    path = tmp_path / "out.log"
    log = RotatingLog(path, rotate_bytes=64, new=True)
    assert not path.exists()
    assert (log.start, log.end) == (0, 0)
    assert log.read(0, 100) == (0, b"")
    assert log.tail_offset(3) == 0
    log.write(b"first\n")
    assert path.read_bytes() == b"first\n"
    log.write(b"x" * 80)  # rotates as any log does
    assert log.base == 6
    assert read_to_end(log, log.start)[1] == b"first\n" + b"x" * 80
    log.close()
    assert log.finished and log.end == 86


def test_a_new_log_never_written_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "err.log"
    log = RotatingLog(path, new=True)
    log.close()
    assert log.finished and (log.base, log.end) == (0, 0) and not path.exists()
