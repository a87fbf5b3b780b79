"""Raw-mode nng Req0/Rep0 sockets driven by trio's own epoll: the wire's request/reply transport.

Why not the usual contexts with ``arecv``/``asend``: every pynng async operation completes on an
nng thread, which must take the GIL and post back into trio (``run_sync_soon`` and a wakeup
socket), two such hops per request on each side. Measured here with one trio client: a sync Rep0
echo answered in ~0.18-0.29 ms, a trio context echo in ~0.38-0.54 ms, a raw Rep0 echo in
~0.27-0.40 ms; the daemon's CPU per Ping fell from 525 to 205 us.

In raw mode nng does not track requests: a message carries its routing header (on the server,
the pipe and request id; on the client, the request id), and a reply is routed by that header.
So one task can receive for everyone, and:

- receiving is a non-blocking ``nng_recvmsg`` after ``wait_readable`` on the socket's ``recv_fd``
  (nng raises that descriptor in C, without touching Python);
- sending is a non-blocking ``nng_sendmsg``. It reports ``NNG_EAGAIN`` while a pipe is still busy
  with an earlier message (the peer may already have it, and have answered, before nng's send
  callback has freed the pipe), and then it is retried after a short backoff. Dropping it instead
  would leave the peer waiting forever.
"""

from __future__ import annotations

import itertools
import math
import os
from types import TracebackType
from typing import Any, Self

import attrs
import pynng
import trio
from pynng import ffi, lib

#: A Req0 request id is 32 bits with the top bit set (the top bit marks the end of the backtrace).
_REQUEST_ID_FLAG = 0x8000_0000
#: Retries of a send to a busy pipe: first right away (one trip through trio's scheduler), then
#: from 0.1 ms doubling to 10 ms; a pipe is busy for as long as nng takes to write one message.
_FIRST_RETRY_S = 0.0001
_LAST_RETRY_S = 0.01
#: A raw Req0 passes replies up through a queue of this many messages (nng's maximum; the default
#: is 1) and drops what does not fit, so a client never has more requests in flight than it holds.
_REPLY_QUEUE = 8192
_MAX_IN_FLIGHT = _REPLY_QUEUE // 2


@attrs.frozen
class RawRequest:
    """A request's bytes and the routing header its reply must carry."""

    header: bytes
    body: bytes


def _take_message(message: Any) -> RawRequest:
    """Copy header and body out of an nng message and free it."""
    try:
        header = bytes(ffi.buffer(lib.nng_msg_header(message), lib.nng_msg_header_len(message)))
        body = bytes(ffi.buffer(lib.nng_msg_body(message), lib.nng_msg_len(message)))
    finally:
        lib.nng_msg_free(message)
    return RawRequest(header, body)


def _new_message(header: bytes, body: bytes) -> Any:
    pointer = ffi.new("nng_msg **")
    pynng.exceptions.check_err(lib.nng_msg_alloc(pointer, 0))
    message = pointer[0]
    try:
        pynng.exceptions.check_err(lib.nng_msg_header_append(message, header, len(header)))
        pynng.exceptions.check_err(lib.nng_msg_append(message, body, len(body)))
    except BaseException:
        lib.nng_msg_free(message)
        raise
    return message


def _closed() -> pynng.Closed:
    return pynng.Closed("socket closed", lib.NNG_ECLOSED)


class _RawSocket:
    """What both sides share: non-blocking receive on ``recv_fd``, send with an async fallback."""

    def __init__(self, socket: pynng.Socket, send_timeout: float) -> None:
        self._socket = socket
        self._recv_fd = socket.recv_fd
        self._send_timeout = send_timeout
        self._received = ffi.new("nng_msg **")
        self._closed = False
        #: Messages that had to wait for a busy pipe (how often the fast path misses).
        self.deferred_sends = 0

    def _receive_nowait(self) -> RawRequest | None:
        if self._closed:
            raise _closed()
        status = lib.nng_recvmsg(self._socket.socket, self._received, lib.NNG_FLAG_NONBLOCK)
        if status == 0:
            return _take_message(self._received[0])
        if status != lib.NNG_EAGAIN:
            pynng.exceptions.check_err(status)
        return None

    async def _wait_readable(self) -> None:
        try:
            await trio.lowlevel.wait_readable(self._recv_fd)
        except trio.ClosedResourceError:
            raise _closed() from None

    async def _send(self, header: bytes, body: bytes) -> bool:
        """False when the message could not be handed to a pipe within the send timeout.

        A busy pipe is retried with a short backoff rather than handed to an nng async send: in
        raw mode every socket-level send goes through one internal context, which holds a single
        pending send, so concurrent async sends on one socket are not safe (they hung here).
        """
        if self._closed:
            raise _closed()
        message = _new_message(header, body)
        deadline = trio.current_time() + self._send_timeout
        delay = 0.0
        try:
            while True:
                status = lib.nng_sendmsg(self._socket.socket, message, lib.NNG_FLAG_NONBLOCK)
                if status == 0:
                    return True  # nng owns the message now
                if status != lib.NNG_EAGAIN:
                    pynng.exceptions.check_err(status)
                if trio.current_time() >= deadline:
                    lib.nng_msg_free(message)
                    return False
                if delay == 0.0:
                    self.deferred_sends += 1
                await trio.sleep(delay)
                delay = min(max(delay * 2, _FIRST_RETRY_S), _LAST_RETRY_S)
        except BaseException:
            lib.nng_msg_free(message)  # a failed nng_sendmsg leaves the message with the caller
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Wake a receive parked on the descriptor before nng closes it (possible only in trio.run).
        try:
            trio.lowlevel.notify_closing(self._recv_fd)
        except RuntimeError:
            pass
        self._socket.close()


