"""Every call into pynng's private ``lib``/``ffi``, with one owner for each nng message and aio.

Why this module exists: a mistake with nng's raw pointers is not an exception but a crash of the
whole process. A message freed twice, or an aio freed while nng still completes it, is a segfault of
the API server. So no pointer leaves this module bare: each is held by one small object that knows
whether it still owns it, and a use after its owner gave it away raises ``OwnershipError`` instead
of touching freed memory.

- ``OutgoingMessage`` owns a message from its allocation until nng accepts it (a send that
  succeeded) or until it is closed, which frees it then, exactly once.
- ``Inbox`` is where nng puts a received message. Taking it copies header and body out and frees
  it at once, so a received message never outlives the call that received it; except the body of
  a big binary frame (stdin, output, a checkpoint's chunk: a MiB each), which is handed out as a
  read-only view that owns the message (``owned_body``): nng frees it exactly once, when the last
  view of it is gone, and nothing else can free it. Copying it would cost a MiB of memmove per MiB.
- ``SendAio`` owns one callback-less aio. Freeing it first cancels and waits for whatever nng still
  does with it, and takes back the message of a send that did not complete.

Error codes become pynng's exceptions (``pynng.Closed``, ``pynng.Timeout``, ...), except
``NNG_EAGAIN``, which every non-blocking call here reports as "nothing yet" (None or False).
"""

from __future__ import annotations

from typing import Any

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
import attrs
import pynng
from pynng import ffi, lib

from containerd_actors.transport.bodies import body_of
from containerd_actors.transport.closing import ClosedOnExit
from containerd_actors.transport.version import check_nng_version, installed_nng_version

check_nng_version(installed_nng_version())

#: nng's NNG_DURATION_INFINITE (pynng does not export it).
INFINITE_MS = -1


class OwnershipError(RuntimeError):
    """An nng message or aio was used after its owner handed it to nng or freed it."""


@attrs.frozen
class RawMessage:
    """A received message's routing header (on the client: the request id) and its body."""

    header: bytes
    #: A view (of the message itself, see ``owned_body``) for a binary frame of ``VIEW_FROM_BYTES`` or more.
    body: bytes | memoryview
    #: The common name of the sender's TLS certificate; None over ipc and plain tcp; ``UNKNOWN_PEER``
    #: when its pipe closed before the name could be read (treat it as the least trusted caller).
    peer: str | None = None
    #: The id of the pipe it came on (0 unless peer names were asked for, which a socket with any
    #: tcp listener does): ``pipe_local_address`` tells which of several listeners the sender
    #: dialed, ``pipe_is_local`` whether it is on this host.
    pipe: int = 0


#: The peer of a message whose pipe was gone before its certificate could be read: not a name any
#: certificate can carry (a CN is never empty here), so no ``--read-only-client`` list can match it.
UNKNOWN_PEER = ""


def closed_error() -> pynng.Closed:
    """What pynng raises for an operation on a closed socket, for the same case detected here."""
    return pynng.Closed("socket closed", lib.NNG_ECLOSED)


def _accepted(status: int) -> bool:
    """True for success, False for ``NNG_EAGAIN``; any other status raises pynng's exception."""
    if status == 0:
        return True
    if status != lib.NNG_EAGAIN:
        pynng.exceptions.check_err(status)
    return False


def open_raw_req0(recv_max_size: int) -> pynng.Req0:
    """A Req0 in raw mode: no request tracking or resending; the header carries the request id."""
    return pynng.Req0(opener=lib.nng_req0_open_raw, recv_max_size=recv_max_size)


