"""RotatingLog's logical offsets across rotation, tail, and ProcessIO's long poll, without a daemon."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from containerd_actors.daemon.container.stdio import ProcessIO, RotatingLog, StdinClosed, drain_to_log


def read_all(log: RotatingLog, offset: int) -> tuple[int, bytes]:
    first, data = log.read(offset, 1 << 20)
    out = data
    position = first + len(data)
    while data:
        _, data = log.read(position, 1 << 20)
        out += data
        position += len(data)
    return first, out


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
    first, data = read_all(log, log.start)
    assert data == written[log.start :]
    # A reader whose offset was rotated away moves up to the oldest byte kept.
    first, data = read_all(log, 0)
    assert first == log.start and data == written[log.start :]
    # A reader in the middle of the rotated generation continues byte-exact into the current one.
    middle = log.start + 5
    assert read_all(log, middle) == (middle, written[middle:])
    log.close()
    assert log.finished


def test_tail_offsets(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "out.log", rotate_bytes=64)
    text = b"".join(f"{n}\n".encode() for n in range(1, 41))
    log.write(text[:50])
    log.write(text[50:])
    assert read_all(log, log.tail_offset(3))[1] == b"38\n39\n40\n"
    assert log.tail_offset(0) == log.end
    assert log.tail_offset(10**6) == log.start
    log.write(b"no newline yet")
    assert read_all(log, log.tail_offset(2))[1] == b"40\nno newline yet"


async def test_process_io_long_poll_wakes_on_output_and_on_exit(tmp_path: Path) -> None:
    stdin_read, stdin_write = os.pipe()
    out_read, out_write = os.pipe()
    io = ProcessIO(tmp_path / "o.log", tmp_path / "e.log", stdin_write)
    results = []

    async def reader(offset: int = 0) -> None:
        results.append(await io.read(offset, 0, wait=10, max_bytes=1024))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_to_log, out_read, io.stdout)
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert results == []
        os.write(out_write, b"hello")
        await trio.testing.wait_all_tasks_blocked()
        assert results[0].stdout == b"hello" and not results[0].exited
        # stdin reaches the pipe; EOF closes it.
        assert await io.write_input(b"typed", timeout=1) == 5
        assert os.read(stdin_read, 10) == b"typed"
        io.end_input()
        assert os.read(stdin_read, 10) == b""
        try:
            await io.write_input(b"late", timeout=1)
        except StdinClosed:
            pass
        else:
            raise AssertionError("writing after EOF must fail")
        nursery.start_soon(reader, 5)
        await trio.testing.wait_all_tasks_blocked()
        os.close(out_write)
        await trio.testing.wait_all_tasks_blocked()
        io.stderr.close()
        io.mark_exited(3)
    last = results[1]
    assert (last.stdout, last.exited, last.status) == (b"", True, 3)
    # Everything read: the end is reported at once.
    done = await io.read(5, 0, wait=10, max_bytes=1024)
    assert (done.stdout, done.exited, done.status) == (b"", True, 3)
    os.close(stdin_read)
