"""A blocking request socket for one-shot clients: one request at a time, no trio, no asyncio.

Why a second request socket: ``actr containers`` sends one request and prints the reply; under
trio (``request.RawRequestSocket``) it would first import trio and pynng's asyncio support, about
twice what the whole command may take. This one calls nng's blocking API directly.

Why cooked Req0 here, when the async client uses raw mode: with one request at a time, nng's own
request tracking is all that is needed, and with resending disabled (``req:resend-time`` 0) nng
never sends a request twice and fails a request whose connection closed with ``NNG_ECONNRESET``
(a raw socket would instead wait out the whole timeout, as it learns of no pipe events).

Why no blocking nng call, and no thread: a blocking nng call cannot be interrupted by a signal,
so Ctrl-C would wait for the reply. Instead the send and the receive are non-blocking, and while
either would block this thread waits in ``select`` on the socket's own descriptors (nng's
``send-fd`` and ``recv-fd``, readable when the socket can send or has a reply, or its request
failed): a signal interrupts ``select`` and its handler's exception (KeyboardInterrupt, attach's
SIGTERM) comes out of ``request`` at once. A thread per request did the same at the cost of
starting one.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from containerd_actors.protocol.addresses import host_of, is_tls
from containerd_actors.transport import memory
from containerd_actors.transport.bindings import ffi, lib
from containerd_actors.transport.bodies import VIEW_FROM_BYTES, body_of
from containerd_actors.transport.closing import ClosedOnExit

if TYPE_CHECKING:  # not at run time: a socket of an ipc:// address needs no attrs (``client.early``)
    from containerd_actors.transport.tls import TlsFiles

_RECV_FD = b"recv-fd"
_SEND_FD = b"send-fd"
_RECV_MAX_SIZE = b"recv-size-max"
_RESEND_TIME = b"req:resend-time"
#: The longest ``select`` between two tries: a request that failed (its connection closed) does
#: not make ``recv-fd`` readable, only the next try says so (``NNG_ECONNRESET``).
_POLL_S = 0.05


class TransportError(Exception):
    """An nng call failed; ``code`` is nng's error number, the message nng's own words for it."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message or ffi.string(lib.nng_strerror(code)).decode())
        self.code = code

    @property
    def timed_out(self) -> bool:
        return self.code == lib.NNG_ETIMEDOUT

    @property
    def crypto(self) -> bool:
        """A TLS handshake that failed (a certificate the other side did not accept)."""
        return self.code == lib.NNG_ECRYPTO

    @property
    def connection_lost(self) -> bool:
        return self.code in (lib.NNG_ECONNRESET, lib.NNG_ECONNSHUT)


def _check(status: int) -> None:
    if status != 0:
        raise TransportError(status)


