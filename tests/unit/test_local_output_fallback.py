"""``local_output.follow_output`` against daemons that cannot give spans: an older one (revision 6
refuses the field) and one that names files this client cannot find; the bytes still come, once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pynng
import pytest
from support.rep_server import server

import containerd_actors.protocol as wire
from containerd_actors.client import BlockingClient
from containerd_actors.client.local_output import MISSES, Reader, follow_output

OUTPUT = b"hello from the logs\n" * 1000


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    yield f"ipc://{tmp_path}/daemon-{threading.get_native_id()}.sock"


def answer_reads(*, refuse_spans: bool, name_missing_file: bool):
    """A daemon of one process that wrote ``OUTPUT`` and exited."""

    def answer(socket: pynng.Rep0, raw: bytes) -> None:
        request = json.loads(raw)
        if refuse_spans and "spans" in request:
            reply: wire.Reply = wire.ErrorReply(
                request["request_id"],
                wire.ErrorCode.INVALID_REQUEST,
                "invalid ReadOutput",
                ["extra fields found (spans) @ $"],
            )
            socket.send(wire.encode_reply(reply))
            return
        offset = request.get("stdout_offset", 0)
        data = OUTPUT[offset:]
        reply = wire.ReadOutputReply(
            request["request_id"], data, b"", offset, 0, len(OUTPUT), 0, exited=True, status=0
        )
        if name_missing_file and request.get("spans"):
            missing = wire.LogFileSpan("/nonexistent/stdout.log", 1, 2, 3, offset)
            reply = wire.ReadOutputReply(
                request["request_id"], b"", b"", offset, 0, len(OUTPUT), 0, exited=True, status=0,
                stdout_file=missing,
            )  # fmt: skip
        socket.send(wire.encode_reply(reply, framed=bool(request.get("binary"))))

    return answer


@pytest.mark.parametrize("case", ["older daemon", "files out of reach"])
def test_the_bytes_come_in_replies_when_spans_cannot_be_used(address: str, case: str) -> None:
    older = case == "older daemon"
    with server(address, answer_reads(refuse_spans=older, name_missing_file=not older)) as requests:
        reader = Reader()
        with BlockingClient.connect(address, timeout=10) as client:
            reads = list(follow_output(client, "web", reader=reader, follow=False))

    assert b"".join(bytes(read.stdout) for read in reads) == OUTPUT
    assert [read.status for read in reads if read.exited] == [0]
    asked = [json.loads(raw) for raw in requests]
    assert asked[0].get("spans") is True
    assert all("spans" not in request for request in asked[1:])
    assert (reader.from_files, reader.from_replies) == (0, len(OUTPUT))
    if older:
        assert not reader.spans  # remembered: not asked again
    else:
        assert (reader.spans, reader.misses) == (True, 1)  # one miss of MISSES: asked again next read
        assert MISSES > 1


def test_a_remote_address_never_asks_for_spans() -> None:
    """Only ipc:// is this host; a plain tcp:// daemon (--insecure-tcp) may be anywhere."""
    address = "tcp://127.0.0.1:0"
    with pynng.Rep0(listen=address) as probe:  # a free port, for the server below
        port = probe.listeners[0].local_address.port
    address = f"tcp://127.0.0.1:{port}"
    with server(address, answer_reads(refuse_spans=True, name_missing_file=False)) as requests:
        reader = Reader()
        with BlockingClient.connect(address, timeout=10) as client:
            reads = list(follow_output(client, "web", reader=reader, follow=False))

    assert b"".join(bytes(read.stdout) for read in reads) == OUTPUT
    assert all("spans" not in json.loads(raw) for raw in requests)
