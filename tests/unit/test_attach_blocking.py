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
