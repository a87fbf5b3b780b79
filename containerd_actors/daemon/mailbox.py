"""Ask and tell between actors.

An actor owns its state and a mailbox (a trio memory channel). Asking means sending a message
that carries a one-shot reply channel and waiting on it; the answer is an ``outcome`` so that an
actor can hand back a ``CommandError`` without its own task failing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

ReplyTo = trio.MemorySendChannel[outcome.Outcome[Any]]


class CommandError(Exception):
    """A request the daemon refuses, with the wire error code the client will see."""

    def __init__(self, code: str, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []


async def ask(mailbox: trio.MemorySendChannel[Any], build: Callable[[ReplyTo], Any]) -> Any:
    """Send ``build(reply_to)`` and wait for the actor's answer; re-raises its CommandError."""
    reply_send, reply_receive = trio.open_memory_channel[outcome.Outcome[Any]](1)
    await mailbox.send(build(reply_send))
    async with reply_receive:
        result = await reply_receive.receive()
    return result.unwrap()


def answer(reply_to: ReplyTo, value: Any) -> None:
    """Reply once; a caller that gave up (cancelled) has closed its end, which is fine."""
    try:
        reply_to.send_nowait(outcome.Value(value))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def fail(reply_to: ReplyTo, error: BaseException) -> None:
    try:
        reply_to.send_nowait(outcome.Error(error))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
