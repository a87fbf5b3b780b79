"""The page relay (``daemon/migration/pagerelay.py``) alone: both ends over loopback TLS, with a
stand-in for ``criu page-server`` found first on PATH.

The stand-in speaks no CRIU: it reads what the relay delivers on its ``--ps-socket`` and answers
on the same socket, so a test sees both directions, the end of the stream, and the exit code the
destination reports. The e2e tests (tests/e2e/test_migrate.py) run the real page server.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.certs import make_test_certs

from containerd_actors.daemon.migration import pagerelay
from containerd_actors.daemon.migration.pagerelay import (
    PAGE_SERVER_LOG,
    PageServerOutcome,
    PageServerRelay,
    RelayError,
    SourceRelay,
)
from containerd_actors.transport.tls import TlsFiles

#: ``answer``: the sha256 of all it read, written back, exit 0. ``fail``: ready, reads a little,
#: logs an error and exits 3. ``no-start``: logs an error and exits 1 without saying it is ready.
#: ``stall``: ready, then never reads (a destination whose window stays closed).
FAKE_PAGE_SERVER = r"""#!/bin/bash
while [ $# -gt 0 ]; do
  case "$1" in
    --ps-socket) sock=$2;; --status-fd) status=$2;; --work-dir) work=$2;; -o) logname=$2;;
  esac
  shift
done
log="$work/$logname"
if [ "$FAKE_MODE" = no-start ]; then echo "Error (fake): cannot start" >"$log"; exit 1; fi
printf '\0' >&"$status"; exec {status}>&-
if [ "$FAKE_MODE" = stall ]; then exec sleep 120; fi
if [ "$FAKE_MODE" = fail ]; then
  head -c 65536 <&"$sock" >/dev/null; echo "Error (fake): gave up midway" >"$log"; exit 3
fi
sha256sum <&"$sock" | cut -d' ' -f1 >&"$sock"
"""

SECRET = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    return make_test_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def fake_criu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "criu").write_text(FAKE_PAGE_SERVER)
    (bin_dir / "criu").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MODE", "answer")
    yield


class Destination:
    """A ``PageServerRelay`` on 127.0.0.1 whose ``run`` goes on in a thread."""

    def __init__(self, tls: TlsFiles, work: Path, peer_cn: str = "admin") -> None:
        work.mkdir(exist_ok=True)
        self.work = work
        self.relay = PageServerRelay(tls, "127.0.0.1", "mtest", peer_cn, SECRET, work, work)
        self.outcome: list[PageServerOutcome | Exception | None] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.outcome.append(self.relay.run())
        except (RelayError, OSError) as exc:
            self.outcome.append(exc)

    def result(self) -> PageServerOutcome | Exception | None:
        self._thread.join(30)
        assert not self._thread.is_alive(), "the destination's relay did not end"
        return self.outcome[0]


def relay_in_thread(relay: SourceRelay) -> tuple[threading.Thread, list[int | Exception]]:
    """``relay.run`` in a thread of its own; its bytes sent or its ``RelayError`` go to the list."""
    outcome: list[int | Exception] = []

    def run() -> None:
        try:
            outcome.append(relay.run())
        except RelayError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def connect_as_criu(relay: SourceRelay, timeout: float) -> socket.socket:
    host, port = relay.address.split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def flood_until_cut(relay: SourceRelay, mib: int, timeout: float) -> None:
    """Play a CRIU dumping ``mib`` MiB of pages whose writes must fail: the relay cut the stream."""
    with connect_as_criu(relay, timeout) as criu, pytest.raises(OSError):
        for _ in range(mib):
            criu.sendall(bytes(1 << 20))


def through_relay(relay: SourceRelay, data: bytes) -> tuple[bytes, int]:
    """Play CRIU: connect to the source's relay, send ``data``, end, read the answer."""
    thread, relayed = relay_in_thread(relay)
    with connect_as_criu(relay, timeout=30) as criu:
        criu.sendall(data)
        criu.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := criu.recv(65536):
            answer += chunk
    thread.join(30)
    assert not thread.is_alive()
    [sent] = relayed
    assert isinstance(sent, int), sent
    return answer, sent


def test_the_pages_reach_the_page_server_and_its_answers_come_back(
    certs: dict[str, TlsFiles], fake_criu: None, tmp_path: Path
) -> None:
    destination = Destination(certs["server"], tmp_path / "dst")
    relay = SourceRelay.open(certs["admin"], "localhost", destination.relay.port, SECRET)
    try:
        assert relay.address.startswith("127.0.0.1:")
        data = os.urandom(3 << 20) + b"tail"
        answer, sent = through_relay(relay, data)
    finally:
        relay.close()
    assert answer.decode().strip() == hashlib.sha256(data).hexdigest()
    assert sent == len(data)
    assert destination.result() == PageServerOutcome(0, len(data), "")


