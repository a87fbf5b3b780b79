"""A process's stdin written with several WriteInputs in flight, over as many connections.

Why: one WriteInput at a time made every MiB of stdin wait a whole round trip (the client sends,
the daemon writes it to the pipe and answers) before the next MiB could leave, so the client and
the daemon took turns instead of working at once. From protocol revision 6 a writer names itself
(``writer``) and says where each request starts in its stream (``offset``); the daemon then
writes every byte once and in order whatever order the requests arrive in, so the next request
can be on its way (on another connection: a cooked Req0 carries one) while the daemon writes the
last. See ``WriteInput`` and the daemon's ``StdinPort``.

What a reply says is settled oldest first: a short ``written`` (the process stopped reading for
a while, or the request waited for a gap that did not fill) is resent from ``offset + written``
on the same connection before anything else is sent there; bytes that reach the daemon twice are
written once. The EOF goes last, once every byte before it is acknowledged.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence

import containerd_actors.protocol as wire
from containerd_actors.client.blocking import BlockingClient

#: The protocol revision from which WriteInput takes ``writer`` and ``offset``.
ORDERED_INPUT_SINCE = 6
#: stdin bytes per ordered WriteInput: a daemon of revision 6 takes frames of ``MAX_FRAME_BYTES``,
#: and a request's own cost in the daemon is about that of a MiB of bytes, so 4 MiB rather than 1.
ORDERED_CHUNK_BYTES = wire.MAX_FRAME_BYTES - (64 << 10)
#: Requests in flight (one per connection): two keep the daemon's pipe write and the client's
#: next read and send overlapping; more only hold more MiB in memory.
IN_FLIGHT = 2


def speaks_ordered_input(client: BlockingClient) -> bool:
    """Whether the daemon takes ordered writes (a Ping, unless the client asked one already)."""
    return client.ping().protocol_version >= ORDERED_INPUT_SINCE


class OrderedInput:
    """Write ``data`` in order to process ``pid`` of ``id`` through ``clients``, one request in
    flight on each; ``close`` sends the EOF after everything. Each ``write`` carries at most
    ``ORDERED_CHUNK_BYTES``."""

    def __init__(self, clients: Sequence[BlockingClient], id: str, pid: int) -> None:
        self._id = id
        self._pid = pid
        # os.urandom as secrets.token_hex takes it: importing secrets (hmac, OpenSSL's hashlib,
        # random) was ~4 ms of every ``exec -a``, which imports this module to attach.
        self._writer = f"{os.getpid()}-{os.urandom(6).hex()}"
        self._free = deque(clients)
        #: (client, offset, data) of each request in flight, oldest first.
        self._flying: deque[tuple[BlockingClient, int, bytes | memoryview]] = deque()
        self._offset = 0

    def write(self, data: bytes | memoryview) -> None:
        if not data:
            return
        if not self._free:
            self._settle_oldest()
        client = self._free.popleft()
        # In flight from before it is sent: if the send fails, it may still have gone (``in_flight``).
        self._flying.append((client, self._offset, data))
        self._offset += len(data)
        self._send(client, self._offset - len(data), data)

    @property
    def offset(self) -> int:
        """Bytes taken by ``write`` so far (sent, or in the middle of being sent)."""
        return self._offset

    @property
    def in_flight(self) -> int:
        """Bytes sent and not yet acknowledged (after a lost connection: maybe written, maybe not)."""
        return sum(len(data) for _, _, data in self._flying)

    def close(self) -> None:
        """Every byte written, then the process's stdin closed (EOF)."""
        self.flush()
        client = self._free[0]
        self._send(client, self._offset, b"", close=True)
        client.receive(wire.WriteInputReply)

    def flush(self) -> None:
        """Until every byte sent so far is written."""
        while self._flying:
            self._settle_oldest()

    def _send(
        self, client: BlockingClient, offset: int, data: bytes | memoryview, close: bool = False
    ) -> None:
        client.send(
            wire.WriteInput,
            framed=True,
            id=self._id,
            pid=self._pid,
            data=data,
            close=close,
            writer=self._writer,
            offset=offset,
        )

    def _settle_oldest(self) -> None:
        """The oldest request's reply; what it did not write is resent on its connection."""
        client, offset, data = self._flying[0]
        written = client.receive(wire.WriteInputReply).written
        while written < len(data):
            rest = memoryview(data)[written:]
            self._flying[0] = (client, offset + written, rest)  # what is still in flight
            self._send(client, offset + written, rest)
            written += client.receive(wire.WriteInputReply).written
        self._flying.popleft()
        self._free.append(client)
