"""The raw Req0/Rep0 transport: replies reach the right caller, whatever the order and whoever gives up."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio
import trio.testing

from containerd_actors.nng_raw import ConnectionLost, RawReplySocket, RawRequest, RawRequestSocket

MAX = 1 << 20


def address(tmp_path: Path) -> str:
    return f"ipc://{tmp_path}/raw.sock"


async def collect(server: RawReplySocket, count: int) -> list[RawRequest]:
    return [await server.receive() for _ in range(count)]


async def test_concurrent_requests_get_their_own_replies_in_any_order(tmp_path: Path) -> None:
    count = 50
    with (
        RawReplySocket(address(tmp_path), MAX, send_timeout=5) as server,
        RawRequestSocket(address(tmp_path), MAX) as client,
    ):
        replies: dict[int, bytes] = {}

        async def ask(n: int) -> None:
            replies[n] = await client.request(b"%d" % n)

        async with trio.open_nursery() as nursery:
            for n in range(count):
                nursery.start_soon(ask, n)
            requests = await collect(server, count)
            for request in reversed(requests):  # answered newest first
                assert await server.reply(request, b"re:" + request.body)
    assert replies == {n: b"re:%d" % n for n in range(count)}


async def test_a_caller_that_gives_up_does_not_strand_the_others(tmp_path: Path) -> None:
    with (
        RawReplySocket(address(tmp_path), MAX, send_timeout=5) as server,
        RawRequestSocket(address(tmp_path), MAX) as client,
    ):
        answers: list[bytes] = []
        async with trio.open_nursery() as nursery:
            quitter = trio.CancelScope()

            async def quitting() -> None:
                with quitter:
                    await client.request(b"first")  # the first waiter reads for everyone

            async def staying() -> None:
                answers.append(await client.request(b"second"))

            nursery.start_soon(quitting)
            first = await server.receive()
            nursery.start_soon(staying)
            second = await server.receive()
            quitter.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert await server.reply(first, b"too late")  # nobody wants it: dropped by the client
            assert await server.reply(second, b"for second")
        assert answers == [b"for second"]


async def test_a_lost_connection_fails_the_calls_in_flight(tmp_path: Path) -> None:
    server = RawReplySocket(address(tmp_path), MAX, send_timeout=5)
    with RawRequestSocket(address(tmp_path), MAX) as client:
        async with trio.open_nursery() as nursery:

            async def close_once_received() -> None:
                await server.receive()
                server.close()

            nursery.start_soon(close_once_received)
            with trio.fail_after(5), pytest.raises(ConnectionLost):
                await client.request(b"never answered")


async def test_many_replies_on_one_busy_pipe_all_arrive(tmp_path: Path) -> None:
    """Replies sent back to back find the pipe busy; the async fallback must deliver each."""
    count = 200
    with (
        RawReplySocket(address(tmp_path), MAX, send_timeout=math.inf) as server,
        RawRequestSocket(address(tmp_path), MAX) as client,
    ):
        got: list[bytes] = []

        async def ask(n: int) -> None:
            got.append(await client.request(b"x" * 1000 + b"%d" % n))

        async with trio.open_nursery() as nursery:
            for n in range(count):
                nursery.start_soon(ask, n)
            requests = await collect(server, count)
            async with trio.open_nursery() as replies:
                for request in requests:
                    replies.start_soon(server.reply, request, request.body)
        assert sorted(got) == sorted(b"x" * 1000 + b"%d" % n for n in range(count))
