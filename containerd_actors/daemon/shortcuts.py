"""Who sent a request, and the handlers that reach a container without the supervisor's hop.

Most requests for a container go API worker -> supervisor -> the container's actor. The ones on
an attached client's hot path (an exec, stdin, a resize, opening the stdin pipe) go straight to
where ``ProcessRoutes`` says the container's actor or stdin port lives, and fall back to the
supervisor for every case the routes do not hold, so their answers are the supervisor's in all
other cases. Apart from ``api`` so that the server module keeps to serving and dispatching.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from containerd_actors import protocol as wire
from containerd_actors.daemon.container.routes import ProcessRoutes
from containerd_actors.daemon.container.stdin import open_stdin_reply
from containerd_actors.daemon.mailbox import Answer, Ask, CommandError, forward
from containerd_actors.daemon.ready_replies import Encoded, Framed
from containerd_actors.daemon.supervisor.messages import SupervisorMailbox
from containerd_actors.transport.nng import pipe_is_local


@attrs.frozen
class Caller:
    """Who sent a request: the CN of a TLS client's certificate (None for a local client), and the
    pipe it came on (0 when unknown), which tells the listener it dialed."""

    by: str | None = None
    pipe: int = 0

    @property
    def on_this_host(self) -> bool:
        """Whether the caller dialed the ipc:// socket: only then can it open a file the daemon
        names (OpenStdin's pipe, ReadOutput.spans' logs); a TLS or plain-tcp caller cannot."""
        return self.by is None and not (self.pipe and not pipe_is_local(self.pipe))


LOCAL_CALLER = Caller()


#: Serves a request for a caller.
Handler = Callable[[Any, Caller], Awaitable[wire.Reply | Framed | Encoded]]
#: Makes the wire reply of a request from what its actor answered.
ReplyMaker = Callable[[Any, Any], wire.Reply]


def to_actor(routes: ProcessRoutes | None, supervisor: SupervisorMailbox, reply: ReplyMaker) -> Handler:
    """A request for a container's actor: into the mailbox of the living actor the routes
    name (``ProcessRoutes.actor``), else (no actor there yet or any more, a full or closed
    mailbox) through the supervisor, which gives every answer it gave before."""

    async def handler(request: Any, caller: Caller) -> wire.Reply:
        mailbox = None if routes is None else routes.actor(request.id)
        if isinstance(mailbox, trio.MemorySendChannel):
            reply_send: trio.MemorySendChannel[Answer]
            reply_receive: trio.MemoryReceiveChannel[Answer]
            reply_send, reply_receive = trio.open_memory_channel(1)
            try:
                try:
                    mailbox.send_nowait(Ask(request, reply_send, caller.by))
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                else:
                    return reply(request, (await reply_receive.receive()).unwrap())
            finally:
                reply_receive.close()
        return reply(request, await forward(supervisor, request, caller.by))

    return handler


def to_stdin(routes: ProcessRoutes | None, supervisor: SupervisorMailbox, reply: ReplyMaker) -> Handler:
    """A WriteInput or ResizeTerminal: straight to its process's open stdin port when the
    supervisor's routes hold it (``container.routes``), else through the supervisor."""

    async def handler(request: Any, caller: Caller) -> wire.Reply:
        if routes is not None:
            reply_send, reply_receive = trio.open_memory_channel[Answer](1)
            try:
                if routes.offer(Ask(request, reply_send, caller.by)):
                    return reply(request, (await reply_receive.receive()).unwrap())
            finally:
                reply_receive.close()
        return reply(request, await forward(supervisor, request, caller.by))

    return handler


async def open_stdin(
    routes: ProcessRoutes | None, supervisor: SupervisorMailbox, request: wire.OpenStdin, caller: Caller
) -> wire.Reply:
    """Where a local client opens the process's stdin pipe (``OpenStdin``).

    Answered here from the open port that ``ProcessRoutes`` holds, as a WriteInput is handed
    to it: naming the fd needs neither the actor nor the port's task, so the common case
    costs no hop at all. Whatever the routes do not hold (a closed stdin, an exited or
    unknown process, a port whose actor is stopping) goes through the supervisor to the
    actor, which gives the same answers WriteInput gets (``invalid_state``, ``not_found``).
    """
    if not caller.on_this_host:
        raise CommandError(
            wire.ErrorCode.PERMISSION_DENIED,
            "OpenStdin is served to clients on the daemon's host only (ipc://): "
            "the path it names is a file of this host; write with WriteInput",
        )
    port = None if routes is None else routes.port(request.id, request.pid)
    if port is not None and not port.stopping:
        return open_stdin_reply(port, request.request_id)
    return await forward(supervisor, request, caller.by)
