"""systemd's notify protocol as the reaper speaks it: messages, names, fd passing, LISTEN_FDS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fake_systemd import LISTEN_EXEC, FakeSystemd

from containerd_actors.host.sd_notify import (
    Notifier,
    encode,
    parse,
    remove_fields,
    socket_address,
    store_fields,
    take_listen_fds,
    valid_fdname,
)


@pytest.fixture
def manager(work_dir: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(work_dir / "notify")
    yield fake
    fake.close()


def test_messages_are_key_value_lines_both_ways() -> None:
    sent = encode({"READY": "1", "STATUS": "serving (API server pid 7)"})
    assert sent == b"READY=1\nSTATUS=serving (API server pid 7)"
    assert parse(sent) == {"READY": "1", "STATUS": "serving (API server pid 7)"}
    assert encode(store_fields("ca/web/stdout")) == b"FDSTORE=1\nFDNAME=ca/web/stdout\nFDPOLL=0"
    assert encode(remove_fields("ca/web/stdout")) == b"FDSTOREREMOVE=1\nFDNAME=ca/web/stdout"
    with pytest.raises(ValueError):
        encode({"STATUS": "two\nlines"})  # a status is one line; a newline would start a new field


def test_addresses_are_paths_or_abstract_names() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@ns/notify") == "\0ns/notify"
    assert socket_address("vsock:2:1234") is None


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("ca/web/stdout", True),
        ("ca/" + "x" * 128 + "/4194304/stderr", True),
        ("x" * 255, True),
        ("x" * 256, False),
        ("", False),
        ("ca/a:b/stdin", False),  # ':' separates LISTEN_FDNAMES
        ("ca/a\tb/stdin", False),
        ("ca/é/stdin", False),
    ],
)
def test_fd_names_follow_systemds_rules(name: str, valid: bool) -> None:
    assert valid_fdname(name) is valid


def test_a_notifier_sends_fds_with_their_message(manager: FakeSystemd) -> None:
    notifier = Notifier(str(manager.path))
    read_end, write_end = os.pipe()
    try:
        notifier.send(store_fields("ca/web/stdout"), [read_end])
        os.close(read_end)  # the message carries its own copy
        manager.receive()
        assert manager.messages == [{"FDSTORE": "1", "FDNAME": "ca/web/stdout", "FDPOLL": "0"}]
        ((name, stored),) = manager.store
        os.write(write_end, b"kept")
        assert name == "ca/web/stdout" and os.read(stored, 4) == b"kept"
        notifier.send(remove_fields("ca/web/stdout"))
        manager.receive()
        assert manager.store == []
    finally:
        notifier.close()
        os.close(write_end)


def test_a_notifier_waits_for_room_and_never_blocks(work_dir: Path) -> None:
    manager = FakeSystemd(work_dir / "busy", reading=False)
    notifier = Notifier(str(manager.path))
    try:
        for number in range(300):  # far past the socket's queue (net.unix.max_dgram_qlen)
            notifier.send({"STATUS": f"{number}"})
        assert notifier.waiting
        while notifier.waiting:
            manager.receive()
            notifier.flush()
        manager.receive()
        assert [m["STATUS"] for m in manager.messages] == [str(n) for n in range(300)]
    finally:
        notifier.close()
        manager.close()


def test_a_vanished_manager_costs_one_log_line(work_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(work_dir / "nobody-listens"))
    read_end, write_end = os.pipe()
    try:
        notifier.send(store_fields("ca/web/stdout"), [read_end])
        notifier.send({"READY": "1"})
        assert not notifier.waiting
        assert len([r for r in caplog.records if "notify socket" in r.message]) == 1
    finally:
        notifier.close()
        os.close(read_end)
        os.close(write_end)


def test_the_environment_names_the_socket_and_loses_it(manager: FakeSystemd) -> None:
    environ = {"NOTIFY_SOCKET": str(manager.path), "PATH": "/bin"}
    notifier = Notifier.from_environment(environ)
    assert notifier is not None and notifier.address == str(manager.path)
    assert environ == {"PATH": "/bin"}, "runc must not inherit it"
    assert Notifier.from_environment({}) is None


def test_listen_fds_are_ours_only_for_our_pid() -> None:
    environ = {"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDNAMES": "a:b"}
    assert take_listen_fds(environ, os.getpid()) == []
    assert environ == {}, "the variables go, whoever they were meant for"
    assert take_listen_fds({"LISTEN_FDS": "x", "LISTEN_PID": "1"}, 1) == []


def test_listen_fds_come_with_their_names_close_on_exec() -> None:
    """In a child started as systemd starts a service (this process has fds of its own at 3, 4)."""
    script = (
        "import json, os\n"
        "from containerd_actors.host.sd_notify import take_listen_fds\n"
        "taken = take_listen_fds(os.environ, os.getpid())\n"
        "print(json.dumps([taken, [os.get_inheritable(fd) for _n, fd in taken],"
        " [k for k in os.environ if k.startswith('LISTEN_')]]))\n"
    )
    first, second = os.pipe()
    try:
        out = subprocess.run(
            [sys.executable, str(LISTEN_EXEC), f"ca/web/stdin={first}", f"x={second}", "--",
             sys.executable, "-c", script],
            pass_fds=[first, second], capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.close(first)
        os.close(second)
    taken, inheritable, left = json.loads(out)
    assert taken == [["ca/web/stdin", 3], ["x", 4]]
    assert inheritable == [False, False], "neither the API server nor runc may inherit them"
    assert left == []
