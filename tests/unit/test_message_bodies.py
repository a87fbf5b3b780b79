"""Big binary frames stay views of nng's message, from the socket to where their bytes go."""

from __future__ import annotations

import gc
import os
from typing import Any

import pytest

import containerd_actors.protocol as wire
from containerd_actors.protocol import plain_codec
from containerd_actors.transport import bodies
from containerd_actors.transport.bindings import ffi, lib


def _message(body: bytes) -> Any:
    slot = ffi.new("nng_msg **")
    assert lib.nng_msg_alloc(slot, 0) == 0
    assert lib.nng_msg_append(slot[0], body, len(body)) == 0
    return slot[0]


def test_a_big_frame_is_a_read_only_view_that_frees_its_message_once_with_its_last_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    freed: list[Any] = []
    real_free = lib.nng_msg_free

    class Lib:
        def __getattr__(self, name: str) -> Any:
            return getattr(lib, name)

        @staticmethod
        def nng_msg_free(message: Any) -> None:
            freed.append(message)
            real_free(message)

    monkeypatch.setattr(bodies, "lib", Lib())
    frame = wire.encode_request(
        wire.WriteInput("r", id="c", data=os.urandom(bodies.VIEW_FROM_BYTES)), framed=True
    )
    message = _message(frame)

    body, owned = bodies.body_of(message)

    assert owned and isinstance(body, memoryview) and body.readonly and body == frame
    part = body[100:200]
    del body
    gc.collect()
    assert freed == []  # a slice still reads it
    assert part == frame[100:200]
    del part
    gc.collect()
    assert freed == [message]


@pytest.mark.parametrize("size", [10, bodies.VIEW_FROM_BYTES])
def test_json_and_small_frames_are_copied_and_left_to_the_caller_to_free(size: int) -> None:
    json_body = b'{"type":"Ping","request_id":"' + b"x" * size + b'"}'
    small_frame = wire.encode_request(wire.WriteInput("r", id="c", data=b"x" * 10), framed=True)
    for raw in (json_body, small_frame):
        message = _message(raw)
        body, owned = bodies.body_of(message)
        lib.nng_msg_free(message)
        assert not owned and type(body) is bytes and body == raw


def test_the_daemon_reads_a_framed_write_input_without_copying_its_data() -> None:
    data = os.urandom(1 << 20)
    frame = memoryview(wire.encode_request(wire.WriteInput("r", id="c", data=data), framed=True)).toreadonly()

    request = wire.decode_request(frame)

    assert isinstance(request, wire.WriteInput) and isinstance(request.data, memoryview)
    assert request.data.obj is frame.obj and request.data == data


def test_a_follow_keeps_its_output_as_views_and_other_reads_get_bytes() -> None:
    reply = wire.ReadOutputReply("7", b"out" * 1000, b"err", 0, 0, 3000, 3, exited=True, status=0)
    frame = wire.encode_reply(reply, framed=True)

    viewed = plain_codec.decode_reply(frame, views=True)
    copied = plain_codec.decode_reply(frame)

    assert viewed == copied == reply
    assert isinstance(viewed, wire.ReadOutputReply) and isinstance(viewed.stdout, memoryview)
    assert isinstance(copied, wire.ReadOutputReply) and type(copied.stdout) is bytes


def test_glibc_is_told_to_keep_freed_buffers() -> None:
    import platform

    from containerd_actors.transport import memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt's thresholds are glibc's")
    assert memory.keep_freed_buffers()
    assert memory.once() is memory.once()
