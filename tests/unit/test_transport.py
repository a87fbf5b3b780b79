"""The transport: replies reach the right caller, whatever the order and whoever gives up; nng's
pointers are owned so that a misuse is an exception; and nng is the release line it was tested with."""

from __future__ import annotations

import contextlib
import math
import os
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pynng
import pytest
import trio
import trio.testing

from containerd_actors.transport import nng
from containerd_actors.transport.reply import ReplyContext, ReplySocket
from containerd_actors.transport.request import ConnectionLost, RawRequestSocket
from containerd_actors.transport.version import (
    TESTED_NNG,
    NngVersionError,
    check_nng_version,
    installed_nng_version,
)

MAX = 1 << 20


def address(tmp_path: Path) -> str:
    return f"ipc://{tmp_path}/raw.sock"


def raw_requester(tmp_path: Path) -> pynng.Socket:
    """A bare raw Req0 that sends requests and reads replies only when a test says so."""
    requester = nng.open_raw_req0(MAX)
    requester.dial(address(tmp_path), block=True)
    return requester


def send_raw(requester: pynng.Socket, request_id: int, body: bytes) -> None:
    header = (0x8000_0000 | request_id).to_bytes(4, "big")
    with nng.OutgoingMessage(header, body) as message:
        assert nng.send(requester, message, block=True)


async def collect(server: ReplySocket, count: int) -> list[tuple[ReplyContext, bytes]]:
    """Receive ``count`` requests, each on a context of its own (as the daemon's workers do)."""
    received = []
    for _ in range(count):
        context = server.context()
        received.append((context, await context.receive()))
    return received


async def test_concurrent_requests_get_their_own_replies_in_any_order(tmp_path: Path) -> None:
    count = 50
    with (
        ReplySocket(address(tmp_path), MAX, send_timeout=5) as server,
        RawRequestSocket(address(tmp_path), MAX) as client,
    ):
        replies: dict[int, bytes] = {}

        async def ask(n: int) -> None:
            replies[n] = await client.request(b"%d" % n)

        async with trio.open_nursery() as nursery:
            for n in range(count):
                nursery.start_soon(ask, n)
            requests = await collect(server, count)
            for context, body in reversed(requests):  # answered newest first
                assert await context.reply(b"re:" + body)
    assert replies == {n: b"re:%d" % n for n in range(count)}


