"""The pace of retries against a busy nng pipe, and of wake-ups that found nothing to take.

A pipe is busy while nng writes one message, which takes microseconds, so the first retry is a
bare trip through trio's scheduler; after that the wait starts at 0.1 ms and doubles up to 10 ms,
so that a pipe that stays busy (a peer that stopped reading) costs no more than 100 wake-ups a
second.
"""

from __future__ import annotations

import trio

FIRST_RETRY_S = 0.0001
LAST_RETRY_S = 0.01


class Backoff:
    """Waits before each retry: 0 s, then 0.1 ms doubling to 10 ms."""

    __slots__ = ("_delay",)

    def __init__(self) -> None:
        self._delay = 0.0

    async def wait(self) -> None:
        await trio.sleep(self._delay)
        self._delay = min(max(self._delay * 2, FIRST_RETRY_S), LAST_RETRY_S)
