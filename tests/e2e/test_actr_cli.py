"""``actr`` as a process, without a real daemon: error messages, exit codes, streams and signals.

Commands that need a daemon talk to ``FakeDaemon``, a few lines of pynng Rep0/Pub0 speaking the
real wire codec in a thread, so the CLI is exercised through the real client library.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pynng
import pytest
from support.containers import make_container

from containerd_actors.protocol import (
    ContainerInfo,
    CreateContainer,
    CreateContainerReply,
    ErrorReply,
    Event,
    Events,
    EventsReply,
    MachineInfo,
    Ping,
    PingReply,
    Signal,
    SignalReply,
    State,
    StateReply,
    decode_request,
    encode_event,
    encode_reply,
)
from ctl.main import main

REPO = Path(__file__).resolve().parents[2]


def run_actr(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ctl`` (the same entry point as the installed ``actr``) as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "ctl", *args], capture_output=True, text=True, cwd=REPO, timeout=30, **kwargs
    )


def missing_address() -> str:
    return f"ipc:///tmp/definitely-missing-{uuid.uuid4().hex}.sock"


# --------------------------------------------------------------------------- unreachable daemon


def test_unreachable_daemon_is_one_line_and_exit_1() -> None:
    address = missing_address()
    result = run_actr("--address", address, "containers")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"actr: cannot reach containerd-actors at {address}: ")
    assert "Traceback" not in result.stderr


def test_unreachable_daemon_with_debug_shows_traceback() -> None:
    address = missing_address()
    result = run_actr("--debug", "--address", address, "events")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    last_line = result.stderr.rstrip().splitlines()[-1]
    assert last_line.startswith(f"actr: cannot reach containerd-actors at {address}")


def test_installed_script_and_module_main(tmp_path: Path) -> None:
    address = missing_address()
    module = subprocess.run(
        [sys.executable, "-m", "ctl.main", "--address", address, "containers"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert module.returncode == 1
    assert address in module.stderr
    script = Path(sys.executable).with_name("actr")
    if script.exists():
        installed = subprocess.run(
            [str(script), "--address", address, "containers"], capture_output=True, text=True, timeout=30
        )
        assert installed.returncode == 1
        assert installed.stderr == module.stderr


def test_bare_socket_path_is_accepted(tmp_path: Path) -> None:
    result = run_actr("--address", str(tmp_path / "nope.sock"), "containers")
    assert result.returncode == 1
    assert f"ipc://{tmp_path}/nope.sock" in result.stderr


# --------------------------------------------------------------------------- against a fake daemon


def complete(cls: type, **known: Any) -> Any:
    """Build a reply, filling any field the test does not care about, so new wire fields don't break it."""
    fillers: dict[Any, Any] = {int: 0, "int": 0, str: "", "str": ""}
    for field in attrs.fields(cls):
        if field.name not in known and field.default is attrs.NOTHING:
            known[field.name] = fillers.get(field.type)
    return cls(**known)


class FakeDaemon:
    """Rep0 + Pub0 sockets answering with the real codec; records every request it decodes."""

    def __init__(self) -> None:
        stem = f"/tmp/actr-test-{uuid.uuid4().hex[:12]}"
        self.address = f"ipc://{stem}.sock"
        self.events_address = f"ipc://{stem}-events.sock"
        self.paths = [Path(f"{stem}.sock"), Path(f"{stem}-events.sock")]
        self.containers: list[ContainerInfo] = []
        self.requests: list[Any] = []
        self.fail: dict[type, ErrorReply] = {}
        self._rep = pynng.Rep0(listen=self.address, recv_timeout=100)
        self._pub = pynng.Pub0(listen=self.events_address)
        self._seq = 0
        self.published: list[Event] = []  # its journal: Events requests are answered from it
        self.first_available_seq = 1  # raise it to play a journal whose retention has passed
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _reply(self, request: Any) -> Any:
        if type(request) in self.fail:
            return attrs.evolve(self.fail[type(request)], request_id=request.request_id)
        if isinstance(request, Ping):
            return complete(
                PingReply,
                request_id=request.request_id,
                daemon_id="fake",
                version="0",
                events_address=self.events_address,
                last_event_seq=self._last_published_seq(),
            )
        if isinstance(request, Events):
            last = self._last_published_seq()
            first = max(request.from_seq, self.first_available_seq)
            page = [e for e in self.published[:last] if e.seq >= first][: request.limit]
            next_seq = page[-1].seq + 1 if page else max(first, last + 1)
            return EventsReply(request.request_id, page, next_seq, last, self.first_available_seq)
        if isinstance(request, State):
            return StateReply(request.request_id, self.containers, MachineInfo("fake", 1, 1))
        if isinstance(request, CreateContainer):
            return CreateContainerReply(request.request_id, 4242)
        if isinstance(request, Signal):
            return SignalReply(request.request_id)
        raise AssertionError(request)

    def _serve(self) -> None:
        while True:
            try:
                raw = self._rep.recv()
            except pynng.Timeout:
                continue
            except pynng.Closed:
                return
            request = decode_request(raw)
            self.requests.append(request)
            self._rep.send(encode_reply(self._reply(request)))

    def _last_published_seq(self) -> int:
        """From the list, not ``_seq``: the publishing thread bumps ``_seq`` before it appends."""
        return len(self.published)

    def publish(self, type_: str = "exit", id: str = "redis", status: int | None = 0) -> Event:
        self._seq += 1
        event = Event(self._seq, time.time(), type_, id, 100 + self._seq, status)
        self.published.append(event)
        self._pub.send(encode_event(event))
        return event

    def close(self) -> None:
        self._rep.close()
        self._pub.close()
        self._thread.join(timeout=5)
        for path in self.paths:
            path.unlink(missing_ok=True)


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    daemon = FakeDaemon()
    try:
        yield daemon
    finally:
        daemon.close()


