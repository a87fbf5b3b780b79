"""What every request of a client goes through, whichever socket carries it: ids, encoding, checks.

``Client`` (trio) and ``BlockingClient`` (one request at a time, no trio) differ only in how the
bytes travel; a request is built and its reply judged here, once, so that both raise the same
errors for the same replies.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, TypeVar

import attrs

import containerd_actors.protocol as wire
from containerd_actors.client.errors import ClientError, RequestFailed

#: How long a call waits for its reply before giving up; a start can queue behind --concurrency.
DEFAULT_TIMEOUT_S = 120.0
#: The largest reply a client accepts (a State of thousands of containers is several MiB).
MAX_REPLY_BYTES = wire.MAX_MESSAGE_BYTES * 64
#: How long one ReadOutput of a follow waits for output before asking again.
FOLLOW_WAIT_S = 10.0
#: A follow whose long poll came back empty without waiting (the daemon had too many) waits this long.
FOLLOW_BACKOFF_S = 0.1
#: stdin bytes per WriteInput: base64 makes them 4/3 bigger, well under the daemon's 1 MiB limit.
INPUT_CHUNK_BYTES = 256 << 10

_Reply = TypeVar("_Reply")


@attrs.frozen
class OutputRead:
    """The decoded output of one ReadOutput; ``exited`` marks the last, with the exit ``status``."""

    stdout: bytes
    stderr: bytes
    skipped: int = 0
    exited: bool = False
    status: int | None = None
    terminal: bool = False


class RequestIds:
    """Request ids unique to this process and client: ``<pid>-<client>-<n>``."""

    def __init__(self, owner: object) -> None:
        self._prefix = f"{os.getpid()}-{id(owner):x}"
        self._numbers = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._numbers)}"


def encode(request_type: type, request_id: str, fields: dict[str, Any]) -> bytes:
    """Build the request (its validators run here, so a bad field fails before sending) and encode it."""
    return wire.encode_request(request_type(request_id=request_id, **fields))


def decode(raw: bytes, reply_type: type[_Reply]) -> _Reply:
    """The typed reply; an ErrorReply raises ``RequestFailed``, anything else unexpected ``ClientError``."""
    try:
        reply = wire.decode_reply(raw)
    except wire.ProtocolError as exc:
        raise ClientError(f"undecodable reply from daemon: {exc.message}") from None
    if isinstance(reply, wire.ErrorReply):
        raise RequestFailed(reply)
    if not isinstance(reply, reply_type):
        raise ClientError(f"expected {reply_type.__name__}, got {type(reply).__name__}")
    return reply