class RawReplySocket(_RawSocket):
    """Listen with a raw Rep0; ``receive`` requests from one task, ``reply`` from any number."""

    def __init__(self, address: str, recv_max_size: int, send_timeout: float) -> None:
        socket = pynng.Rep0(opener=lib.nng_rep0_open_raw, recv_max_size=recv_max_size)
        try:
            socket.listen(address)
            super().__init__(socket, send_timeout)
        except BaseException:
            socket.close()
            raise

    async def receive(self) -> RawRequest:
        """The next request; raises ``pynng.Closed`` once the socket is closed."""
        while (request := self._receive_nowait()) is None:
            await self._wait_readable()
        return request

    async def reply(self, request: RawRequest, body: bytes) -> bool:
        """Send ``body`` back to whoever sent ``request``; a requester that has gone is no error.

        Returns False when the requester's pipe stayed busy for the whole send timeout (it stopped
        reading): the reply is dropped rather than holding this worker.
        """
        return await self._send(request.header, body)


class ConnectionLost(Exception):
    """The connection a request went out on closed before its reply came."""


@attrs.define
class _Pending:
    """One request waiting for its reply; ``wake`` is set when the reply is in or a role frees up."""

    reply: bytes | None = None
    error: BaseException | None = None
    wake: trio.Event = attrs.Factory(trio.Event)


class RawRequestSocket(_RawSocket):
    """Dial with a raw Req0; any number of tasks ``request`` at once over the one connection.

    Replies are matched to requests by id. Whichever waiting task finds nobody reading becomes
    the reader for everyone until its own reply is in, then hands the role to another waiter;
    so no background task is needed, and a caller that is cancelled only gives up its own reply.
    nng does not resend in raw mode (the client never wanted it: a start must not run twice),
    and a lost connection fails the requests that were in flight on it. nng drops replies that
    do not fit its receive queue (one message by default, which lost 34 of 200 replies to one
    burst here), so the queue is at nng's maximum and requests in flight are capped below it.
    """

    def __init__(self, address: str, recv_max_size: int) -> None:
        self._ids = itertools.count(int.from_bytes(os.urandom(4)) & ~_REQUEST_ID_FLAG)
        self._pending: dict[int, _Pending] = {}
        self._reading = False
        self._reader_wait = trio.CancelScope()
        self._in_flight = trio.Semaphore(_MAX_IN_FLIGHT)
        self._token = trio.lowlevel.current_trio_token()
        socket = pynng.Req0(opener=lib.nng_req0_open_raw, recv_max_size=recv_max_size)
        try:
            socket.recv_buffer_size = _REPLY_QUEUE
            if socket.recv_buffer_size != _REPLY_QUEUE:
                raise RuntimeError(f"nng refused a reply queue of {_REPLY_QUEUE} messages")
            socket.add_post_pipe_remove_cb(self._on_pipe_removed)
            socket.dial(address, block=True)
            # No send timeout of its own: a request waits for a connection as long as its caller does.
            super().__init__(socket, send_timeout=math.inf)
        except BaseException:
            socket.close()
            raise

    def _on_pipe_removed(self, _pipe: pynng.Pipe) -> None:
        # On an nng thread with a lock held: only post to trio.
        try:
            self._token.run_sync_soon(self._fail_all, ConnectionLost("the connection to the daemon closed"))
        except trio.RunFinishedError:
            pass

    def _fail_all(self, error: BaseException) -> None:
        for pending in self._pending.values():
            if pending.reply is None and pending.error is None:
                pending.error = error
                pending.wake.set()
        self._reader_wait.cancel()  # the reader waits on the socket, not on its ``wake``

    async def request(self, body: bytes) -> bytes:
        """Send ``body`` and wait for its reply (the caller bounds the wait)."""
        # Not ``async with``: acquiring a trio semaphore always yields once, a scheduling pass
        # on every call; only a client at the cap needs to wait.
        try:
            self._in_flight.acquire_nowait()
        except trio.WouldBlock:
            await self._in_flight.acquire()
        try:
            return await self._request(body)
        finally:
            self._in_flight.release()

    async def _request(self, body: bytes) -> bytes:
        request_id = (next(self._ids) & ~_REQUEST_ID_FLAG) | _REQUEST_ID_FLAG
        pending = self._pending[request_id] = _Pending()
        try:
            await self._send(request_id.to_bytes(4, "big"), body)
            while pending.reply is None:
                if pending.error is not None:
                    raise pending.error
                if self._reading:
                    await pending.wake.wait()
                    pending.wake = trio.Event()
                else:
                    await self._read_until(pending)
            return pending.reply
        finally:
            del self._pending[request_id]

    async def _read_until(self, own: _Pending) -> None:
        """Read replies for everyone until ``own`` is answered (or failed), then pass the role on."""
        self._reading = True
        try:
            while own.reply is None and own.error is None:
                message = self._receive_nowait()
                if message is None:
                    with trio.CancelScope() as self._reader_wait:
                        await self._wait_readable()
                    continue
                waiting = self._pending.get(int.from_bytes(message.header[-4:], "big"))
                if waiting is not None:  # else the reply of a request whose caller gave up
                    waiting.reply = message.body
                    waiting.wake.set()
        finally:
            self._reading = False
            self._wake_next_reader(own)

    def _wake_next_reader(self, previous: _Pending) -> None:
        for pending in self._pending.values():
            if pending is not previous and pending.reply is None:
                pending.wake.set()
                return
