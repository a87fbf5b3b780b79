"""``OrderedInput``, the client's half of ordered writes, against a daemon stand-in."""

from __future__ import annotations

import os

import pynng
from support.rep_server import server

import containerd_actors.protocol as wire
from containerd_actors.client import BlockingClient
from containerd_actors.client.ordered_input import OrderedInput, speaks_ordered_input


def test_short_writes_are_resent_from_where_they_stopped_and_the_eof_goes_last() -> None:
    """The stand-in writes only half of each request the first time it sees its offset, and
    nothing of one that starts beyond what it has (a gap): every byte still arrives once, in order."""
    address = f"ipc:///tmp/ordered-input-test-{os.getpid()}.sock"
    stream = bytearray()
    closed_at: list[int] = []
    seen: set[int] = set()

    def answer(socket: pynng.Rep0, raw: bytes) -> None:
        request = wire.decode_request(raw)
        if isinstance(request, wire.Ping):
            socket.send(
                wire.encode_reply(wire.PingReply(request.request_id, "d", "0", "ipc:///x", 0, 0, None, 6))
            )
            return
        assert isinstance(request, wire.WriteInput) and request.writer and request.offset >= 0
        data = bytes(request.data)
        if request.offset > len(stream):
            written = 0  # a gap: the daemon's parked request that timed out
        else:
            skip = len(stream) - request.offset
            fresh = data[skip:]
            if request.offset not in seen and len(fresh) > 1:
                fresh = fresh[: len(fresh) // 2]
            seen.add(request.offset)
            stream.extend(fresh)
            written = min(skip, len(data)) + len(fresh)
            if request.close and written == len(data):
                closed_at.append(len(stream))
        socket.send(wire.encode_reply(wire.WriteInputReply(request.request_id, written)))

    data = os.urandom(3 << 20)
    with (
        server(address, answer),
        BlockingClient.connect(address) as one,
        BlockingClient.connect(address) as two,
    ):
        assert speaks_ordered_input(one)
        writer = OrderedInput([one, two], "web", 4)
        for start in range(0, len(data), 300_000):
            writer.write(data[start : start + 300_000])
        writer.close()

    assert bytes(stream) == data
    assert closed_at == [len(data)]


def test_a_daemon_older_than_revision_6_is_not_sent_ordered_writes() -> None:
    address = f"ipc:///tmp/ordered-input-old-{os.getpid()}.sock"

    def answer(socket: pynng.Rep0, raw: bytes) -> None:
        request = wire.decode_request(raw)
        socket.send(
            wire.encode_reply(wire.PingReply(request.request_id, "d", "0", "ipc:///x", 0, 0, None, 4))
        )

    with server(address, answer), BlockingClient.connect(address) as client:
        assert not speaks_ordered_input(client)
