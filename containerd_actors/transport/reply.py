"""The server's Rep0: one nng context per worker, driven by trio's own epoll and nng's inline aios.

Why not the raw Rep0 (``nng_rep0_open_raw``) that ``nng_raw``'s client speaks to: raw Rep0 hands
each reply to a 64-message queue per pipe with a *try*-put and silently frees whatever does not fit.
A client with more than 64 requests in flight on one connection, reading its replies slower than
the daemon answers them, lost replies and waited forever (seen in CI, in the busy-pipe test).
The cooked Rep0 never drops: a reply to a busy pipe waits in the pipe's queue of contexts.

And why not pynng's ``Context.arecv``/``asend``: they complete on an nng thread, which must take the
GIL and post back into trio, two hops per request. Here instead:

- receiving is a non-blocking ``nng_ctx_recvmsg`` after ``wait_readable`` on the socket's
  ``recv_fd``, which nng raises in C while some pipe holds a request;
- replying is ``nng_ctx_send`` with an aio that has no callback. When the pipe is free, nng
  finishes that aio inside the call (no thread, no GIL); when the pipe is busy, the aio stays
  pending in nng's queue and this side polls ``nng_aio_busy`` with a short backoff. A
  non-blocking ``nng_ctx_sendmsg`` cannot be used: on a busy pipe it fails and also forgets the
  request it was answering, so the retry gets "incorrect state" (nng 1.11).
"""

from __future__ import annotations

import math

import pynng
import trio
from pynng import ffi, lib

from containerd_actors.transport.request import (
    FIRST_RETRY_S,
    LAST_RETRY_S,
    PolledSocket,
    closed_error,
    new_message,
    take_message,
)

#: nng's NNG_DURATION_INFINITE (pynng does not export it).
_INFINITE_MS = -1


def _milliseconds(seconds: float) -> int:
    return _INFINITE_MS if math.isinf(seconds) else max(1, round(seconds * 1000))


class ReplySocket(PolledSocket):
    """Listen with a cooked Rep0; each worker answers through its own ``context()``."""

    def __init__(self, address: str, recv_max_size: int, send_timeout: float) -> None:
        socket = pynng.Rep0(recv_max_size=recv_max_size)
        try:
            socket.listen(address)
        except BaseException:
            socket.close()
            raise
        super().__init__(socket)
        self._send_timeout_ms = _milliseconds(send_timeout)
        self._contexts: list[ReplyContext] = []
        #: Replies that found their pipe busy and had to wait in nng (how often the fast path misses).
        self.deferred_sends = 0

    def context(self) -> ReplyContext:
        """A context of its own: it receives one request and sends that request's reply."""
        if self._closed:
            raise closed_error()
        context = ReplyContext(self)
        self._contexts.append(context)
        return context

    def _after_close(self) -> None:
        # Closing the socket closed the contexts too, and finished their pending sends.
        for context in self._contexts:
            context.release()


class ReplyContext:
    """One nng context and the callback-less aio its replies go out on."""

    def __init__(self, owner: ReplySocket) -> None:
        self._owner = owner
        self._context = ffi.new("nng_ctx *")
        pynng.exceptions.check_err(lib.nng_ctx_open(self._context, owner._socket.socket))
        aio = ffi.new("nng_aio **")
        pynng.exceptions.check_err(lib.nng_aio_alloc(aio, ffi.NULL, ffi.NULL))
        self._aio = aio[0]
        lib.nng_aio_set_timeout(self._aio, owner._send_timeout_ms)
        self._received = ffi.new("nng_msg **")
        self._sending = False

    async def receive(self) -> bytes:
        """The next request's body; raises ``pynng.Closed`` once the socket is closed.

        ``recv_fd`` can stay readable with nothing to take: nng 1.11 does not lower it when a pipe
        whose request was waiting closes. Waiting again at once would spin a core until the next
        request comes (measured: ~100,000 wake-ups a second), so a wake-up that finds nothing
        backs off, 0.1 ms doubling to 10 ms; the next request taken lowers the descriptor again.
        """
        woken = False
        delay = 0.0
        while True:
            if self._owner._closed:
                raise closed_error()
            status = lib.nng_ctx_recvmsg(self._context[0], self._received, lib.NNG_FLAG_NONBLOCK)
            if status == 0:
                return take_message(self._received[0]).body
            if status != lib.NNG_EAGAIN:
                pynng.exceptions.check_err(status)
            if woken:  # and yet nothing there
                await trio.sleep(delay)
                delay = min(max(delay * 2, FIRST_RETRY_S), LAST_RETRY_S)
            await self._owner.wait_readable()
            woken = True

    async def reply(self, body: bytes) -> bool:
        """Answer the request this context received last; a requester that has gone is no error.

        Returns False when the requester's pipe stayed busy for the whole send timeout (it stopped
        reading): the reply is dropped rather than holding this worker.
        """
        if self._owner._closed:
            raise closed_error()
        self._sending = True
        try:
            return await self._send(body)
        finally:
            self._sending = False
            if self._owner._closed:
                self.release()  # the socket closed while this reply waited: the aio is ours to free

    async def _send(self, body: bytes) -> bool:
        delay = 0.0
        try:
            lib.nng_aio_set_msg(self._aio, new_message(b"", body))
            lib.nng_ctx_send(self._context[0], self._aio)
            while lib.nng_aio_busy(self._aio):
                if delay == 0.0:
                    self._owner.deferred_sends += 1
                await trio.sleep(delay)
                delay = min(max(delay * 2, FIRST_RETRY_S), LAST_RETRY_S)
        except BaseException:
            lib.nng_aio_cancel(self._aio)
            lib.nng_aio_wait(self._aio)  # returns at once: the cancel completes the aio inline
            self._free_unsent()
            raise
        status = lib.nng_aio_result(self._aio)
        self._free_unsent()
        if status == 0:
            return True
        if status == lib.NNG_ETIMEDOUT:
            return False
        pynng.exceptions.check_err(status)
        return False

    def _free_unsent(self) -> None:
        """Free a message nng gave back: every completed send takes its message off the aio, and
        every failed, timed-out or cancelled one leaves it there for the caller."""
        message = lib.nng_aio_get_msg(self._aio)
        if message != ffi.NULL:
            lib.nng_aio_set_msg(self._aio, ffi.NULL)
            lib.nng_msg_free(message)

    def release(self) -> None:
        """Free the aio once the socket is closed (closing it finished any send still pending).

        A reply still polling its aio frees it itself when it wakes, so that it never touches a
        freed aio.
        """
        if self._sending or self._aio == ffi.NULL:
            return
        lib.nng_aio_wait(self._aio)
        self._free_unsent()
        lib.nng_aio_free(self._aio)
        self._aio = ffi.NULL
