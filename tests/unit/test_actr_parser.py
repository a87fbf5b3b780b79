"""``actr``'s command line without a daemon: argument types, signal names, times, usage errors.

Usage errors are found before anything connects, so the commands run against an address where
nothing listens.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from containerd_actors.client import DEFAULT_ADDRESS
from ctl import checkpoints
from ctl.main import build_parser, chosen_group, main
from ctl.signals import UnknownSignal, parse_signal
from ctl.times import BadTime, parse_since


def missing_address() -> str:
    return f"ipc:///tmp/definitely-missing-{uuid.uuid4().hex}.sock"


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
    assert capsys.readouterr().err == (
        "actr: checkpoints: give a container ID or --bundle PATH, e.g. actr checkpoints ID\n"
    )


def test_the_original_checkpoints_form_lists() -> None:
    args = build_parser().parse_args(checkpoints.original_form(["checkpoints", "redis"]))
    assert (args.handler, args.id) == (checkpoints.list_checkpoints, "redis")
    create = ["checkpoints", "create", "redis", "cp1"]
    assert checkpoints.original_form(create) == create


@pytest.mark.parametrize(
    ("argv", "group"),
    [
        (["containers"], "containers"),
        (["--json", "--address", "ipc:///x", "containers", "state", "web"], "containers"),
        (["--address=ipc:///x", "--tls-ca", "ca.pem", "metrics"], "metrics"),
        (["--debug", "checkpoints", "web"], "checkpoints"),
        (["--address", "containers", "metrics"], "metrics"),  # a flag's value is not the command
        (["--addr", "ipc:///x", "containers"], None),  # abbreviated: argparse decides
        (["-h"], None),
        (["completion", "bash"], None),  # walks the whole tree
        (["bogus"], None),
        ([], None),
    ],
)
def test_only_the_group_a_command_line_certainly_runs_is_built(argv: list[str], group: str | None) -> None:
    assert chosen_group(argv) == group


@pytest.mark.parametrize(
    "argv",
    [
        ["containers", "--help"],
        ["containers", "exec", "--help"],
        ["containers", "kill", "-s", "BOGUS", "web"],
        ["containers", "bogus"],
        ["--json", "metrics", "--bogus"],
        ["checkpoints", "create", "--help"],
        ["events", "--since", "yesterday-ish"],
    ],
    ids=" ".join,
)
def test_a_groups_own_parser_says_what_the_whole_parser_says(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Help and usage errors, word for word, whichever parser is built."""
    said = []
    for parser in (build_parser(), build_parser(chosen_group(argv))):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(argv)
        said.append((exited.value.code, capsys.readouterr()))
    assert said[0] == said[1]
