"""The reaper's handover across an upgrade's exec, read back in the same process."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from containerd_actors.reaper.handover import (
    HANDOVER_ENV,
    Handover,
    HandoverError,
    take_handover,
    write_handover,
)


@pytest.fixture
def pipes() -> Iterator[list[int]]:
    fds = [*os.pipe(), *os.pipe()]
    yield fds
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def test_an_ordinary_start_has_no_handover(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HANDOVER_ENV, raising=False)
    assert take_handover() is None


def test_the_handover_names_the_same_descriptors_and_closes_them_on_exec_again(
    pipes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = Handover(
        lock_fd=pipes[0],
        kept={"c1": pipes[1:3], "c1:exec-9": [pipes[3]]},
        from_version="0.0.9",
        stored={"c1": ["ca/c1/stdout", "ca/c1/stderr"]},  # what is in systemd's fd store already
    )
    memfd = write_handover(sent)
    assert all(os.get_inheritable(fd) for fd in pipes), "they must cross the exec"
    monkeypatch.setenv(HANDOVER_ENV, str(memfd))
    received = take_handover()
    assert received == sent
    assert HANDOVER_ENV not in os.environ, "the API server must not see it"
    assert not any(os.get_inheritable(fd) for fd in pipes), "nor inherit the pipe ends"


def test_a_handover_naming_a_closed_descriptor_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    memfd = write_handover(Handover(lock_fd=read_end, kept={"c1": [write_end]}, from_version="x"))
    os.close(write_end)
    os.close(read_end)
    monkeypatch.setenv(HANDOVER_ENV, str(memfd))
    with pytest.raises(HandoverError, match="not open"):
        take_handover()


def test_garbage_in_the_handover_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    memfd = os.memfd_create("garbage", 0)
    os.write(memfd, b"{not json")
    monkeypatch.setenv(HANDOVER_ENV, str(memfd))
    with pytest.raises(HandoverError, match="unreadable"):
        take_handover()


def test_a_handover_from_a_version_without_the_fd_store_stored_nothing(
    pipes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    memfd = os.memfd_create("older", 0)
    os.write(memfd, json.dumps({"version": 1, "lock_fd": pipes[0], "kept": {"c1": pipes[1:3]}}).encode())
    monkeypatch.setenv(HANDOVER_ENV, str(memfd))
    received = take_handover()
    assert received is not None and received.stored == {}
