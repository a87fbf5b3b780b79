"""The client's raw-mode nng Req0, driven by trio's own epoll.

Why not the usual contexts with ``arecv``/``asend``: every pynng async operation completes on an
nng thread, which must take the GIL and post back into trio (``run_sync_soon`` and a wakeup
socket), two such hops per request on each side. Measured here with one trio client: a sync Rep0
echo answered in ~0.18-0.29 ms, a trio context echo in ~0.38-0.54 ms, a raw echo in
~0.27-0.40 ms; the daemon's CPU per Ping fell from 525 to 205 us. (The daemon's side is in
``reply``: a cooked Rep0, because a raw Rep0 drops replies.)

In raw mode nng does not track requests: a message carries its request id in its header, and the
reply comes back with it. So one task can receive for everyone, and:

- receiving is a non-blocking receive after ``wait_readable`` on the socket's ``recv_fd``;
- sending is a non-blocking send. Raw Req0 hands a message over only while a pipe is waiting for
  one; while the pipe is still writing the previous message it reports ``NNG_EAGAIN``, and the
  send is retried after a short backoff (no message is ever dropped).
"""

from __future__ import annotations

import functools
import itertools
import os

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
import attrs
import pynng
import trio

from containerd_actors.transport import nng
from containerd_actors.transport.backoff import Backoff
from containerd_actors.transport.polled import PolledSocket
from containerd_actors.transport.tls import TlsFiles, host_of, is_tls

#: A Req0 request id is 32 bits with the top bit set (the top bit marks the end of the backtrace).
_REQUEST_ID_FLAG = 0x8000_0000
#: A raw Req0 passes replies up through a queue of this many messages (nng's maximum; the default
#: is 1) and drops what does not fit, so a client never has more requests in flight than it holds.
_REPLY_QUEUE = 8192
_MAX_IN_FLIGHT = _REPLY_QUEUE // 2


class ConnectionLost(Exception):
    """The connection a request went out on closed before its reply came."""


@attrs.define
class _Pending:
    """One request waiting for its reply; ``wake`` is set when the reply is in or a role frees up."""

    reply: bytes | None = None
    error: BaseException | None = None
    wake: trio.Event = attrs.Factory(trio.Event)


class RawRequestSocket(PolledSocket):
    """Dial with a raw Req0; any number of tasks ``request`` at once over the one connection.

    Replies are matched to requests by id. Whichever waiting task finds nobody reading becomes
    the reader for everyone until its own reply is in, then hands the role to another waiter;
    so no background task is needed, and a caller that is cancelled only gives up its own reply.
    nng does not resend in raw mode (the client never wanted it: a start must not run twice),
    and a lost connection fails the requests that were in flight on it. The reply queue is at
    nng's maximum, so that nng keeps taking replies off the connection while Python is busy.
    """

    def __init__(
        self, address: str, recv_max_size: int, tls: TlsFiles | None = None, *, dial: bool = True
    ) -> None:
        """``tls`` is required for a ``tls+tcp://`` address: this client's certificate and key, and
        the CA that signed the daemon's (whose certificate must name the address's host). Without
        ``dial`` the socket is not connected yet: ``dial_in_thread`` does it."""
        self._ids = itertools.count(int.from_bytes(os.urandom(4)) & ~_REQUEST_ID_FLAG)
        self._pending: dict[int, _Pending] = {}
        self._reading = False
        self._reader_wait = trio.CancelScope()
        self._in_flight = trio.Semaphore(_MAX_IN_FLIGHT)
        self._token = trio.lowlevel.current_trio_token()
        socket = nng.open_raw_req0(recv_max_size)
        try:
            socket.recv_buffer_size = _REPLY_QUEUE
            if socket.recv_buffer_size != _REPLY_QUEUE:
                raise RuntimeError(f"nng refused a reply queue of {_REPLY_QUEUE} messages")
            socket.add_post_pipe_remove_cb(self._on_pipe_removed)
            if is_tls(address):
                if tls is None:
                    raise ValueError(f"{address} needs a client certificate, key and CA")
                socket.tls_config = tls.client_config(host_of(address))
            if dial:
                socket.dial(address, block=True)
        except BaseException:
            socket.close()
            raise
        super().__init__(socket)
        self._inbox = nng.Inbox()
        #: Requests that found the pipe busy and had to be retried (how often the fast path misses).
        self.deferred_sends = 0

    @classmethod
    async def dial_in_thread(
        cls, address: str, recv_max_size: int, tls: TlsFiles | None = None
    ) -> RawRequestSocket:
        """As the constructor, but the dial (the TCP connect and the TLS handshake) runs in a worker
        thread: a daemon dialing another must not stall its event loop on an address that does not
        answer. The caller bounds the wait; if it gives up, the socket is closed (which ends the dial)."""
        self = cls(address, recv_max_size, tls, dial=False)
        try:
            await trio.to_thread.run_sync(
                functools.partial(self._socket.dial, address, block=True), abandon_on_cancel=True
            )
        except BaseException:
            self.close()
            raise
        return self

    def _receive_nowait(self) -> nng.RawMessage | None:
        if self._closed:
            raise nng.closed_error()
        return self._inbox.receive(self._socket)

    async def _send(self, header: bytes, body: bytes) -> None:
        """Hand the message to nng, retrying while the pipe is busy (as long as the caller waits).

        Not an nng async send: in raw mode every socket-level send goes through one internal
        context, which holds a single pending send, so concurrent async sends hang (nng 1.11).
        """
        if self._closed:
            raise nng.closed_error()
        with nng.OutgoingMessage(header, body) as message:
            backoff: Backoff | None = None
            while not nng.send(self._socket, message):
                if backoff is None:
                    backoff = Backoff()
                    self.deferred_sends += 1
                await backoff.wait()

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
                        await self.wait_readable()
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
