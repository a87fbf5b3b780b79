"""Framed ReadOutput replies and WriteInput requests: the same messages as JSON, without base64."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pynng
import pytest
from support.rep_server import server

import containerd_actors.protocol as wire
from containerd_actors.client import BlockingClient
from containerd_actors.protocol import codec, frames, schema

PROTO_SCHEMAS = Path(__file__).resolve().parents[2] / "proto_schemas"


def _reply(stdout: bytes, stderr: bytes) -> wire.ReadOutputReply:
    return wire.ReadOutputReply(
        "7", stdout, stderr, 10, 0, 10 + len(stdout), len(stderr), exited=True, status=3
    )


def test_a_framed_reply_decodes_to_what_its_json_decodes_to() -> None:
    reply = _reply(os.urandom(100_000) + b"\x00CAB", b"err\n")

    framed = wire.encode_reply(reply, framed=True)
    plain = wire.encode_reply(reply)

    assert frames.is_frame(framed) and not frames.is_frame(plain)
    assert wire.decode_reply(framed) == wire.decode_reply(plain) == reply
    assert len(framed) < len(plain)  # no base64


def test_a_framed_reply_carries_its_bytes_raw_after_the_header() -> None:
    reply = _reply(b"out", b"e")

    header, blobs = frames.unpack_frame(wire.encode_reply(reply, framed=True))

    assert {name: bytes(blob) for name, blob in blobs.items()} == {"stdout": b"out", "stderr": b"e"}
    assert "stdout" not in header and header["type"] == "ReadOutputReply" and header["status"] == 3


def test_the_head_of_a_frame_read_into_place_makes_the_same_frame() -> None:
    reply = _reply(b"abc", b"de")

    head, names = wire.reply_frame_head(reply, {"stdout": 3, "stderr": 2})

    assert names == ("stdout", "stderr")
    assert head + b"abc" + b"de" == wire.encode_reply(reply, framed=True)


def test_a_framed_write_input_decodes_to_what_its_json_decodes_to() -> None:
    request = wire.WriteInput("r", "web", 42, os.urandom(1000), close=True)

    framed = wire.encode_request(request, framed=True)

    assert frames.is_frame(framed)
    assert wire.decode_request(framed) == wire.decode_request(wire.encode_request(request)) == request


def test_requests_without_bytes_and_errors_stay_json_when_framing_is_asked() -> None:
    ping = wire.Ping("1")
    error = wire.ErrorReply("1", wire.ErrorCode.NOT_FOUND, "gone")

    assert not frames.is_frame(wire.encode_request(ping, framed=True))
    assert not frames.is_frame(wire.encode_reply(error, framed=True))


def test_binary_is_left_out_at_its_default_so_an_older_daemon_takes_the_request() -> None:
    assert "binary" not in json.loads(wire.encode_request(wire.ReadOutput("1", "web")))
    assert json.loads(wire.encode_request(wire.ReadOutput("1", "web", binary=True)))["binary"] is True


def test_json_bytes_fields_must_be_base64() -> None:
    bad = b'{"type":"WriteInput","request_id":"1","id":"web","data":"not base64!"}'

    with pytest.raises(wire.ProtocolError) as caught:
        wire.decode_request(bad)

    assert caught.value.code == wire.ErrorCode.INVALID_REQUEST
    assert "must be base64" in caught.value.message and caught.value.request_id == "1"


@pytest.mark.parametrize(
    ("header", "blobs", "words"),
    [
        (
            {"type": "WriteInput", "request_id": "1", "id": "web"},
            [("id", b"x")],
            "not one of its bytes fields",
        ),
        ({"type": "Ping", "request_id": "1"}, [("data", b"x")], "not one of its bytes fields"),
        ({"type": "WriteInput", "request_id": "1", "id": "web", "data": ""}, [("data", b"x")], "both"),
    ],
)
def test_a_blob_must_stand_for_a_bytes_field_of_its_message(
    header: dict[str, object], blobs: list[tuple[str, bytes]], words: str
) -> None:
    with pytest.raises(wire.ProtocolError) as caught:
        wire.decode_request(frames.pack_frame(header, blobs))

    assert caught.value.code == wire.ErrorCode.INVALID_REQUEST
    assert words in caught.value.message and caught.value.request_id == "1"


def test_a_broken_frame_is_malformed() -> None:
    frame = frames.pack_frame({"type": "WriteInput", "request_id": "1", "id": "web"}, [("data", b"abc")])

    with pytest.raises(wire.ProtocolError) as caught:
        wire.decode_request(frame[:-1])

    assert caught.value.code == wire.ErrorCode.MALFORMED


def test_the_schemas_mark_exactly_the_fields_the_codec_frames() -> None:
    """Wire-schema drift of the framed form: what proto_schemas/ says may be a blob (``x-blob``)
    is what the codec carries as blobs, and the README names each of those messages."""
    marked = {}
    for path in PROTO_SCHEMAS.glob("*" + schema.SCHEMA_SUFFIX):
        document = json.loads(path.read_text())
        properties = document.get("properties", {})
        names = tuple(
            sorted(name for name, prop in properties.items() if prop.get(schema.BLOB_KEYWORD) is True)
        )
        if names:
            marked[document["title"]] = names
    readme = (PROTO_SCHEMAS / "README.md").read_text()

    assert marked == {cls.__name__: tuple(sorted(names)) for cls, names in codec.BLOB_FIELDS.items()}
    assert marked == {"ReadOutputReply": ("stderr", "stdout"), "WriteInput": ("data",)}
    for name in marked:
        assert name in readme.split("## Process output and input")[1]


def test_framing_is_announced_as_protocol_revision_three() -> None:
    document = json.loads((PROTO_SCHEMAS / "ReadOutput.schema.json").read_text())

    assert wire.PROTOCOL_VERSION >= 3
    assert "(protocol revision 3)" in document["properties"]["binary"]["description"]


#: What a daemon of revision 2 answers a ReadOutput with ``binary`` (its strict reader's words for
#: a field it does not know, as ``codec`` words them for any unknown field today).
_OLD_DAEMON_REFUSAL = "extra fields found (binary) @ $"


def _stand_in(protocol: int, data: bytes) -> Callable[[pynng.Rep0, bytes], None]:
    """A daemon of revision ``protocol``: one of revision 2 refuses frames and ``binary``."""

    def answer(socket: pynng.Rep0, raw: bytes) -> None:
        request = wire.decode_request(raw)
        if protocol < 3 and (frames.is_frame(raw) or getattr(request, "binary", False)):
            detail = "extra fields found (data) @ $" if frames.is_frame(raw) else _OLD_DAEMON_REFUSAL
            message = f"invalid {type(request).__name__}: {detail}"
            refusal = wire.ErrorReply(request.request_id, wire.ErrorCode.INVALID_REQUEST, message, [detail])
            socket.send(wire.encode_reply(refusal))
            return
        match request:
            case wire.Ping():
                reply: wire.Reply = wire.PingReply(
                    request.request_id, "d", "0", "ipc:///x", 0, 0, None, protocol
                )
            case wire.ReadOutput():
                reply = wire.ReadOutputReply(
                    request.request_id, data, b"e", 0, 0, len(data), 1, exited=True, status=0
                )
            case wire.WriteInput():
                reply = wire.WriteInputReply(request.request_id, len(request.data))
        socket.send(wire.encode_reply(reply, framed=getattr(request, "binary", False)))

    return answer


def _types(received: list[bytes]) -> list[str]:
    return [type(wire.decode_request(raw)).__name__ for raw in received]


@pytest.mark.parametrize("protocol", [2, wire.PROTOCOL_VERSION])
def test_the_blocking_client_follows_framed_at_once_and_as_json_if_refused(protocol: int) -> None:
    """No Ping first: the first read asks for frames; a revision-2 daemon refuses the field, and
    the same read (its tail too) and the rest go as JSON. A small stdin write goes as JSON."""
    address = f"ipc:///tmp/frames-test-{os.getpid()}-{protocol}.sock"
    data = os.urandom(3000)

    with server(address, _stand_in(protocol, data)) as received, BlockingClient.connect(address) as client:
        client.write_input("web", b"line\n", close=True)
        [read] = list(client.follow_output("web", tail=5))
        [again] = list(client.follow_output("web"))

    assert (
        (read.stdout, read.stderr, read.status)
        == (again.stdout, again.stderr, again.status)
        == (data, b"e", 0)
    )
    assert "Ping" not in _types(received)
    write, *reads = received
    assert not frames.is_frame(write)
    if protocol >= 3:
        assert [frames.is_frame(raw) for raw in reads] == [False, False]  # requests are JSON
        assert [json.loads(raw).get("binary") for raw in reads] == [True, True]
    else:
        refused, first, second = (json.loads(raw) for raw in reads)
        assert refused["binary"] and "binary" not in first and "binary" not in second
        assert refused["tail"] == first["tail"] == 5  # the refused read, asked again as it was
        assert first["max_bytes"] < refused["max_bytes"]  # JSON: the default, not what a frame carries


@pytest.mark.parametrize("protocol", [2, wire.PROTOCOL_VERSION])
def test_the_blocking_client_asks_before_framing_a_big_write(protocol: int) -> None:
    """More stdin than one JSON WriteInput carries: a Ping says whether frames may carry it."""
    address = f"ipc:///tmp/frames-test-{os.getpid()}-big-{protocol}.sock"
    data = os.urandom(300 << 10)

    with server(address, _stand_in(protocol, b"")) as received, BlockingClient.connect(address) as client:
        client.write_input("web", data, close=True)

    ping, *writes = received
    assert _types([ping]) == ["Ping"]
    assert [frames.is_frame(raw) for raw in writes] == ([True] if protocol >= 3 else [False, False])
