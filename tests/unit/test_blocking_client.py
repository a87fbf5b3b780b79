"""The blocking request path of one-shot ``actr`` commands, against a plain nng Rep0 in a thread.

What it must share with the trio client: the replies and errors (it is judged by the same code),
a connection that closes under a request fails that request at once instead of waiting out the
timeout, and nothing is ever sent twice. What it adds: Ctrl-C interrupts a request that waits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pynng
import pytest
from support.rep_server import server

from containerd_actors.client import BlockingClient, DaemonUnreachable, RequestFailed
from containerd_actors.protocol import (
    ContainerInfo,
    ErrorCode,
    ErrorReply,
    MachineInfo,
    ProcessInfo,
    State,
    StateReply,
    User,
    decode_request,
    encode_reply,
)
from containerd_actors.transport.blocking import BlockingRequestSocket, TransportError

REPO = Path(__file__).resolve().parents[2]


def state_reply(socket: pynng.Rep0, request: bytes) -> None:
    decoded = decode_request(request)
    assert isinstance(decoded, State)
    socket.send(encode_reply(StateReply(decoded.request_id, [], MachineInfo("m", 2, 1 << 30))))


def test_a_request_gets_its_typed_reply_once(tmp_path: Path) -> None:
    address = f"ipc://{tmp_path}/d.sock"
    with server(address, state_reply) as received, BlockingClient.connect(address) as client:
        assert client.containers() == []
        assert client.state().machine.cpus == 2
    assert len(received) == 2
    assert len({decode_request(r).request_id for r in received}) == 2


def test_meanwhile_runs_after_the_send_and_before_the_reply(tmp_path: Path) -> None:
    """What ``exec -a`` prepares while the daemon runs runc exec: the request is on its way, and
    the reply does not come until the daemon sends it."""
    address = f"ipc://{tmp_path}/d.sock"
    may_reply = threading.Event()
    seen: list[str] = []

    def late_reply(socket: pynng.Rep0, request: bytes) -> None:
        seen.append("received")
        assert may_reply.wait(10)
        state_reply(socket, request)

    def meanwhile() -> None:
        seen.append("meanwhile")
        may_reply.set()

    with server(address, late_reply), BlockingClient.connect(address) as client:
        reply = client.call(State, StateReply, meanwhile=meanwhile)
    assert reply.containers == []
    assert seen.count("meanwhile") == 1 and "received" in seen


def test_an_error_reply_raises_request_failed(tmp_path: Path) -> None:
    address = f"ipc://{tmp_path}/d.sock"

    def refuse(socket: pynng.Rep0, request: bytes) -> None:
        request_id = decode_request(request).request_id
        socket.send(encode_reply(ErrorReply(request_id, ErrorCode.NOT_FOUND, "no such container: 'x'")))

    with (
        server(address, refuse),
        BlockingClient.connect(address) as client,
        pytest.raises(RequestFailed) as failed,
    ):
        client.signal("x")
    assert failed.value.code == ErrorCode.NOT_FOUND


def test_nothing_listening_is_unreachable_at_connect(tmp_path: Path) -> None:
    address = f"ipc://{tmp_path}/nobody.sock"
    with pytest.raises(DaemonUnreachable) as unreachable, BlockingClient.connect(address):
        pass
    assert str(unreachable.value).startswith(f"cannot reach containerd-actors at {address}: ")


def test_a_connection_closed_under_a_request_fails_it_at_once(tmp_path: Path) -> None:
    """The daemon dies after reading the request: no 120 s wait, and no resend to a new daemon."""
    address = f"ipc://{tmp_path}/d.sock"
    with (
        server(address, lambda socket, request: socket.close()) as received,
        BlockingClient.connect(address) as client,
    ):
        started = time.monotonic()
        with pytest.raises(DaemonUnreachable) as lost:
            client.ping()
        assert time.monotonic() - started < 10
    assert "the connection to the daemon closed" in str(lost.value)
    assert len(received) == 1


def test_a_request_without_a_reply_times_out(tmp_path: Path) -> None:
    address = f"ipc://{tmp_path}/d.sock"
    with (
        server(address, lambda socket, request: None),
        BlockingRequestSocket(address, 1 << 20) as socket,
        pytest.raises(TransportError) as silent,
    ):
        socket.request(b"{}", timeout=0.2)
    assert silent.value.timed_out


def test_ctrl_c_interrupts_a_waiting_command(tmp_path: Path) -> None:
    """``actr containers`` against a daemon that never answers: SIGINT ends it with 130 at once."""
    address = f"ipc://{tmp_path}/d.sock"
    with server(address, lambda socket, request: None) as received:
        process = subprocess.Popen(
            [sys.executable, "-m", "ctl", "--address", address, "containers"],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not received and time.monotonic() < deadline:  # the request is out: it waits
                time.sleep(0.01)
            assert received
            os.kill(process.pid, signal.SIGINT)
            assert process.wait(timeout=10) == 130
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_actr_state_asks_an_older_daemon_for_every_container(tmp_path: Path) -> None:
    """A daemon before protocol revision 3 refuses ``State.id`` as an extra field: actr then asks
    for all of them, and picks the one it was asked about."""
    address = f"ipc://{tmp_path}/d.sock"

    def older_daemon(socket: pynng.Rep0, request: bytes) -> None:
        obj = json.loads(request)
        if "id" in obj:
            refused = "invalid State: extra fields found"
            error = ErrorReply(obj["request_id"], ErrorCode.INVALID_REQUEST, refused)
            socket.send(encode_reply(error))
            return
        process = ProcessInfo(7, ["sleep", "1"], [], "/", User())
        web = ContainerInfo("web", "/b", "running", 7, [process])
        other = ContainerInfo("db", "/b", "running", 8, [])
        socket.send(encode_reply(StateReply(obj["request_id"], [other, web], MachineInfo("m", 2, 1 << 30))))

    with server(address, older_daemon) as received:
        result = subprocess.run(
            [sys.executable, "-m", "ctl", "--address", address, "--json", "containers", "state", "web"],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == "web"
    assert [json.loads(r).get("id") for r in received] == ["web", None]


def test_a_tls_file_that_cannot_be_read_is_a_client_error_naming_it(tmp_path: Path) -> None:
    """``TlsFilesError`` becomes the ``ClientError`` actr prints, as before ``transport.tls`` was
    imported only where TLS is used."""
    from containerd_actors.client import ClientError, TlsFiles

    missing = TlsFiles(tmp_path / "no.crt", tmp_path / "no.key", tmp_path / "no.ca")
    with (
        pytest.raises(ClientError, match=r"cannot read the TLS certificate .*no\.crt") as raised,
        BlockingClient.connect("tls+tcp://127.0.0.1:1", tls=missing),
    ):
        pass
    assert type(raised.value) is ClientError


def test_a_plain_address_needs_no_tls_module() -> None:
    code = (
        "import sys\n"
        "from containerd_actors.client.blocking import BlockingClient\n"
        "from containerd_actors.client.early import send\n"
        "print('containerd_actors.transport.tls' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "False"
