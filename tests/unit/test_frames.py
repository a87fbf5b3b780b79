"""The binary frame envelope: what a reader in any language relies on."""

from __future__ import annotations

import json
import struct

import pytest

from containerd_actors.protocol.frames import MAGIC, FrameError, is_frame, pack_frame, unpack_frame


def test_a_frame_round_trips_header_and_blobs_byte_exact() -> None:
    blobs = [("stdout", bytes(range(256)) * 3), ("stderr", b""), ("x", b"\x00CAB")]
    frame = pack_frame({"type": "ReadOutputReply", "request_id": "7"}, blobs)

    header, sliced = unpack_frame(frame)

    assert header == {"type": "ReadOutputReply", "request_id": "7"}
    assert {name: bytes(view) for name, view in sliced.items()} == dict(blobs)


def test_the_layout_is_magic_length_json_then_payload() -> None:
    frame = pack_frame({"type": "T"}, [("data", b"abc")])

    (length,) = struct.unpack(">I", frame[4:8])
    assert frame[:4] == MAGIC == b"\x00CAB"
    assert json.loads(frame[8 : 8 + length]) == {"type": "T", "blobs": [["data", 3]]}
    assert frame[8 + length :] == b"abc"


def test_json_messages_are_not_frames() -> None:
    assert is_frame(pack_frame({}, []))
    assert not is_frame(b'{"type":"Ping"}')
    assert not is_frame(b"")


def test_blobs_are_views_not_copies() -> None:
    frame = bytearray(pack_frame({}, [("a", b"12"), ("b", b"345")]))

    _, sliced = unpack_frame(frame)

    assert sliced["b"].obj is frame


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (b"\x00CA", "no magic"),
        (b'{"type":"Ping"}', "no magic"),
        (MAGIC + struct.pack(">I", 99) + b"{}", "runs past"),
        (MAGIC + struct.pack(">I", 2) + b"[]", "must be a JSON object"),
        (MAGIC + struct.pack(">I", 3) + b"{x}", "not valid JSON"),
        (MAGIC + struct.pack(">I", 14) + b'{"blobs":"ab"}', "list of"),
        (MAGIC + struct.pack(">I", 20) + b'{"blobs":[["a",-1]]}', "length >= 0"),
        (MAGIC + struct.pack(">I", 19) + b'{"blobs":[["a",1]]}' + b"xy", "payload holds 2"),
        (MAGIC + struct.pack(">I", 19) + b'{"blobs":[["a",3]]}' + b"xy", "payload holds 2"),
        (MAGIC + struct.pack(">I", 27) + b'{"blobs":[["a",1],["a",1]]}' + b"xy", "listed twice"),
    ],
)
def test_a_broken_frame_is_refused_with_the_reason(frame: bytes, complaint: str) -> None:
    with pytest.raises(FrameError, match=complaint):
        unpack_frame(frame)


def test_the_writer_refuses_what_a_reader_would() -> None:
    with pytest.raises(FrameError, match="repeat"):
        pack_frame({}, [("a", b""), ("a", b"")])
    with pytest.raises(FrameError, match="frame's own"):
        pack_frame({"blobs": []}, [])
