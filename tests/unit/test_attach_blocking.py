"""``ctl.attach_blocking``'s stdin reads, without a daemon."""

from __future__ import annotations

import os

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