class OutgoingMessage(ClosedOnExit):
    """An nng message this side allocated, owned until nng accepts it; ``close`` frees it otherwise.

    Use it as a context manager around the attempts to send it: leaving the block frees the message
    unless a send handed it over, so neither a failed send nor a cancelled retry leaks it, and a
    message that nng took is never freed here.
    """

    __slots__ = ("_pointer",)

    def __init__(self, header: bytes, body: bytes | bytearray | memoryview) -> None:
        """``body`` may be any buffer (a binary frame assembled in a bytearray): nng copies it once."""
        if not isinstance(body, bytes):
            body = ffi.from_buffer(body)
        slot = ffi.new("nng_msg **")
        pynng.exceptions.check_err(lib.nng_msg_alloc(slot, 0))
        self._pointer: Any = slot[0]
        try:
            pynng.exceptions.check_err(lib.nng_msg_header_append(self._pointer, header, len(header)))
            pynng.exceptions.check_err(lib.nng_msg_append(self._pointer, body, len(body)))
        except BaseException:
            self.close()
            raise

    @classmethod
    def of_size(cls, size: int) -> OutgoingMessage:
        """A message with a ``size``-byte body to fill in place (``body``): a sender that reads its
        bytes straight into it (a log read into a binary frame) saves a copy of every byte."""
        message = cls(b"", b"")
        try:
            pynng.exceptions.check_err(lib.nng_msg_realloc(message._pointer, size))
        except BaseException:
            message.close()
            raise
        return message

    def body(self) -> memoryview:
        """The body as a writable view: valid while this side owns the message, never after."""
        pointer = self._handle()
        return memoryview(ffi.buffer(lib.nng_msg_body(pointer), lib.nng_msg_len(pointer)))

    @property
    def owned(self) -> bool:
        return self._pointer != ffi.NULL

    def _handle(self) -> Any:
        if self._pointer == ffi.NULL:
            raise OwnershipError("this message was already handed to nng or freed")
        return self._pointer

    def _hand_over(self) -> None:
        """nng (a socket or an aio) owns the message now: this side must never free or read it."""
        self._pointer = ffi.NULL

    def close(self) -> None:
        """Free the message if this side still owns it; a second call does nothing."""
        if self._pointer != ffi.NULL:
            pointer, self._pointer = self._pointer, ffi.NULL
            lib.nng_msg_free(pointer)


def send(socket: pynng.Socket, message: OutgoingMessage, *, block: bool = False) -> bool:
    """Hand ``message`` to ``socket``; False, with the message still ours, while its pipe is busy.

    A failed ``nng_sendmsg`` leaves the message with the caller, so only success hands it over.
    """
    flags = 0 if block else lib.NNG_FLAG_NONBLOCK
    if _accepted(lib.nng_sendmsg(socket.socket, message._handle(), flags)):
        message._hand_over()
        return True
    return False


class Context:
    """An nng context of a cooked socket: it holds one request at a time and sends its reply.

    Not pynng's own ``Context``, whose ``arecv``/``asend`` complete on nng threads; the contexts
    are closed by nng when their socket closes, so this side never closes them itself.
    """

    __slots__ = ("_handle",)

    def __init__(self, socket: pynng.Socket) -> None:
        self._handle: Any = ffi.new("nng_ctx *")
        pynng.exceptions.check_err(lib.nng_ctx_open(self._handle, socket.socket))


class Inbox:
    """The slot nng receives into; every message taken out of it is copied and freed at once."""

    __slots__ = ("_peer_names", "_slot")

    def __init__(self, *, peer_names: bool = False) -> None:
        """With ``peer_names``, each message carries its sender's certificate CN (a socket with a
        TLS listener asks for it; the others skip the two calls per message)."""
        self._slot: Any = ffi.new("nng_msg **")
        self._peer_names = peer_names

    def receive(self, socket: pynng.Socket) -> RawMessage | None:
        """The socket's next message without waiting, or None when none is there."""
        return self._take(lib.nng_recvmsg(socket.socket, self._slot, lib.NNG_FLAG_NONBLOCK))

    def receive_on(self, context: Context) -> RawMessage | None:
        """The context's next request without waiting, or None when none is there."""
        return self._take(lib.nng_ctx_recvmsg(context._handle[0], self._slot, lib.NNG_FLAG_NONBLOCK))

    def _take(self, status: int) -> RawMessage | None:
        if not _accepted(status):
            return None
        message, self._slot[0] = self._slot[0], ffi.NULL
        owned = False
        try:
            header = bytes(ffi.buffer(lib.nng_msg_header(message), lib.nng_msg_header_len(message)))
            if self._peer_names:
                peer = _peer_common_name(message)
                pipe = lib.nng_pipe_id(lib.nng_msg_get_pipe(message))
            else:
                peer, pipe = None, 0
            body, owned = body_of(message)
        finally:
            if not owned:
                lib.nng_msg_free(message)
        return RawMessage(header, body, peer, pipe)