def test_a_stranger_is_refused_and_the_source_still_gets_through(
    certs: dict[str, TlsFiles], fake_criu: None, tmp_path: Path
) -> None:
    destination = Destination(certs["server"], tmp_path / "dst")
    port = destination.relay.port
    # Another client of the CA, but not the migration's source; then the source with a wrong secret.
    with pytest.raises((RelayError, OSError)):
        SourceRelay.open(certs["reader"], "localhost", port, SECRET)
    with pytest.raises((RelayError, OSError)):
        SourceRelay.open(certs["admin"], "localhost", port, "f" * 32)
    relay = SourceRelay.open(certs["admin"], "localhost", port, SECRET)
    try:
        answer, _ = through_relay(relay, b"pages")
    finally:
        relay.close()
    assert answer.decode().strip() == hashlib.sha256(b"pages").hexdigest()
    outcome = destination.result()
    assert isinstance(outcome, PageServerOutcome) and outcome.returncode == 0


def test_a_page_server_that_cannot_start_fails_the_source_before_any_dump(
    certs: dict[str, TlsFiles], fake_criu: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "no-start")
    destination = Destination(certs["server"], tmp_path / "dst")
    with pytest.raises((RelayError, OSError)):
        SourceRelay.open(certs["admin"], "localhost", destination.relay.port, SECRET)
    failed = destination.result()
    assert isinstance(failed, RelayError) and "cannot start" in str(failed), failed


def test_a_page_server_failing_midway_breaks_the_stream_and_is_reported(
    certs: dict[str, TlsFiles], fake_criu: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "fail")
    destination = Destination(certs["server"], tmp_path / "dst")
    relay = SourceRelay.open(certs["admin"], "localhost", destination.relay.port, SECRET)
    thread, errors = relay_in_thread(relay)
    try:
        flood_until_cut(relay, 1024, timeout=30)
    finally:
        thread.join(30)
        relay.close()
    assert errors and isinstance(errors[0], RelayError) and "page relay failed" in str(errors[0])
    outcome = destination.result()
    assert isinstance(outcome, PageServerOutcome)
    assert outcome.returncode != 0 and "gave up midway" in outcome.said
    assert (destination.work / PAGE_SERVER_LOG).exists()


def test_a_relay_stopped_before_the_source_came_ends_quietly(
    certs: dict[str, TlsFiles], tmp_path: Path
) -> None:
    destination = Destination(certs["server"], tmp_path / "dst")
    destination.relay.stop()
    assert destination.result() is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", destination.relay.port), timeout=1).close()


def test_both_ends_probe_a_silent_peer(certs: dict[str, TlsFiles], fake_criu: None, tmp_path: Path) -> None:
    """While CRIU waits for an answer no side sends: only keepalive probes find a peer gone silent
    (a dead host, a firewall that drops everything), so every relay connection has them, short."""
    destination = Destination(certs["server"], tmp_path / "dst")
    relay = SourceRelay.open(certs["admin"], "localhost", destination.relay.port, SECRET)
    try:
        with destination.relay._lock:
            accepted = [sock for sock in destination.relay._sockets if isinstance(sock, ssl.SSLSocket)]
        assert len(accepted) == 2
        for sock in [relay._up, relay._down, *accepted]:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
            probes = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
            assert idle + interval * probes <= 10  # seconds until a silent peer fails the dump
            # Pages never acknowledged, or a window that stays closed, fail it too.
            assert 0 < sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) <= 30_000
        answer, sent = through_relay(relay, b"pages")
    finally:
        relay.close()
    assert sent == 5 and answer


def test_pages_that_are_never_taken_fail_the_relay_instead_of_waiting_for_ever(
    certs: dict[str, TlsFiles], fake_criu: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A destination whose page server stops reading closes its TCP window: the source's pages
    then wait unacknowledged, which TCP alone would probe for ever (CRIU blocked, the container
    frozen). The relay fails after UNACKNOWLEDGED_LIMIT_S (2 s here) and cuts CRIU's connection."""
    monkeypatch.setenv("FAKE_MODE", "stall")
    monkeypatch.setattr(pagerelay, "UNACKNOWLEDGED_LIMIT_S", 2)
    destination = Destination(certs["server"], tmp_path / "dst")
    relay = SourceRelay.open(certs["admin"], "localhost", destination.relay.port, SECRET)
    thread, errors = relay_in_thread(relay)
    started = time.monotonic()
    try:
        flood_until_cut(relay, 4096, timeout=60)  # CRIU's writes fail once the relay gives up
        thread.join(30)
        assert not thread.is_alive()
    finally:
        relay.close()
        destination.relay.stop()
    assert errors and isinstance(errors[0], RelayError) and "page relay failed" in str(errors[0])
    assert time.monotonic() - started < 25
