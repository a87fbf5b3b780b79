"""The shared grammar of durations and the derivation of the daemon's socket addresses.

The daemon's flags and ``actr events --since`` read durations with one parser, and the daemon and
``actr`` agree on the default address through one constant; the commands' own wording of errors is
tested with the commands (test_daemon_cli, test_actr_cli).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from containerd_actors.protocol import addresses
from containerd_actors.protocol.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1m0s", 60.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("2d", 172800.0),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        ("10ns", 10e-9),
        ("1h1m1s1ms", 3661.001),
    ],
)
def test_durations_in_go_spelling_and_days(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1.5", "1x", "m", "1m fast", " 1m", "1m ", "-1s", "1.s", "s1"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    assert parse_duration(text) is None


def test_the_default_address_is_in_the_default_state_dir() -> None:
    assert addresses.DEFAULT_STATE_DIR == "/run/containerd-actors"
    assert addresses.DEFAULT_ADDRESS == "ipc:///run/containerd-actors/containerd.sock"


def test_a_bare_path_becomes_an_absolute_ipc_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert addresses.normalize_address("api.sock") == f"ipc://{tmp_path}/api.sock"
    assert addresses.normalize_address("/run/x.sock") == "ipc:///run/x.sock"
    assert addresses.normalize_address("tcp://127.0.0.1:7000") == "tcp://127.0.0.1:7000"


def test_ipc_sockets_sit_beside_each_other() -> None:
    events = addresses.address_beside("ipc:///run/containerd-actors/containerd.sock", addresses.EVENTS_SOCKET)
    assert events == "ipc:///run/containerd-actors/events.sock"
    assert (
        addresses.address_beside(events, addresses.EVENTS_BATCH_SOCKET)
        == "ipc:///run/containerd-actors/events-batch.sock"
    )


def test_tcp_sockets_take_the_next_port() -> None:
    assert addresses.address_beside("tcp://127.0.0.1:7000", addresses.EVENTS_SOCKET) == "tcp://127.0.0.1:7001"
    assert (
        addresses.address_beside("tls+tcp://[::1]:7001", addresses.EVENTS_BATCH_SOCKET)
        == "tls+tcp://[::1]:7002"
    )


@pytest.mark.parametrize("address", ["inproc://api", "tcp://host", "tcp://host:port"])
def test_no_address_is_derived_without_a_file_or_a_port(address: str) -> None:
    assert addresses.address_beside(address, addresses.EVENTS_SOCKET) is None
