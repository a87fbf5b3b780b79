"""``actr`` without a real daemon: parser, signal names, rendering, JSON, error messages, exit codes.

Commands that need a daemon talk to ``FakeDaemon``, a few lines of pynng Rep0/Pub0 speaking the
real wire codec in a thread, so the CLI is exercised through the real client library.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import pynng
import pytest
from rich.console import Console

from containerd_actors.client import DEFAULT_ADDRESS
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
    ProcessInfo,
    Signal,
    SignalReply,
    State,
    StateReply,
    User,
    decode_request,
    encode_event,
    encode_reply,
)
from ctl import checkpoints, render
from ctl.main import build_parser, main
from ctl.signals import UnknownSignal, parse_signal
from ctl.times import BadTime, parse_since

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_actr(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ctl`` (the same entry point as the installed ``actr``) as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "ctl", *args], capture_output=True, text=True, cwd=REPO, timeout=30, **kwargs
    )


def missing_address() -> str:
    return f"ipc:///tmp/definitely-missing-{uuid.uuid4().hex}.sock"


def make_container(index: int, status: str = "running") -> ContainerInfo:
    pid = 14000 + index
    return ContainerInfo(
        id=f"redis-{index}",
        bundle=f"/containers/redis-{index}",
        status=status,
        pid=pid,
        processes=[ProcessInfo(pid, ["redis-server"], ["PATH=/bin"], "/", User())],
    )


# --------------------------------------------------------------------------- parser


def test_kill_defaults_to_sigterm_and_init_process() -> None:
    args = build_parser().parse_args(["containers", "kill", "redis"])
    assert (args.id, args.signal, args.pid) == ("redis", 15, 0)


@pytest.mark.parametrize("spelling", ["KILL", "SIGKILL", "kill", "sigkill", "9"])
def test_kill_signal_accepts_names_and_numbers(spelling: str) -> None:
    args = build_parser().parse_args(["containers", "kill", "-s", spelling, "-p", "42", "redis"])
    assert (args.signal, args.pid) == (9, 42)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("HUP", 1),
        ("SIGTERM", 15),
        ("usr1", 10),
        ("SIGCHLD", 17),
        ("RTMIN", 34),
        ("SIGRTMIN+3", 37),
        ("rtmax-1", 63),
    ],
)
def test_parse_signal_uses_linux_numbers(text: str, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["BOGUS", "SIG", "0", "65", "-9", "RTMIN+40", ""])
def test_parse_signal_rejects_unknown(text: str) -> None:
    with pytest.raises(UnknownSignal):
        parse_signal(text)


def test_unknown_signal_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["containers", "kill", "-s", "BOGUS", "redis"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "unknown signal 'BOGUS'" in err
    assert "-s/--signal" in err


def test_negative_pid_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["containers", "kill", "-p", "-1", "redis"])
    assert exited.value.code == 2
    assert "pid must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["kill", "start"])
def test_invalid_container_id_is_a_usage_error(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["containers", command, "../etc", *(["bundle"] if command == "start" else [])]
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "container id '../etc' must match" in capsys.readouterr().err


def test_global_flags_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACTR_ADDRESS", raising=False)
    args = build_parser().parse_args(["containers"])
    assert args.address == DEFAULT_ADDRESS
    assert (args.debug, args.json) == (False, False)
    args = build_parser().parse_args(["--address", "/tmp/x.sock", "--debug", "--json", "events"])
    assert (args.address, args.debug, args.json) == ("/tmp/x.sock", True, True)


def test_address_env_var_overrides_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTR_ADDRESS", "ipc:///tmp/from-env.sock")
    assert build_parser().parse_args(["containers"]).address == "ipc:///tmp/from-env.sock"
    assert build_parser().parse_args(["--address", "tcp://h:1", "containers"]).address == "tcp://h:1"


def test_events_from_and_since_flags() -> None:
    args = build_parser().parse_args(["events"])
    assert (args.from_seq, args.since) == (None, None)
    assert build_parser().parse_args(["events", "--from", "42"]).from_seq == 42
    assert build_parser().parse_args(["events", "--since", "1700000000.5"]).since == 1700000000.5


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["events", "--from", "-1"], "seq must be >= 0"),
        (["events", "--from", "x"], "seq must be an integer"),
        (["events", "--since", "yesterday"], "invalid time 'yesterday'"),
        (["events", "--from", "1", "--since", "10m"], "not allowed with argument"),
    ],
)
def test_bad_events_flags_are_usage_errors(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", 1_700_000_000.0 - 600),
        ("1h30m", 1_700_000_000.0 - 5400),
        ("1.5s", 1_700_000_000.0 - 1.5),
        ("2d", 1_700_000_000.0 - 2 * 86400),
        ("1600000000", 1_600_000_000.0),
        ("1600000000.25", 1_600_000_000.25),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
        ("2023-11-14T22:13:20.5+00:00", 1_700_000_000.5),
    ],
)
def test_since_accepts_durations_timestamps_and_iso_8601(text: str, expected: float) -> None:
    assert parse_since(text, now=1_700_000_000.0) == pytest.approx(expected)


def test_since_without_an_offset_is_local_time() -> None:
    assert parse_since("2023-11-14 22:13") == datetime(2023, 11, 14, 22, 13).timestamp()


@pytest.mark.parametrize("text", ["", "10x", "m", "yesterday", "2023-13-01"])
def test_bad_since_is_refused(text: str) -> None:
    with pytest.raises(BadTime, match="invalid time"):
        parse_since(text)


def test_containers_without_subcommand_lists() -> None:
    parser = build_parser()
    assert parser.parse_args(["containers"]).handler is parser.parse_args(["containers", "list"]).handler


def test_json_is_also_accepted_after_the_command() -> None:
    assert build_parser().parse_args(["containers", "--json"]).json is True
    assert build_parser().parse_args(["--json", "containers"]).json is True
    assert build_parser().parse_args(["containers"]).json is False


def test_start_arguments() -> None:
    args = build_parser().parse_args(["containers", "start", "-c", "cp1", "-a", "redis", "b"])
    assert (args.id, args.bundle, args.checkpoint, args.attach) == ("redis", "b", "cp1", True)


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "containers" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["-v"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("actr version ")


@pytest.mark.parametrize("rest", [["--"], []])
def test_exec_without_a_command_exits_2(rest: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # Checked before connecting, so a missing daemon does not matter.
    assert main(["--address", missing_address(), "containers", "exec", "--id", "redis", *rest]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "give the command line after --" in err


def test_checkpoints_without_an_id_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # Checked before connecting, so a missing daemon does not matter.
    assert main(["--address", missing_address(), "checkpoints"]) == 2
    assert capsys.readouterr().err == "actr: checkpoints: give the container ID, e.g. actr checkpoints ID\n"


def test_the_original_checkpoints_form_lists() -> None:
    args = build_parser().parse_args(checkpoints.original_form(["checkpoints", "redis"]))
    assert (args.handler, args.id) == (checkpoints.list_checkpoints, "redis")
    create = ["checkpoints", "create", "redis", "cp1"]
    assert checkpoints.original_form(create) == create


# --------------------------------------------------------------------------- rendering


def test_containers_table_in_a_rich_console() -> None:
    console = Console(file=io.StringIO(), width=120)
    containers = [make_container(1), make_container(22, "paused"), make_container(333, "stopped")]
    render.print_containers(containers, io.StringIO(), console=console)
    lines = console.file.getvalue().splitlines()
    assert lines[0].split() == ["ID", "PATH", "STATUS", "PID1"]
    assert [line.split() for line in lines[1:]] == [
        ["redis-1", "/containers/redis-1", "running", "14001"],
        ["redis-22", "/containers/redis-22", "paused", "14022"],
        ["redis-333", "/containers/redis-333", "stopped", "14333"],
    ]
    # Columns are aligned: each header word starts where its values start.
    for column in ("PATH", "STATUS", "PID1"):
        start = lines[0].index(column)
        assert all(line[start - 1] == " " and line[start] != " " for line in lines[1:])


def test_colours_do_not_disturb_alignment() -> None:
    containers = [make_container(1), make_container(22, "paused"), make_container(4, "weird")]
    plain = render.containers_lines(containers)
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system="standard")
    render.print_containers(containers, io.StringIO(), console=console)
    coloured = console.file.getvalue()
    assert "\x1b[32mrunning" in coloured
    assert ANSI.sub("", coloured).splitlines() == plain


def test_empty_table_has_only_the_header() -> None:
    stream = io.StringIO()
    render.print_containers([], stream)
    assert stream.getvalue() == "ID   PATH   STATUS   PID1\n"


def test_containers_json_uses_wire_field_names() -> None:
    data = json.loads(render.containers_json([make_container(1), make_container(2)]))
    assert isinstance(data, list)
    assert set(data[0]) == {"id", "bundle", "status", "pid", "processes"}
    assert data[1]["id"] == "redis-2"
    assert data[1]["bundle"] == "/containers/redis-2"
    assert data[1]["pid"] == 14002
    assert data[1]["processes"][0]["args"] == ["redis-server"]
    assert json.loads(render.containers_json([])) == []


def test_event_line_lines_up_with_header() -> None:
    event = Event(seq=7, timestamp=1_700_000_000.25, type="exit", id="redis", pid=4242, status=137)
    header, line = render.event_header_line(), render.event_line(event)
    assert header.split() == ["TYPE", "ID", "PID", "STATUS", "SEQ", "TIME"]
    when = datetime.fromtimestamp(1_700_000_000.25).isoformat(timespec="milliseconds")
    assert line.split() == ["exit", "redis", "4242", "137", "7", when]
    for column, value in zip(header.split(), line.split(), strict=True):
        assert line.index(value, header.index(column)) == header.index(column)


def test_event_without_status_shows_dash() -> None:
    event = Event(seq=1, timestamp=0.0, type="start-container", id="redis", pid=1, status=None)
    assert render.event_line(event).split()[3] == "-"


def test_timestamp_is_local_iso_with_milliseconds() -> None:
    text = render.format_timestamp(1_700_000_000.123456)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", text)
    assert text == datetime.fromtimestamp(1_700_000_000.123456).isoformat(timespec="milliseconds")


def test_event_printer_modes() -> None:
    event = Event(seq=3, timestamp=1.5, type="exit", id="redis", pid=9, status=0)
    plain = io.StringIO()
    printer = render.EventPrinter(plain, as_json=False)
    printer.header()
    printer.print(event)
    assert plain.getvalue().splitlines() == [render.event_header_line(), render.event_line(event)]

    as_json = io.StringIO()
    printer = render.EventPrinter(as_json, as_json=True)
    printer.header()
    printer.print(event)
    printer.print(event)
    lines = as_json.getvalue().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == {
        "seq": 3,
        "timestamp": 1.5,
        "type": "exit",
        "id": "redis",
        "pid": 9,
        "status": 0,
        "reason": None,
    }


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
