"""The source daemon's connection to the destination daemon: the API, as a client, over mutual TLS.

The daemon may not import the client library (the import rules keep the daemon below it), so this
is the few lines of it a migration needs: a raw Req0 (``transport.request``) with this daemon's own
certificate as the client's, the codec, and the destination's refusals turned into ``PeerError``.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pynng
import trio

from containerd_actors import protocol as wire
from containerd_actors.protocol.migration import MigrationChunk
from containerd_actors.transport.request import ConnectionLost, RawRequestSocket
from containerd_actors.transport.tls import TlsFiles, is_tls

#: How long a dial (TCP connect and TLS handshake) may take.
DIAL_TIMEOUT_S = 10.0
#: A request other than the restore must be answered within this time.
REQUEST_TIMEOUT_S = 30.0


class PeerError(Exception):
    """The destination refused, could not be reached, or stopped answering; ``message`` says which.

    ``lost`` is true when the connection failed (the request may or may not have been served).
    """

    def __init__(self, message: str, code: str = wire.ErrorCode.RUNTIME_FAILED, lost: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.lost = lost


class Peer:
    """One connection to the destination daemon; requests may be in flight concurrently."""

    def __init__(self, address: str, socket: RawRequestSocket, tls: TlsFiles) -> None:
        self.address = address
        self.tls = tls
        self._socket = socket
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4).hex()

    @classmethod
    async def connect(cls, address: str, tls: TlsFiles | None) -> Peer:
        """Dial now (the TLS handshake included), so a bad certificate fails before any freeze; in a
        worker thread, so an address that does not answer never stalls this daemon."""
        if not is_tls(address):
            raise PeerError(f"the destination must be a tls+tcp:// address, got {address!r}")
        if tls is None:
            raise PeerError("this daemon has no TLS certificate (--tls-cert/--tls-key/--tls-ca) to dial with")
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                socket = await RawRequestSocket.dial_in_thread(address, wire.MAX_MESSAGE_BYTES, tls)
        except trio.TooSlowError:
            raise PeerError(
                f"cannot reach the destination {address}: no connection within {DIAL_TIMEOUT_S:g} s",
                lost=True,
            ) from None
        except pynng.NNGException as exc:
            raise PeerError(f"cannot reach the destination {address}: {exc}", lost=True) from None
        return cls(address, socket, tls)

    def close(self) -> None:
        self._socket.close()

    def next_request_id(self) -> str:
        return f"migrate-{self._prefix}-{next(self._ids)}"

    async def ask(self, request: Any, timeout: float = REQUEST_TIMEOUT_S) -> Any:
        return await self._exchange(wire.encode_request(request), timeout)

    async def send_chunk(self, chunk: MigrationChunk, data: bytes | memoryview) -> None:
        await self._exchange(wire.encode_framed_request(chunk, data), REQUEST_TIMEOUT_S)

    async def _exchange(self, body: bytes, timeout: float) -> Any:
        try:
            with trio.fail_after(timeout):
                raw = await self._socket.request(body)
        except trio.TooSlowError:
            raise PeerError(
                f"the destination {self.address} did not answer within {timeout:g} s", lost=True
            ) from None
        except (ConnectionLost, pynng.NNGException) as exc:
            raise PeerError(
                f"the connection to the destination {self.address} failed: {exc}", lost=True
            ) from None
        try:
            reply = wire.decode_reply(raw)
        except wire.ProtocolError as exc:
            raise PeerError(f"the destination {self.address} answered nonsense: {exc.message}") from None
        if isinstance(reply, wire.ErrorReply):
            raise PeerError(f"the destination {self.address} refused: {reply.message}", reply.code)
        return reply
