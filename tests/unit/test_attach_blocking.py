"""``ctl.attach_blocking``'s stdin reads, without a daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctl import attach_blocking


def test_a_read_of_a_non_blocking_stdin_waits_for_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stdin left non-blocking (by whoever shares it) is empty at first: wait, do not fail."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    real_read = os.read
    empty_reads = []

    def read(fd: int, size: int) -> bytes:
        try:
            return real_read(fd, size)
        except BlockingIOError:
            empty_reads.append(fd)
            os.write(write_end, b"late")  # the data arrives only after a read found the pipe empty
            raise

    monkeypatch.setattr(os, "read", read)
    try:
        assert attach_blocking._read(read_end) == b"late"
    finally:
        os.close(read_end)
        os.close(write_end)
    assert empty_reads == [read_end]


def test_devnull_is_told_from_pipes_and_files(tmp_path: Path) -> None:
    """/dev/null's stdin is closed at once; anything else is forwarded by a thread."""
    with open(os.devnull, "rb") as null, open(tmp_path / "empty", "wb") as empty:
        assert attach_blocking._is_devnull(null.fileno())
        assert not attach_blocking._is_devnull(empty.fileno())
    read_end, write_end = os.pipe()
    try:
        assert not attach_blocking._is_devnull(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_stdin_waits_only_while_the_reader_is_behind_and_far_enough_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The output reader behind (a full read) with stdin far ahead of it holds stdin until the
    next read; a reader that is not full (``md5sum``'s) never does, and the wait is bounded."""
    import threading
    import time

    monkeypatch.setattr(attach_blocking, "_FULL_READ_BYTES", 10)
    monkeypatch.setattr(attach_blocking, "_AHEAD_BYTES", 100)
    monkeypatch.setattr(attach_blocking, "_BEHIND_WAIT_S", 30.0)
    backlog = attach_blocking.OutputBacklog()

    backlog.read(b"x" * 5, b"")  # not full: never waits, however far ahead
    backlog.wait(10_000)
    backlog.read(b"x" * 10, b"")  # full, 15 read
    backlog.wait(100)  # 85 ahead: goes
    released = threading.Event()

    def write() -> None:
        backlog.wait(200)  # 185 ahead of a reader that is behind: waits
        released.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not released.wait(0.2)
    backlog.read(b"x" * 3, b"")  # the reader caught up
    assert released.wait(5)
    writer.join()

    monkeypatch.setattr(attach_blocking, "_BEHIND_WAIT_S", 0.05)
    backlog.read(b"x" * 10, b"")
    started = time.monotonic()
    backlog.wait(10_000)  # a full read that was all there was: bounded
    assert time.monotonic() - started < 5
    backlog.finish()
    monkeypatch.setattr(attach_blocking, "_BEHIND_WAIT_S", 30.0)
    backlog.wait(10_000)  # no more reads: never waits