def _peer_common_name(message: Any) -> str | None:
    """The CN of the certificate the message's pipe was authenticated with, if it came over TLS.

    nng answers NNG_ENOTSUP for pipes of other transports (ipc, plain tcp): no TLS identity. Any
    other failure (the pipe already gone when its peer hung up right after sending) must not pass
    for a local caller, so it gives ``UNKNOWN_PEER``.
    """
    pipe = lib.nng_msg_get_pipe(message)
    slot = ffi.new("char **")
    status = lib.nng_pipe_get_string(pipe, b"tls-peer-cn", slot)
    if status == lib.NNG_ENOTSUP:
        return None
    if status != 0:
        return UNKNOWN_PEER
    try:
        return ffi.string(slot[0]).decode(errors="replace")
    finally:
        lib.nng_strfree(slot[0])


def pipe_is_local(pipe_id: int) -> bool:
    """Whether the pipe is an ipc:// (or inproc://) connection, whose peer runs on this host (a
    client there may open files the daemon names, ``OpenStdin``). False for tcp and tls+tcp, and
    for a pipe that is gone."""
    pipe = ffi.new("nng_pipe *")
    pipe[0].id = pipe_id
    address = ffi.new("nng_sockaddr *")
    if lib.nng_pipe_get_addr(pipe[0], b"local-address", address) != 0:
        return False
    return int(address[0].s_family) in (lib.NNG_AF_IPC, lib.NNG_AF_INPROC)


def pipe_local_address(pipe_id: int) -> str | None:
    """``HOST:PORT`` of this side of a tcp or tls+tcp pipe (``[HOST]:PORT`` for IPv6): the
    address its peer dialed. None for another transport, or a pipe that is gone."""
    from pynng.sockaddr import In6Addr, InAddr, _nng_sockaddr

    pipe = ffi.new("nng_pipe *")
    pipe[0].id = pipe_id
    address = ffi.new("nng_sockaddr *")
    if lib.nng_pipe_get_addr(pipe[0], b"local-address", address) != 0:
        return None
    found = _nng_sockaddr(address)
    return str(found) if isinstance(found, InAddr | In6Addr) else None


class SendAio:
    """One callback-less aio that sends on a context; its owner frees it once nng is done with it.

    Without a callback, nng finishes a send to a free pipe inside ``nng_ctx_send`` (no thread, no
    GIL); a send to a busy pipe stays pending in nng, and its owner polls ``busy``.
    """

    __slots__ = ("_aio",)

    def __init__(self, timeout_ms: int) -> None:
        slot = ffi.new("nng_aio **")
        pynng.exceptions.check_err(lib.nng_aio_alloc(slot, ffi.NULL, ffi.NULL))
        self._aio: Any = slot[0]
        lib.nng_aio_set_timeout(self._aio, timeout_ms)

    def _handle(self) -> Any:
        if self._aio == ffi.NULL:
            raise OwnershipError("this aio was already freed")
        return self._aio

    def start(self, context: Context, message: OutgoingMessage) -> None:
        """Send ``message`` on ``context``: the aio holds it from here until ``finish`` or ``free``."""
        aio = self._handle()
        lib.nng_aio_set_msg(aio, message._handle())
        message._hand_over()
        lib.nng_ctx_send(context._handle[0], aio)

    @property
    def busy(self) -> bool:
        return bool(lib.nng_aio_busy(self._handle()))

    def finish(self) -> bool:
        """True once the send completed; False when it timed out; any other failure raises.

        A send that completed took its message off the aio; a failed or timed-out one left it there,
        and it is freed here. While nng still holds the send, its result and message are nng's.
        """
        aio = self._handle()
        if lib.nng_aio_busy(aio):
            raise OwnershipError("the send is still pending in nng: wait until it is not busy, or abandon it")
        status: int = lib.nng_aio_result(aio)
        self._free_unsent(aio)
        if status == lib.NNG_ETIMEDOUT:
            return False
        pynng.exceptions.check_err(status)
        return True

    def abandon(self) -> None:
        """Stop a pending send (it completes inline before this returns) and free its message."""
        aio = self._handle()
        lib.nng_aio_cancel(aio)
        lib.nng_aio_wait(aio)
        self._free_unsent(aio)

    def free(self) -> None:
        """Stop what nng still does with the aio, then free it; a second call does nothing."""
        if self._aio == ffi.NULL:
            return
        self.abandon()
        aio, self._aio = self._aio, ffi.NULL
        lib.nng_aio_free(aio)

    @staticmethod
    def _free_unsent(aio: Any) -> None:
        message = lib.nng_aio_get_msg(aio)
        if message != ffi.NULL:
            lib.nng_aio_set_msg(aio, ffi.NULL)
            lib.nng_msg_free(message)
