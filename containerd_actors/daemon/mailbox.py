"""Ask and tell between actors, and the snapshots an actor publishes.

An actor owns its state and a mailbox (a trio memory channel) and is the only code that touches
that state. Telling is sending a message. Asking is sending an ``Ask`` that carries the request and
a one-shot reply channel, then waiting on that channel; the answer is an ``Answer`` holding either
the value or the ``CommandError`` that replaced it, so an actor can refuse a request without its
own task failing.

The requests actors serve for clients are the wire's own request types (frozen attrs classes): an
``Ask`` carries them as they were decoded, so a request has one name from the socket to the actor
that serves it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs
import trio

T = TypeVar("T")
RequestT = TypeVar("RequestT")


@attrs.frozen
class Answer:
    """What travels back on a reply channel: a value, or the error that replaced it."""

    value: Any = None
    error: BaseException | None = None

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


ReplyTo = trio.MemorySendChannel[Answer]


@attrs.frozen
class Ask(Generic[RequestT]):
    """A request for an actor, and where its answer goes.

    ``by`` is who asked: the CN of a TLS client's certificate, None for a local client. It rides
    in the message, not in a context variable, because the actor that serves the request runs in
    its own task (a context variable set by the API worker would not reach it) and may serve it
    after a restart, from a queue handed over; the event the request causes then names its caller.
    """

    request: RequestT
    reply_to: ReplyTo
    by: str | None = None


class CommandError(Exception):
    """A request the daemon refuses, with the wire error code the client will see."""

    def __init__(self, code: str, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []


async def post(mailbox: trio.MemorySendChannel[Any], message: Any) -> None:
    """Send ``message``, giving up the turn only when the mailbox is full.

    ``await mailbox.send`` always ends with a scheduling pass, even when the message went in at
    once: a full trip through trio's run loop for nothing, several times per container start
    (about a tenth of the server's CPU per start went to such passes). The order of one sender's
    messages is the same either way; a full mailbox still holds the sender back.
    """
    try:
        mailbox.send_nowait(message)
    except trio.WouldBlock:
        await mailbox.send(message)


async def receive(mailbox: trio.MemoryReceiveChannel[T]) -> T:
    """The next message, giving up the turn only when none is waiting (then as ``receive`` does).

    For an actor's loop: messages that queued while it worked are taken in the same turn, not one
    scheduling pass each. Raises ``trio.EndOfChannel`` once the mailbox is closed and empty.
    """
    try:
        return mailbox.receive_nowait()
    except trio.WouldBlock:
        return await mailbox.receive()


async def ask(mailbox: trio.MemorySendChannel[Any], build: Callable[[ReplyTo], Any]) -> Any:
    """Send ``build(reply_to)`` and wait for the actor's answer; re-raises its CommandError."""
    # Not ``open_memory_channel[Answer]``: subscripting goes through typing's machinery at every
    # call (a few per cent of the server's CPU per start); the annotation says the same for free.
    reply_send: trio.MemorySendChannel[Answer]
    reply_receive: trio.MemoryReceiveChannel[Answer]
    reply_send, reply_receive = trio.open_memory_channel(1)
    try:
        await post(mailbox, build(reply_send))
        result = await reply_receive.receive()
    finally:
        reply_receive.close()  # not ``async with``: its aclose is one more scheduling pass
    return result.unwrap()


async def forward(mailbox: trio.MemorySendChannel[Any], request: Any, by: str | None = None) -> Any:
    """Ask the actor behind ``mailbox`` to serve a wire request (for client ``by``); returns its answer."""
    return await ask(mailbox, lambda reply_to: Ask(request, reply_to, by))


def answer(reply_to: ReplyTo, value: Any) -> None:
    """Reply once; a caller that gave up (cancelled) has closed its end, which is fine."""
    try:
        reply_to.send_nowait(Answer(value))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def fail(reply_to: ReplyTo, error: BaseException) -> None:
    try:
        reply_to.send_nowait(Answer(error=error))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def refuse_queued(mailbox: trio.MemoryReceiveChannel[Any], error: CommandError) -> None:
    """Answer every ask still queued with ``error``, then close the mailbox.

    For an actor that has stopped: requests that raced with its end get an answer instead of
    waiting forever. Nothing awaits between the last receive and the close, so nothing slips in;
    later senders see BrokenResourceError.
    """
    while True:
        try:
            message = mailbox.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        if isinstance(message, Ask):
            fail(message.reply_to, error)
    mailbox.close()


class Published(Generic[T]):
    """The latest snapshot of one actor's state, for others to read without a round trip.

    Only the owning actor calls ``publish``, and it replaces the value whole; values are frozen
    (immutable) attrs instances, so a reader holds the old snapshot or the new one, never a mix of
    both. The daemon runs in one trio thread, so no lock is needed.
    """

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    @property
    def current(self) -> T:
        return self._value

    def publish(self, value: T) -> None:
        self._value = value