def test_list_against_fake_daemon(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.containers = [make_container(1), make_container(2, "paused")]
    assert main(["--address", fake.address, "containers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "PATH", "STATUS", "PID1"]
    assert lines[2].split() == ["redis-2", "/containers/redis-2", "paused", "14002"]

    assert main(["--address", fake.address, "--json", "containers", "list"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [item["id"] for item in data] == ["redis-1", "redis-2"]


def test_start_sends_absolute_bundle(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--address", fake.address, "containers", "start", "redis", "bundles/redis"]) == 0
    assert capsys.readouterr().out == "4242\n"
    request = fake.requests[-1]
    assert isinstance(request, CreateContainer)
    assert (request.id, request.bundle) == ("redis", os.path.join(tmp_path, "bundles/redis"))


def test_kill_sends_signal_and_pid(fake: FakeDaemon) -> None:
    assert main(["--address", fake.address, "containers", "kill", "redis"]) == 0
    assert main(["--address", fake.address, "containers", "kill", "-s", "SIGKILL", "-p", "77", "redis"]) == 0
    kills = [r for r in fake.requests if isinstance(r, Signal)]
    assert [(k.id, k.signal, k.pid) for k in kills] == [("redis", 15, 0), ("redis", 9, 77)]


def test_request_failed_is_one_line_and_exit_1(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.fail[Signal] = ErrorReply(None, "not_found", "no such container: ghost")
    assert main(["--address", fake.address, "containers", "kill", "ghost"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "actr: not_found: no such container: ghost\n"


def _events_process(fake: FakeDaemon, *flags: str, options: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """``actr [flags] events [options]`` against the fake daemon."""
    return subprocess.Popen(
        [sys.executable, "-m", "ctl", "--address", fake.address, *flags, "events", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def _publish_until_read(fake: FakeDaemon, readline: Callable[[], str]) -> str:
    """Pub/sub drops what is published before the subscriber's pipe is up, so keep publishing."""
    stop = threading.Event()

    def keep_publishing() -> None:
        while not stop.wait(0.05):
            fake.publish()

    publisher = threading.Thread(target=keep_publishing, daemon=True)
    publisher.start()
    try:
        return readline()
    finally:
        stop.set()
        publisher.join()


def test_events_stream_and_ctrl_c(fake: FakeDaemon) -> None:
    process = _events_process(fake)
    try:
        assert process.stdout is not None
        header = process.stdout.readline()
        assert header.split() == ["TYPE", "ID", "PID", "STATUS", "SEQ", "TIME"]
        # The header is printed once subscribed, so this event is not lost.
        event = fake.publish("start-container", "web", None)
        line = process.stdout.readline()
        assert line.split()[:5] == ["start-container", "web", str(event.pid), "-", str(event.seq)]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
        assert process.returncode == 130
        assert err == ""
    finally:
        process.kill()
        process.wait()


def test_events_json_lines_and_broken_pipe(fake: FakeDaemon) -> None:
    process = _events_process(fake, "--json")
    try:
        assert process.stdout is not None and process.stderr is not None
        line = _publish_until_read(fake, process.stdout.readline)
        event = json.loads(line)
        assert set(event) == {"seq", "timestamp", "type", "id", "pid", "status", "reason"}
        process.stdout.close()  # like `| head -1` exiting
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            fake.publish()
            time.sleep(0.05)
        assert process.returncode == 141
        assert process.stderr.read() == ""
    finally:
        process.kill()
        process.wait()


def test_events_from_replays_then_continues_live(fake: FakeDaemon) -> None:
    past = [fake.publish("exit", f"old-{n}") for n in range(3)]
    process = _events_process(fake, "--json", options=("--from", "2"))
    try:
        assert process.stdout is not None
        lines = [json.loads(process.stdout.readline()) for _ in range(2)]
        assert [(line["seq"], line["id"]) for line in lines] == [(e.seq, e.id) for e in past[1:]]
        line = _publish_until_read(fake, process.stdout.readline)  # then live, from seq 4 on
        assert json.loads(line)["seq"] == 4
    finally:
        process.kill()
        process.wait()


def test_events_older_than_retention_are_reported_on_stderr(fake: FakeDaemon) -> None:
    for n in range(5):
        fake.publish("exit", f"old-{n}")
    fake.first_available_seq = 4
    process = _events_process(fake, "--json", options=("--from", "1"))
    try:
        assert process.stdout is not None and process.stderr is not None
        assert [json.loads(process.stdout.readline())["seq"] for _ in range(2)] == [4, 5]
        assert process.stderr.readline() == (
            "actr: events 1..3 lost: older than the daemon keeps (its oldest is 4; see --events-retention)\n"
        )
    finally:
        process.kill()
        process.wait()


def test_plain_listing_never_imports_rich(fake: FakeDaemon) -> None:
    """The 1000-container budget relies on rich staying out of the non-terminal path."""
    fake.containers = [make_container(i) for i in range(1000)]
    code = (
        "import sys, ctl.main\n"
        f"rc = ctl.main.main(['--address', {fake.address!r}, 'containers'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'rich')\n"
        "print('RICH', loaded, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "RICH []" in result.stderr
    assert len(result.stdout.splitlines()) == 1001