class BlockingRequestSocket(ClosedOnExit):
    """A dialled Req0; ``request(body, timeout)`` sends and returns the reply, one at a time.

    Dialling is synchronous, so a daemon that is not there fails at once (``TransportError``
    with nng's "Connection refused" or "Entry not found"), not at the first request. A cooked
    Req0 holds one request: a second one sent meanwhile would cancel the first, so a second
    concurrent ``request`` raises instead (a thread that needs its own requests opens its own
    socket).
    """

    def __init__(self, address: str, recv_max_size: int, tls: TlsFiles | None = None) -> None:
        """``tls`` is required for a ``tls+tcp://`` address (see ``request.RawRequestSocket``)."""
        self._socket = ffi.new("nng_socket *")
        _check(lib.nng_req0_open(self._socket))
        self._open = True
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        self._fds: dict[bytes, int] = {}
        try:
            _check(lib.nng_socket_set_ms(self._socket[0], _RESEND_TIME, 0))
            _check(lib.nng_socket_set_size(self._socket[0], _RECV_MAX_SIZE, recv_max_size))
            if is_tls(address):
                if tls is None:
                    raise ValueError(f"{address} needs a client certificate, key and CA")
                self._dial_tls(address, tls)
            else:
                _check(lib.nng_dial(self._socket[0], address.encode(), ffi.NULL, 0))
        except BaseException:
            self.close()
            raise

    def _dial_tls(self, address: str, tls: TlsFiles) -> None:
        """Dial with mutual TLS: nng's own TLS configuration, built here without pynng's package."""
        cert, key, ca = tls.pem()
        config = ffi.new("nng_tls_config **")
        _check(lib.nng_tls_config_alloc(config, lib.NNG_TLS_MODE_CLIENT))
        try:
            _check(lib.nng_tls_config_auth_mode(config[0], lib.NNG_TLS_AUTH_MODE_REQUIRED))
            _check(lib.nng_tls_config_ca_chain(config[0], ca.encode(), ffi.NULL))
            _check(lib.nng_tls_config_own_cert(config[0], cert.encode(), key.encode(), ffi.NULL))
            _check(lib.nng_tls_config_server_name(config[0], host_of(address).encode()))
            dialer = ffi.new("nng_dialer *")
            _check(lib.nng_dialer_create(dialer, self._socket[0], address.encode()))
            _check(lib.nng_dialer_set_ptr(dialer[0], b"tls-config", config[0]))
            _check(lib.nng_dialer_start(dialer[0], 0))
        finally:
            lib.nng_tls_config_free(config[0])  # the dialer holds its own reference

    def request(
        self, body: bytes, timeout: float, meanwhile: Callable[[], object] | None = None
    ) -> bytes | memoryview:
        """Send ``body``; return the reply, or raise ``TransportError`` (timed out, connection lost).
        A big binary frame comes back as a view of nng's message (``bodies.body_of``), not copied.

        ``meanwhile`` is called once the request is sent, before waiting for its reply: work that a
        caller needs after the reply is done while the daemon works (``exec -a`` prepares its attach
        while runc execs, ~20 ms), instead of after it."""
        deadline = time.monotonic() + timeout
        self._send(body, deadline)
        if meanwhile is not None:
            try:
                meanwhile()
            except BaseException:
                self._busy.release()  # the reply is never taken: the socket must not stay busy
                raise
        return self._receive(deadline)

    def send(self, body: bytes, timeout: float) -> None:
        """The first half of ``request``: the request is on its way once this returns, and its
        reply is ``receive``'s. A writer with several sockets keeps as many requests in flight."""
        self._send(body, time.monotonic() + timeout)

    def receive(self, timeout: float) -> bytes | memoryview:
        """The reply to what ``send`` sent (the second half of ``request``)."""
        return self._receive(time.monotonic() + timeout)

    def _send(self, body: bytes, deadline: float) -> None:
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("a BlockingRequestSocket carries one request at a time")
        try:
            if len(body) >= VIEW_FROM_BYTES:
                memory.once()  # a stream of big frames (stdin): reuse freed buffers (see ``memory``)
            socket = self._handle()
            while (status := lib.nng_send(socket, body, len(body), lib.NNG_FLAG_NONBLOCK)) == lib.NNG_EAGAIN:
                self._wait(_SEND_FD, deadline)
            _check(status)
        except BaseException:
            self._busy.release()
            raise

    def _receive(self, deadline: float) -> bytes | memoryview:
        if self._busy.acquire(blocking=False):
            self._busy.release()
            raise RuntimeError("receive without a request sent")
        try:
            socket = self._handle()
            slot = ffi.new("nng_msg **")
            while (status := lib.nng_recvmsg(socket, slot, lib.NNG_FLAG_NONBLOCK)) == lib.NNG_EAGAIN:
                self._wait(_RECV_FD, deadline)
            _check(status)
            owned = False
            try:
                body, owned = body_of(slot[0])
                return body
            finally:
                if not owned:
                    lib.nng_msg_free(slot[0])
        finally:
            self._busy.release()

    def _handle(self) -> int:
        with self._lock:
            if not self._open:
                raise TransportError(lib.NNG_ECLOSED)
            return self._socket[0]

    def _wait(self, which: bytes, deadline: float) -> None:
        """Until the socket's ``which`` descriptor is readable, or raise ``NNG_ETIMEDOUT`` at
        ``deadline``; a signal's handler raises out of here (``select`` returns to Python)."""
        fd = self._fds.get(which)
        if fd is None:
            value = ffi.new("int *")
            _check(lib.nng_socket_get_int(self._socket[0], which, value))
            fd = self._fds[which] = value[0]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransportError(lib.NNG_ETIMEDOUT)
        select.select([fd], [], [], min(remaining, _POLL_S))

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                lib.nng_close(self._socket[0])
