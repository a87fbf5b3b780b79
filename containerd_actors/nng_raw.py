"""A raw-mode nng Rep0 socket driven by trio's own epoll, for the API server.

Why not the usual Rep0 contexts with ``arecv``/``asend``: every pynng async operation completes on
an nng thread, which must take the GIL and post back into trio (``run_sync_soon`` and a wakeup
socket) — two such hops per request on the server side alone. Measured here with the same trio
client: a sync Rep0 echo answered in ~0.18-0.29 ms, a trio context echo in ~0.38-0.54 ms, and this
raw socket in ~0.27-0.40 ms.

In raw mode nng does not track requests: each received message carries its routing header (the
pipe and request id), and a reply is routed by sending a message with that same header. So one
task can receive every request without a context per request in flight, and:

- receiving is a non-blocking ``nng_recvmsg`` after ``wait_readable`` on the socket's ``recv_fd``
  (nng raises that descriptor in C, without touching Python);
- sending is a non-blocking ``nng_sendmsg``. It reports ``NNG_EAGAIN`` while the requester's pipe is
  still busy with an earlier reply — the requester may already have that reply, and sent its next
  request, before nng's send callback has freed the pipe — and then the reply goes out through
  an ordinary async send instead. Dropping it would leave the requester waiting forever.
"""

from __future__ import annotations

from types import TracebackType

import attrs
import pynng
import trio
from pynng import ffi, lib


@attrs.frozen
class RawRequest:
    """A request's bytes and the routing header its reply must carry."""

    header: bytes
    body: bytes


def _take_message(message: object) -> RawRequest:
    """Copy header and body out of an nng message and free it."""
    try:
        header = bytes(ffi.buffer(lib.nng_msg_header(message), lib.nng_msg_header_len(message)))
        body = bytes(ffi.buffer(lib.nng_msg_body(message), lib.nng_msg_len(message)))
    finally:
        lib.nng_msg_free(message)
    return RawRequest(header, body)


def _new_message(header: bytes, body: bytes) -> object:
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


class RawReplySocket:
    """Listen with a raw Rep0; ``receive`` requests from one task, ``reply`` from any number."""

    def __init__(self, address: str, recv_max_size: int, send_timeout: float) -> None:
        self._socket = pynng.Rep0(opener=lib.nng_rep0_open_raw, recv_max_size=recv_max_size)
        try:
            self._socket.listen(address)
            self._recv_fd = self._socket.recv_fd
        except BaseException:
            self._socket.close()
            raise
        self._send_timeout = send_timeout
        self._received = ffi.new("nng_msg **")
        self._closed = False
        #: Replies that had to wait for a busy pipe (a measure of how often the fast path misses).
        self.deferred_replies = 0

    async def receive(self) -> RawRequest:
        """The next request; raises ``pynng.Closed`` once the socket is closed."""
        while True:
            if self._closed:
                raise pynng.Closed("socket closed", lib.NNG_ECLOSED)
            status = lib.nng_recvmsg(self._socket.socket, self._received, lib.NNG_FLAG_NONBLOCK)
            if status == 0:
                return _take_message(self._received[0])
            if status != lib.NNG_EAGAIN:
                pynng.exceptions.check_err(status)
            try:
                await trio.lowlevel.wait_readable(self._recv_fd)
            except trio.ClosedResourceError:
                raise pynng.Closed("socket closed", lib.NNG_ECLOSED) from None

    async def reply(self, request: RawRequest, body: bytes) -> None:
        """Send ``body`` back to whoever sent ``request``; a requester that has gone is no error."""
        if self._closed:
            raise pynng.Closed("socket closed", lib.NNG_ECLOSED)
        message = _new_message(request.header, body)
        status = lib.nng_sendmsg(self._socket.socket, message, lib.NNG_FLAG_NONBLOCK)
        if status == 0:
            return  # nng owns the message now
        if status != lib.NNG_EAGAIN:
            lib.nng_msg_free(message)
            pynng.exceptions.check_err(status)
        self.deferred_replies += 1
        # A requester that stopped reading must not hold the replying task forever.
        with trio.move_on_after(self._send_timeout):
            await self._socket.asend_msg(pynng.Message(message))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Wake a receive parked on the descriptor before nng closes it (only inside trio.run).
        try:
            trio.lowlevel.notify_closing(self._recv_fd)
        except RuntimeError:
            pass
        self._socket.close()

    def __enter__(self) -> RawReplySocket:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
