"""The reaper's side of systemd's fd store: names, what is stored and removed when, and start-up."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fake_systemd import FakeSystemd

from containerd_actors.host.fds import close_quietly
from containerd_actors.host.sd_notify import Notifier
from containerd_actors.reaper.fdstore import FdStore, assemble, named_fds, parse_name, roles


@pytest.fixture
def manager(work_dir: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(work_dir / "notify")
    yield fake
    fake.close()


@pytest.fixture
def opened() -> Iterator[list[int]]:
    """Fds a test opens; closed after it (a second close of one is harmless)."""
    fds: list[int] = []
    yield fds
    close_quietly(*fds)


def pipe_ends(opened: list[int]) -> list[int]:
    """stdin's write end, stdout's and stderr's read ends: a kept list of a process with pipes."""
    ends = []
    for index in range(3):
        read_end, write_end = os.pipe()
        opened += [read_end, write_end]
        ends.append(write_end if index == 0 else read_end)
    return ends


def store_of(manager: FakeSystemd) -> list[str]:
    manager.receive()
    return sorted(manager.names())


def test_names_say_container_process_and_role(opened: list[int]) -> None:
    ends = pipe_ends(opened)
    assert [name for name, _ in named_fds("web", ends)] == ["ca/web/stdin", "ca/web/stdout", "ca/web/stderr"]
    assert [name for name, _ in named_fds("web/4711", ends[1:])] == [
        "ca/web/4711/stdout",
        "ca/web/4711/stderr",
    ]
    master, slave = os.openpty()
    opened += [master, slave, (copy := os.dup(master))]
    assert roles([master, copy]) == ["pty", None], "the same pty master twice is stored once"
    assert named_fds("web/exec-3", [master, copy]) == [("ca/web/exec-3/pty", master)]
    assert roles(ends[1:2]) == ["fd0"]
    assert parse_name("ca/web/4711/stdout") == ("web/4711", "stdout")
    assert parse_name("ca/web/stdin") == ("web", "stdin")
    assert parse_name("other/web/stdin") is None and parse_name("ca/stdin") is None


def test_a_kept_list_is_rebuilt_from_its_roles(opened: list[int]) -> None:
    ends = pipe_ends(opened)
    assert assemble(dict(zip(("stdin", "stdout", "stderr"), ends, strict=True))) == ends
    assert assemble({"stderr": ends[2], "stdout": ends[1]}) == ends[1:]  # stdin closed before
    master, slave = os.openpty()
    opened += [master, slave]
    terminal = assemble({"pty": master})
    assert terminal is not None and terminal[0] == master and os.path.sameopenfile(*terminal)
    opened.append(terminal[1])
    assert assemble({"stdin": ends[0], "stdout": ends[1]}) is None, "stdin drained as stdout: never"


def test_kept_fds_are_stored_and_dropped_ones_removed(manager: FakeSystemd, opened: list[int]) -> None:
    store = FdStore(Notifier(str(manager.path)))
    init, execd = pipe_ends(opened), pipe_ends(opened)
    store.keep("web", init)
    store.keep("web/4711", execd)
    assert store_of(manager) == sorted(name for key, fds in (("web", init), ("web/4711", execd))
                                       for name, _ in named_fds(key, fds))  # fmt: skip
    sent = len(manager.messages)
    store.keep("web", init)  # the same again (a new server keeps what it adopted)
    manager.receive()
    assert len(manager.messages) == sent, "nothing is stored twice"
    # A client closed stdin: the server drops the key and keeps the outputs alone.
    store.drop("web")
    store.keep("web", init[1:])
    assert store_of(manager) == ["ca/web/4711/stderr", "ca/web/4711/stdin", "ca/web/4711/stdout",
                                 "ca/web/stderr", "ca/web/stdout"]  # fmt: skip
    store.drop("web/4711")
    store.drop("web")
    assert store_of(manager) == []


