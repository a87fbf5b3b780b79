"""A full state directory: logs drop and count output and mark the gap, starts are refused, and
the daemon log says so once when it fills and once when it has room again. No disk is filled:
``support.full_disk`` stands in for the writes and for statvfs."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
import trio
from support.full_disk import FullDisk

from containerd_actors.daemon.container.logs import RotatingLog, drain_to_log, lost_marker
from containerd_actors.daemon.state.layout import write_json_atomically
from containerd_actors.daemon.state.space import (
    PROBE_INTERVAL_S,
    ROOM_BYTES,
    StateDirFull,
    StateDirSpace,
    state_dir_space,
)
from containerd_actors.protocol import ErrorCode

BIG = 1 << 20


def content(log: RotatingLog) -> bytes:
    return log.path.read_bytes()


def full_and_room_lines(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    messages = [record.getMessage() for record in caplog.records]
    return sum(" is full " in m for m in messages), sum("has room again:" in m for m in messages)


def test_output_beyond_the_room_is_dropped_counted_and_marked_once_there_is_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FullDisk(free=10)
    space = disk.space(tmp_path)
    log = RotatingLog(tmp_path / "out.log", space=space, write=disk.write)
    with caplog.at_level(logging.WARNING):
        log.write(b"hello world\n")  # 10 of 12 bytes fit
        assert space.full
        for _ in range(100):
            log.write(b"x" * 1000)
        assert disk.failed_writes == 1  # while full, no write is even tried
        disk.free = BIG
        log.write(b"y" * 5)  # room, but not probed yet: still dropped
        assert content(log) == b"hello worl"
        assert log.end == 10
        disk.now += PROBE_INTERVAL_S
        log.write(b"after\n")
    lost = 2 + 100 * 1000 + 5
    assert content(log) == b"hello worl\n" + lost_marker(lost) + b"after\n"
    assert lost_marker(lost) == f"[{lost} bytes lost: state dir full]\n".encode()
    assert (log.lost, log.lost_total, space.lost_output_bytes) == (0, lost, lost)
    assert log.end == len(content(log))
    assert full_and_room_lines(caplog) == (1, 1)  # not one line per failed write


def test_a_closed_log_gets_its_marker_when_the_space_has_room_again(tmp_path: Path) -> None:
    disk = FullDisk(free=0)
    space = disk.space(tmp_path)
    changes: list[int] = []
    log = RotatingLog(
        tmp_path / "out.log", on_change=lambda: changes.append(1), space=space, write=disk.write
    )
    log.write(b"abc\n")
    log.close()
    assert log.finished and log.lost == 3 + 1
    disk.free = BIG
    disk.now += PROBE_INTERVAL_S
    assert space.probe()  # what the daemon's watcher does every PROBE_INTERVAL_S
    assert content(log) == lost_marker(4)
    assert log.read(0, 100) == (0, lost_marker(4))
    assert changes  # readers waiting on the log were woken
    assert log._fd == -1  # kept open only until the marker was in


def test_a_marker_that_does_not_fit_whole_is_not_written_at_all(tmp_path: Path) -> None:
    disk = FullDisk(free=4)
    space = disk.space(tmp_path)
    log = RotatingLog(tmp_path / "out.log", space=space, write=disk.write)
    log.write(b"1234567")  # "1234" fits
    disk.free = 10  # statvfs says there is room, but only 10 bytes go in
    disk.reported = BIG
    disk.now += PROBE_INTERVAL_S
    space.probe()
    assert content(log) == b"1234"  # not "1234\n[3 bytes"
    assert space.full and log.lost == 3
    disk.free = BIG
    disk.reported = None
    disk.now += PROBE_INTERVAL_S
    space.probe()
    assert content(log) == b"1234\n" + lost_marker(3)


async def test_a_drain_keeps_emptying_the_pipe_while_the_state_dir_is_full(tmp_path: Path) -> None:
    """The container never blocks on its output, and nothing raises into its actor."""
    disk = FullDisk(free=1000)
    space = disk.space(tmp_path)
    log = RotatingLog(tmp_path / "out.log", space=space, write=disk.write)
    read_fd, write_fd = os.pipe()
    total = 3_000_000

    async def writer() -> None:
        os.set_blocking(write_fd, False)
        sent = 0
        chunk = b"z" * 65536
        try:
            while sent < total:
                try:
                    sent += os.write(write_fd, chunk[: total - sent])
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(write_fd)
        finally:
            trio.lowlevel.notify_closing(write_fd)
            os.close(write_fd)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(drain_to_log, read_fd, log)
    assert log.finished
    assert len(content(log)) == 1000
    assert log.lost == total - 1000


def test_a_start_is_refused_naming_the_state_dir_while_it_is_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FullDisk(free=ROOM_BYTES - 1)
    space = disk.space(tmp_path)
    with caplog.at_level(logging.WARNING), pytest.raises(StateDirFull) as refused:
        space.require_room("start container 'a'")
    assert refused.value.code == ErrorCode.RUNTIME_FAILED
    assert str(tmp_path) in refused.value.message
    assert "no space left on device" in refused.value.message
    assert space.full
    with pytest.raises(StateDirFull):
        space.require_room("start container 'b'")  # probed again at once: a start never waits
    disk.free = ROOM_BYTES
    space.require_room("start container 'c'")
    assert not space.full
    assert full_and_room_lines(caplog) == (1, 1)


def test_callbacks_waiting_for_room_run_once_and_a_failing_one_does_not_stop_the_others(
    tmp_path: Path,
) -> None:
    disk = FullDisk(free=0)
    space = StateDirSpace(tmp_path, room=disk.room, clock=disk.clock)
    called: list[str] = []
    space.report_failure(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), "a test")

    def broken() -> None:
        raise RuntimeError("bug")

    space.when_room(broken)
    space.when_room(lambda: called.append("second"))
    assert not space.probe()
    disk.free = BIG
    assert space.probe()
    assert space.probe()
    assert called == ["second"]
    space.when_room(lambda: called.append("at once"))  # not full: no waiting
    assert called == ["second", "at once"]


async def test_the_watcher_tells_idle_waiters_of_room(tmp_path: Path) -> None:
    disk = FullDisk(free=0)
    space = StateDirSpace(tmp_path, room=disk.room)
    told = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(space.watch)
        space.report_failure(OSError(errno.ENOSPC, "full"), "a test")
        space.when_room(told.set)
        disk.free = BIG
        with trio.fail_after(5 * PROBE_INTERVAL_S):
            await told.wait()
        nursery.cancel_scope.cancel()
    assert not space.full


def test_a_record_that_cannot_be_written_leaves_no_temp_file_and_marks_the_space_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    space = state_dir_space(state_dir)
    record = state_dir / "container.json"
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))  # short, then...
    calls = iter([3])

    def short_then_full(fd: int, data: bytes | memoryview) -> int:
        if next(calls, None) is None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, bytes(data[:3]))

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError) as failed:
        write_json_atomically(record, {"id": "a", "pid": 1234})
    monkeypatch.setattr(os, "write", real_write)
    assert failed.value.errno == errno.ENOSPC
    assert str(record) in str(failed.value)
    assert sorted(p.name for p in state_dir.iterdir()) == []  # no record, no temp file
    assert space.full


def test_a_new_log_full_from_its_first_byte_gets_its_marker_later(tmp_path: Path) -> None:
    disk = FullDisk(free=0)
    space = disk.space(tmp_path)
    log = RotatingLog(tmp_path / "out.log", space=space, write=disk.write, new=True)
    log.write(b"abc\n")
    log.close()
    assert log.lost == 4 and log.end == 0
    disk.free = BIG
    disk.now += PROBE_INTERVAL_S
    assert space.probe()
    assert content(log) == lost_marker(4)
    assert log._fd == -1
