"""What the codec and the client's plain codec share without cattrs: the error, the tag, the limit.

``codec`` (cattrs) and ``plain_codec`` (generated functions, for one-shot clients) must raise the
same ``ProtocolError`` class and agree on the tag and the size limit; they live here so that the
one-shot path can name them without importing cattrs.
"""

from __future__ import annotations

import sys
from typing import Any

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
import attrs

from containerd_actors.protocol.limits import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES  # noqa: F401
from containerd_actors.protocol.replies import ErrorReply

TAG = "type"
LOGGER_NAME = "containerd_actors.protocol.codec"


class ProtocolError(Exception):
    """A message that cannot be decoded; carries what the error reply needs."""

    def __init__(
        self, code: str, message: str, details: list[str] | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []
        self.request_id = request_id

    def to_reply(self) -> ErrorReply:
        return ErrorReply(self.request_id, self.code, self.message, self.details)


def note_unknown_fields(obj: dict[str, Any], cls: type) -> None:
    """A tolerant reader says at debug level what it ignored: the daemon is newer than it.

    Only where logging is in use: a program that never imported it (a one-shot ``actr``) has no
    handler to hear it, and importing logging would cost it ~3 ms.
    """
    logging = sys.modules.get("logging")
    if logging is None:
        return
    log = logging.getLogger(LOGGER_NAME)
    if log.isEnabledFor(logging.DEBUG):
        unknown = sorted(set(obj) - {TAG, *(f.name for f in attrs.fields(cls))})
        if unknown:
            log.debug("%s carries fields this reader does not know, ignored: %s", cls.__name__, unknown)
