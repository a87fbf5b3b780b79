"""What a request of any client needs before the wire classes exist: its id, how long to wait for
its reply, and how big that reply may be. Apart from ``calls`` (which re-exports them) so that
``early`` can send a request before attrs is imported."""

from __future__ import annotations

import itertools
import os

from containerd_actors.protocol.limits import MAX_MESSAGE_BYTES

#: How long a call waits for its reply before giving up; a start can queue behind --concurrency.
DEFAULT_TIMEOUT_S = 120.0
#: The largest reply a client accepts (a State of thousands of containers is several MiB).
MAX_REPLY_BYTES = MAX_MESSAGE_BYTES * 64


class RequestIds:
    """Request ids unique to this process and client: ``<pid>-<client>-<n>``."""

    def __init__(self, owner: object) -> None:
        self._prefix = f"{os.getpid()}-{id(owner):x}"
        self._numbers = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._numbers)}"