async def test_a_caller_that_gives_up_does_not_strand_the_others(tmp_path: Path) -> None:
    with (
        ReplySocket(address(tmp_path), MAX, send_timeout=5) as server,
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
            first = server.context()
            await first.receive()
            nursery.start_soon(staying)
            second = server.context()
            await second.receive()
            quitter.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert await first.reply(b"too late")  # nobody wants it: dropped by the client
            assert await second.reply(b"for second")
        assert answers == [b"for second"]


async def test_a_lost_connection_fails_the_calls_in_flight(tmp_path: Path) -> None:
    server = ReplySocket(address(tmp_path), MAX, send_timeout=5)
    with RawRequestSocket(address(tmp_path), MAX) as client:
        async with trio.open_nursery() as nursery:

            async def close_once_received() -> None:
                await server.context().receive()
                server.close()

            nursery.start_soon(close_once_received)
            with trio.fail_after(5), pytest.raises(ConnectionLost):
                await client.request(b"never answered")


async def test_many_replies_on_one_busy_pipe_all_arrive(tmp_path: Path) -> None:
    """Replies sent back to back find the pipe busy; each must wait its turn, none may be lost."""
    count = 200
    with (
        ReplySocket(address(tmp_path), MAX, send_timeout=math.inf) as server,
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
                for context, body in requests:
                    replies.start_soon(context.reply, body)
        assert sorted(got) == sorted(b"x" * 1000 + b"%d" % n for n in range(count))


async def test_a_requester_that_reads_late_still_gets_every_reply(tmp_path: Path) -> None:
    """More replies than nng's per-pipe queue (64) wait for a requester that is not reading.

    A raw Rep0 try-puts each reply into that queue and frees what does not fit, so a client that
    read its replies late lost all but the first ~66 and waited forever.
    """
    count, reply_bytes = 200, 64 << 10
    with ReplySocket(address(tmp_path), MAX, send_timeout=math.inf) as server:
        requester = raw_requester(tmp_path)
        try:
            for request_id in range(count):  # small requests: the kernel's socket buffer holds them
                send_raw(requester, request_id, b"%d" % request_id)
            requests = await collect(server, count)
            sent: list[bool] = []

            async def answer(context: ReplyContext, body: bytes) -> None:
                sent.append(await context.reply(body * (reply_bytes // len(body))))

            async with trio.open_nursery() as nursery:
                for context, body in requests:
                    nursery.start_soon(answer, context, body)
                await trio.testing.wait_all_tasks_blocked()  # every reply handed to nng, none read
                received: dict[int, bytes] = {}
                inbox = nng.Inbox()
                with trio.fail_after(20):
                    while len(received) < count:
                        reply = inbox.receive(requester)
                        if reply is None:
                            await trio.lowlevel.wait_readable(requester.recv_fd)
                            continue
                        received[int.from_bytes(reply.header, "big") & 0x7FFF_FFFF] = reply.body
        finally:
            requester.close()
    assert sent == [True] * count
    assert {n: len(body) for n, body in received.items()} == {
        n: len(b"%d" % n) * (reply_bytes // len(b"%d" % n)) for n in range(count)
    }


@contextlib.asynccontextmanager
async def silent_requester(
    tmp_path: Path, count: int
) -> AsyncIterator[tuple[ReplySocket, list[tuple[ReplyContext, bytes]]]]:
    """``count`` requests taken from a requester that never reads its replies, which can then only park."""
    server = ReplySocket(address(tmp_path), MAX, send_timeout=math.inf)
    requester = raw_requester(tmp_path)
    try:
        for request_id in range(count):
            send_raw(requester, request_id, b"r")
        yield server, await collect(server, count)
    finally:
        requester.close()
        server.close()


async def test_closing_the_socket_while_replies_wait_ends_them_cleanly(tmp_path: Path) -> None:
    """Replies parked on a requester that does not read are ended by close(), not left on freed aios."""
    count = 9
    async with silent_requester(tmp_path, count) as (server, requests):
        outcomes: list[str] = []

        async def answer(context: ReplyContext) -> None:
            try:
                outcomes.append("sent" if await context.reply(b"x" * (512 << 10)) else "timed out")
            except pynng.Closed:
                outcomes.append("closed")

        async with trio.open_nursery() as nursery:
            for context, _ in requests:
                nursery.start_soon(answer, context)
            await trio.testing.wait_all_tasks_blocked()
            assert server.deferred_sends > 0  # some replies really are parked in nng
            server.close()
        assert len(outcomes) == count
        assert "timed out" not in outcomes


async def test_a_receive_does_not_spin_when_nng_leaves_the_descriptor_raised(tmp_path: Path) -> None:
    """A requester that leaves with a second request queued leaves ``recv_fd`` raised (nng 1.11)."""
    with ReplySocket(address(tmp_path), MAX, send_timeout=5) as server:
        requester = raw_requester(tmp_path)
        send_raw(requester, 1, b"first")
        send_raw(requester, 2, b"second, still queued in nng when its pipe closes")
        first = server.context()
        assert await first.receive() == b"first"
        pipe_gone = trio.Event()
        token = trio.lowlevel.current_trio_token()
        server._socket.add_post_pipe_remove_cb(lambda _pipe: token.run_sync_soon(pipe_gone.set))
        with trio.fail_after(5):
            await server.wait_readable()  # the second request is queued in nng
        requester.close()
        await first.reply(b"x" * (1 << 20))  # the write fails, so nng closes the pipe
        with trio.fail_after(5):
            await pipe_gone.wait()
        readable, _, _ = select.select([server._recv_fd], [], [], 0)
        assert readable, "nng lowered recv_fd after all: the case this test covers did not arise"
        receiver = server.context()
        cpu_before = time.process_time()
        with trio.move_on_after(0.5) as idle:
            request = await receiver.receive()
        cpu_used = time.process_time() - cpu_before
    assert idle.cancelled_caught, f"nobody sent a request, yet receive returned {request!r}"
    assert cpu_used < 0.2, f"receive used {cpu_used:.2f} s of CPU in 0.5 s idle"


# --------------------------------------------------------------------------- ownership of nng's pointers


def test_a_message_nng_took_is_neither_sent_nor_freed_again(tmp_path: Path) -> None:
    with ReplySocket(address(tmp_path), MAX, send_timeout=5):
        requester = raw_requester(tmp_path)
        try:
            message = nng.OutgoingMessage((0x8000_0001).to_bytes(4, "big"), b"once")
            assert nng.send(requester, message, block=True)
            assert not message.owned
            with pytest.raises(nng.OwnershipError):
                nng.send(requester, message)
            message.close()  # nng owns it: closing must not free it
            assert not message.owned
        finally:
            requester.close()


def test_a_closed_message_is_freed_once_and_refused_after() -> None:
    with nng.OutgoingMessage(b"", b"body") as message:
        assert message.owned
    assert not message.owned
    message.close()
    requester = nng.open_raw_req0(MAX)
    try:
        with pytest.raises(nng.OwnershipError):
            nng.send(requester, message)
    finally:
        requester.close()


async def test_a_freed_aio_refuses_every_use(tmp_path: Path) -> None:
    with ReplySocket(address(tmp_path), MAX, send_timeout=5) as server:
        aio = nng.SendAio(1000)
        aio.free()
        aio.free()  # a second free does nothing
        with pytest.raises(nng.OwnershipError):
            _ = aio.busy
        with pytest.raises(nng.OwnershipError):
            aio.finish()
        with nng.OutgoingMessage(b"", b"reply") as message:
            with pytest.raises(nng.OwnershipError):
                aio.start(nng.Context(server._socket), message)
            assert message.owned, "a refused start must leave the message with its owner"


async def test_a_send_still_pending_in_nng_cannot_be_finished_and_is_freed_with_its_socket(
    tmp_path: Path,
) -> None:
    count = 9
    async with silent_requester(tmp_path, count) as (server, requests):
        contexts = [context for context, _ in requests]
        for context in contexts:  # more than the requester's nng takes in without being read
            with nng.OutgoingMessage(b"", b"x" * (512 << 10)) as message:
                context._aio.start(context._context, message)
        # A send seen busy may still complete before finish() looks (nng's pipe takes what the
        # kernel buffer holds in the background), so each is tried until one is refused; the ones
        # that completed meanwhile are finished normally. The requester never reads, so the last
        # sends can never complete.
        refused: list[nng.SendAio] = []
        for context in contexts:
            try:
                context._aio.finish()
            except nng.OwnershipError as error:
                assert "still pending" in str(error)
                refused.append(context._aio)
        assert refused, "every reply completed: the case this test covers did not arise"
        server.close()  # frees every aio, the pending ones included
        with pytest.raises(nng.OwnershipError, match="already freed"):
            _ = refused[0].busy


async def test_a_reply_on_a_context_released_too_early_raises_instead_of_crashing(tmp_path: Path) -> None:
    with ReplySocket(address(tmp_path), MAX, send_timeout=5) as server:
        requester = raw_requester(tmp_path)
        try:
            send_raw(requester, 1, b"question")
            context = server.context()
            assert await context.receive() == b"question"
            context.release()  # the mistake: the socket is still open
            with pytest.raises(nng.OwnershipError):
                await context.reply(b"answer")
        finally:
            requester.close()


# --------------------------------------------------------------------------- nng's version


def test_the_installed_nng_is_the_tested_release_line() -> None:
    found = installed_nng_version()
    assert tuple(int(part) for part in found.split(".")[:2]) == TESTED_NNG
    check_nng_version(found)


@pytest.mark.parametrize("found", ["1.11.0", "1.11.9", "1.11.2-dev"])
def test_any_patch_release_of_the_tested_line_is_accepted(found: str) -> None:
    check_nng_version(found)


@pytest.mark.parametrize("found", ["1.10.1", "1.12.0", "2.11.0", "0.11.0"])
def test_another_release_line_is_refused_naming_both_versions(found: str) -> None:
    with pytest.raises(NngVersionError) as info:
        check_nng_version(found)
    assert isinstance(info.value, ImportError)
    assert "tested with nng 1.11" in str(info.value)
    assert f"bundles nng {found}" in str(info.value)


@pytest.mark.parametrize("found", ["", "dev", "1", "one.eleven"])
def test_an_unreadable_version_is_refused(found: str) -> None:
    with pytest.raises(NngVersionError, match=f"cannot read nng's version {found!r}"):
        check_nng_version(found)


def test_importing_the_transport_with_another_nng_fails_with_the_versions_named() -> None:
    """The check runs at import, before any code that relies on nng 1.11's behaviour can run."""
    script = """
import pynng

real = pynng.lib


class OtherNng:
    def __getattr__(self, name):
        return getattr(real, name)

    def nng_version(self):
        return pynng.ffi.new("char[]", b"1.12.0")


pynng.lib = OtherNng()
try:
    import containerd_actors.transport.reply
except ImportError as exc:
    print(type(exc).__name__, exc)
else:
    print("imported")
"""
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("NngVersionError "), result.stdout + result.stderr
    assert "tested with nng 1.11" in result.stdout
    assert "bundles nng 1.12.0" in result.stdout
