"""The server's Rep0: one nng context per worker, driven by trio's own epoll and nng's inline aios.

Why not the raw Rep0 (``nng_rep0_open_raw``) that ``request``'s client speaks to: raw Rep0 hands
each reply to a 64-message queue per pipe with a *try*-put and silently frees whatever does not fit.
A client with more than 64 requests in flight on one connection, reading its replies slower than
the daemon answers them, lost replies and waited forever. The cooked Rep0 never drops: a reply to a
busy pipe waits in the pipe's queue of contexts.

And why not pynng's ``Context.arecv``/``asend``: they complete on an nng thread, which must take the
GIL and post back into trio, two hops per request. Here instead:

- receiving is a non-blocking context receive after ``wait_readable`` on the socket's ``recv_fd``,
  which nng raises in C while some pipe holds a request;
- replying is a context send on an aio that has no callback (``nng.SendAio``). When the pipe is
  free, nng finishes that aio inside the call (no thread, no GIL); when the pipe is busy, the aio
  stays pending in nng's queue and this side polls it with a short backoff. A non-blocking
  ``nng_ctx_sendmsg`` cannot be used: on a busy pipe it fails and also forgets the request it was
  answering, so the retry gets "incorrect state" (nng 1.11).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pynng
import trio

from containerd_actors.transport import nng
from containerd_actors.transport.backoff import Backoff
from containerd_actors.transport.polled import PolledSocket
from containerd_actors.transport.tls import TlsFiles, TlsListeners, is_tls


def _milliseconds(seconds: float) -> int:
    return nng.INFINITE_MS if math.isinf(seconds) else max(1, round(seconds * 1000))


#: Transports whose peers run on this host: a socket with only these needs no pipe ids.
LOCAL_SCHEMES = ("ipc://", "inproc://")


class ReplySocket(PolledSocket):
    """Listen with a cooked Rep0; each worker answers through its own ``context()``.

    One socket serves every address (the local ipc one, and ``tls+tcp://`` ones with ``tls``), so
    every worker serves every client, and a message says which certificate sent it
    (``RawMessage.peer``) when the socket has TLS listeners.
    """

    def __init__(
        self,
        address: str | Sequence[str],
        recv_max_size: int,
        send_timeout: float,
        *,
        tls: TlsFiles | None = None,
    ) -> None:
        addresses = [address] if isinstance(address, str) else list(address)
        self._addresses = addresses
        self._tls_addresses = [a for a in addresses if is_tls(a)]
        if self._tls_addresses and tls is None:
            raise ValueError(f"{self._tls_addresses[0]} needs a certificate, a key and a CA")
        socket = pynng.Rep0(recv_max_size=recv_max_size)
        self._tls: TlsListeners | None = None
        try:
            for plain in (a for a in addresses if not is_tls(a)):
                socket.listen(plain)
            if tls is not None and self._tls_addresses:
                self._tls = TlsListeners(socket, self._tls_addresses, tls)
        except BaseException:
            socket.close()
            raise
        super().__init__(socket)
        self._send_timeout_ms = _milliseconds(send_timeout)
        self._contexts: list[ReplyContext] = []
        #: Replies that found their pipe busy and had to wait in nng (how often the fast path misses).
        self.deferred_sends = 0

    def reload_tls(self) -> None:
        """Serve renewed certificate files (see ``TlsListeners.reload``); without TLS, nothing."""
        if self._tls is not None:
            self._tls.reload()

    def on_pipe_closed(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(pipe_id)`` in trio whenever a client's connection closes (the id is the
        ``RawMessage.pipe`` its requests came with)."""
        token = trio.lowlevel.current_trio_token()

        def removed(pipe: pynng.Pipe) -> None:
            # On an nng thread with a lock held: only post to trio.
            try:
                token.run_sync_soon(callback, pipe.id)
            except trio.RunFinishedError:
                pass

        self._socket.add_post_pipe_remove_cb(removed)

    def context(self) -> ReplyContext:
        """A context of its own: it receives one request and sends that request's reply."""
        if self._closed:
            raise nng.closed_error()
        context = ReplyContext(
            self,
            nng.Context(self._socket),
            nng.SendAio(self._send_timeout_ms),
            # Also for plain tcp: then a request's pipe tells a local caller from a remote one.
            peer_names=any(not address.startswith(LOCAL_SCHEMES) for address in self._addresses),
        )
        self._contexts.append(context)
        return context

    def _after_close(self) -> None:
        # Closing the socket closed the contexts too, and finished their pending sends.
        for context in self._contexts:
            context.release()


class ReplyContext:
    """One nng context and the aio its replies go out on; made by ``ReplySocket.context``."""

    def __init__(
        self, owner: ReplySocket, context: nng.Context, aio: nng.SendAio, *, peer_names: bool = False
    ) -> None:
        self._owner = owner
        self._context = context
        self._aio = aio
        self._inbox = nng.Inbox(peer_names=peer_names)
        self._sending = False

    async def receive(self) -> bytes:
        """The next request's body; raises ``pynng.Closed`` once the socket is closed."""
        return (await self.receive_message()).body

    async def receive_message(self) -> nng.RawMessage:
        """The next request, with the certificate name of its sender; see ``receive``.

        ``recv_fd`` can stay readable with nothing to take: nng 1.11 does not lower it when a pipe
        whose request was waiting closes. Waiting again at once would spin a core until the next
        request comes (measured: ~100,000 wake-ups a second), so a wake-up that finds nothing
        backs off, 0.1 ms doubling to 10 ms; the next request taken lowers the descriptor again.
        """
        backoff: Backoff | None = None
        woken = False
        while True:
            if self._owner.closed:
                raise nng.closed_error()
            message = self._inbox.receive_on(self._context)
            if message is not None:
                return message
            if woken:  # and yet nothing there
                backoff = backoff or Backoff()
                await backoff.wait()
            await self._owner.wait_readable()
            woken = True

    async def reply(self, body: bytes | bytearray | nng.OutgoingMessage) -> bool:
        """Answer the request this context received last; a requester that has gone is no error.

        Returns False when the requester's pipe stayed busy for the whole send timeout (it stopped
        reading): the reply is dropped rather than holding this worker.
        """
        if self._owner.closed:
            if isinstance(body, nng.OutgoingMessage):
                body.close()
            raise nng.closed_error()
        self._sending = True
        try:
            return await self._send(body)
        finally:
            self._sending = False
            if self._owner.closed:
                self.release()  # the socket closed while this reply waited: the aio is ours to free

    async def _send(self, body: bytes | bytearray | nng.OutgoingMessage) -> bool:
        aio = self._aio
        message = body if isinstance(body, nng.OutgoingMessage) else nng.OutgoingMessage(b"", body)
        with message:
            aio.start(self._context, message)
        try:
            backoff: Backoff | None = None
            while aio.busy:
                if backoff is None:
                    backoff = Backoff()
                    self._owner.deferred_sends += 1
                await backoff.wait()
        except BaseException:
            aio.abandon()
            raise
        return aio.finish()

    def release(self) -> None:
        """Free the aio once the socket is closed (closing it finished any send still pending).

        A reply still polling its aio frees it itself when it wakes, so that it never polls a
        freed one.
        """
        if not self._sending:
            self._aio.free()
