"""A command's slow request, sent before attrs and the wire classes are imported.

Why: ``actr containers exec`` waits ~20 ms for the daemon's ``runc exec``. A ``BlockingClient``
sends nothing until attrs and the wire classes are defined (~100M instructions, ~20 ms), so those
20 ms came before runc's, one after the other. ``send`` dials and sends with what needs neither
(``transport.blocking``, ``protocol.plain_requests``); the caller imports the rest while the daemon
works, then ``EarlyRequest.reply`` gives the reply and the ``BlockingClient`` that took it on the
same connection and carries the rest of the command.

Only the common case: an address without TLS and a request ``plain_requests`` is sure of.
Otherwise ``send`` returns None, and the caller goes the usual way (which gives the usual errors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from containerd_actors.client.basics import DEFAULT_TIMEOUT_S, MAX_REPLY_BYTES, RequestIds
from containerd_actors.protocol.addresses import is_tls, normalize_address
from containerd_actors.protocol.plain_requests import encode_fields
from containerd_actors.transport.blocking import BlockingRequestSocket, TransportError
from containerd_actors.transport.closing import ClosedOnExit

if TYPE_CHECKING:
    from containerd_actors.client.blocking import BlockingClient


class EarlyRequest(ClosedOnExit):
    """A request on its way on a connection of its own; closing it closes that connection."""

    def __init__(
        self, address: str, tag: str, socket: BlockingRequestSocket, ids: RequestIds, timeout: float
    ) -> None:
        self.address = address
        self._tag = tag
        self._socket = socket
        self._ids = ids
        self._timeout = timeout

    def reply(self) -> tuple[BlockingClient, Any]:
        """The request's reply (``<tag>Reply``; an ErrorReply raises ``RequestFailed``), and the
        client whose next requests go on the same connection, with ids that follow this one's.
        Imports the wire classes (best while the daemon works: after ``send``, before this)."""
        import containerd_actors.protocol as wire
        from containerd_actors.client.blocking import BlockingClient

        client = BlockingClient(self.address, self._socket, self._timeout, ids=self._ids)
        return client, client.receive(getattr(wire, f"{self._tag}Reply"))

    def close(self) -> None:
        self._socket.close()


def send(
    address: str, tag: str, fields: dict[str, Any], timeout: float = DEFAULT_TIMEOUT_S
) -> EarlyRequest | None:
    """Dial ``address`` and send request ``tag`` with ``fields`` (but ``request_id``; those left out
    take their defaults); None, having sent nothing, where that is not certain to be what
    ``BlockingClient`` sends.
    ``DaemonUnreachable`` as ``BlockingClient.connect`` and ``call`` raise it."""
    address = normalize_address(address)
    if is_tls(address):
        return None
    ids = RequestIds(object())
    payload = encode_fields(tag, {"request_id": ids.next(), **fields})
    if payload is None:
        return None
    try:
        socket = BlockingRequestSocket(address, recv_max_size=MAX_REPLY_BYTES)
    except TransportError as exc:
        from containerd_actors.client.errors import DaemonUnreachable, unreachable_reason

        raise DaemonUnreachable(address, unreachable_reason(str(exc), crypto=exc.crypto)) from None
    early = EarlyRequest(address, tag, socket, ids, timeout)
    try:
        socket.send(payload, timeout)
    except TransportError as exc:
        early.close()
        from containerd_actors.client.blocking import transport_failure

        raise transport_failure(address, exc, timeout) from None
    except BaseException:
        early.close()
        raise
    return early