def test_a_rekeyed_fd_moves_to_its_new_name(manager: FakeSystemd, opened: list[int]) -> None:
    """An exec's ends are kept under ``exec-<n>`` until its pid is known; the store keeps one copy
    of an open file, so the old name must go before the new one can be stored."""
    store = FdStore(Notifier(str(manager.path)))
    ends = pipe_ends(opened)
    store.keep("web/exec-1", ends)
    store.keep("web/4711", ends)
    store.drop("web/exec-1")
    assert store_of(manager) == ["ca/web/4711/stderr", "ca/web/4711/stdin", "ca/web/4711/stdout"]
    assert store.stored_names() == {
        "web/4711": ["ca/web/4711/stderr", "ca/web/4711/stdin", "ca/web/4711/stdout"]
    }


def test_a_store_of_size_zero_is_off(manager: FakeSystemd, opened: list[int]) -> None:
    store = FdStore(Notifier(str(manager.path)), limit=0)
    store.keep("web", pipe_ends(opened))
    manager.receive()
    assert not store.enabled and manager.messages == []


def test_a_store_too_small_is_said_once(
    manager: FakeSystemd, opened: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    store = FdStore(Notifier(str(manager.path)), limit=4)
    with caplog.at_level(logging.WARNING):
        store.keep("a", pipe_ends(opened))
        store.keep("b", pipe_ends(opened))
        store.keep("c", pipe_ends(opened))
    assert len([r for r in caplog.records if "FileDescriptorStoreMax" in r.message]) == 1


def test_start_up_takes_back_what_is_ours_and_closes_the_rest(
    manager: FakeSystemd, opened: list[int]
) -> None:
    store = FdStore(Notifier(str(manager.path)))
    web = pipe_ends(opened)
    half_read, half_write = os.pipe()
    opened += [half_read, half_write]
    master, slave = os.openpty()
    other = pipe_ends(opened)  # "dup"'s own pipes: no two keys share an open file
    stray, twice, twice_again = os.dup(web[0]), other[1], os.dup(other[1])
    opened += [master, slave, stray, twice, twice_again]
    passed = [
        ("ca/web/stdin", web[0]),
        ("ca/web/stdout", web[1]),
        ("ca/web/stderr", web[2]),
        ("ca/tty/4711/pty", master),
        ("ca/half/stdin", half_write),  # its outputs are missing: unusable
        ("something-else", stray),
        ("ca/dup/stdout", twice),
        ("ca/dup/stdout", twice_again),  # the same name twice: one kept
        ("ca/dup/stderr", other[2]),
    ]
    kept = store.restore(passed)
    assert kept.keys() == {"web", "tty/4711", "dup"}
    assert kept["web"] == web
    assert kept["tty/4711"][0] == master and os.path.sameopenfile(*kept["tty/4711"])
    opened.append(kept["tty/4711"][1])
    assert kept["dup"] == [twice, passed[-1][1]]
    os.set_blocking(half_read, False)
    assert os.read(half_read, 1) == b"", "the unusable stdin end was closed"
    manager.receive()
    removed = [m["FDNAME"] for m in manager.messages if m.get("FDSTOREREMOVE") == "1"]
    assert sorted(removed) == ["ca/dup/stderr", "ca/dup/stdout", "ca/half/stdin", "something-else"]
    stored = [m["FDNAME"] for m in manager.messages if m.get("FDSTORE") == "1"]
    assert sorted(stored) == ["ca/dup/stderr", "ca/dup/stdout"], "the twice-named key is stored anew"
    # What came back is known as stored: a drop removes it, a keep of the same stores nothing.
    store.keep("web", web)
    store.drop("tty/4711")
    manager.receive()
    assert manager.messages[-1] == {"FDSTOREREMOVE": "1", "FDNAME": "ca/tty/4711/pty"}
    assert len([m for m in manager.messages if m.get("FDSTORE") == "1"]) == 2


def test_a_handover_stores_only_what_its_sender_had_not(manager: FakeSystemd, opened: list[int]) -> None:
    store = FdStore(Notifier(str(manager.path)))
    stored, new = pipe_ends(opened), pipe_ends(opened)
    store.mark_stored("web", stored, ["ca/web/stdin", "ca/web/stdout", "ca/web/stderr"])
    store.store_unstored({"web": stored, "web/9": new})
    manager.receive()
    assert [m["FDNAME"] for m in manager.messages] == ["ca/web/9/stdin", "ca/web/9/stdout", "ca/web/9/stderr"]
