"""The ReadOutput replies: a process's output from its logs, as bytes, a binary frame, or file spans.

Why out of ``api``: the API server routes a ReadOutput to the process's ``OutputView`` (through
the supervisor's routes, or the supervisor); what is then read, how long a long poll may hold a
worker, and how the reply is shaped (JSON, a binary frame filled in place, or the files named for
a local client, ``ReadOutput.spans``) is one job of its own, with its own limit on waiting reads.
Nothing here awaits between reading the spans and building the reply: a rotation could otherwise
move the bytes the reply names.
"""

from __future__ import annotations

import attrs
import trio

from containerd_actors import protocol as wire
from containerd_actors.daemon.container.logs import LogSpan
from containerd_actors.daemon.container.stdio import OutputView
from containerd_actors.daemon.ready_replies import Encoded, Framed
from containerd_actors.transport import nng
from containerd_actors.transport.file_identity import FileIdentity


class OutputReads:
    """Serves ReadOutput from a process's output view, at most ``max_waiting`` long polls at once.

    Each long poll holds an API worker while it waits, so without a cap 256 attached clients
    would starve every other request. Beyond the cap a ReadOutput answers at once and the client
    library backs off before asking again.
    """

    def __init__(self, max_waiting: int) -> None:
        self._waiting_reads = trio.CapacityLimiter(max_waiting)

    async def read(
        self, request: wire.ReadOutput, view: OutputView, *, files: bool = False
    ) -> wire.ReadOutputReply | Framed | Encoded:
        """``files``: name the files instead of sending the bytes, where that is safe (a TLS
        client's request never asks: its files are on another host)."""
        wait = request.wait
        if wait > 0:
            try:
                self._waiting_reads.acquire_nowait()
            except trio.WouldBlock:
                wait = 0.0
            else:
                try:
                    spans = await view.read_spans(
                        request.stdout_offset,
                        request.stderr_offset,
                        wait=wait,
                        max_bytes=request.max_bytes,
                        tail=request.tail,
                        gather=files,
                    )
                finally:
                    self._waiting_reads.release()
        if wait == 0:
            spans = await view.read_spans(
                request.stdout_offset,
                request.stderr_offset,
                wait=0,
                max_bytes=request.max_bytes,
                tail=request.tail,
            )
        # From here to the return nothing awaits: the spans are read before the logs can move.
        out, err = spans.stdout, spans.stderr
        ranges = view.log_ranges()
        reply = wire.ReadOutputReply(
            request.request_id,
            stdout=b"",
            stderr=b"",
            stdout_offset=out.offset,
            stderr_offset=err.offset,
            next_stdout_offset=out.offset + out.length,
            next_stderr_offset=err.offset + err.length,
            skipped=spans.skipped,
            exited=spans.exited,
            status=spans.status,
            terminal=view.terminal,
            stdout_end=ranges[0].end,
            stderr_end=ranges[1].end,
        )
        if files:
            identities = view.identities(spans)
            if identities is not None:
                # JSON whatever ``binary`` asked: there are no bytes to frame.
                return Encoded(wire.encode_reply(_with_files(reply, out, err, *identities)))
        if request.binary:
            # The frame's head, then each stream read straight into its place in nng's own
            # message: the one copy of the bytes in this process is the one from the page cache.
            spans_by_name = {"stdout": out, "stderr": err}
            head, names = wire.reply_frame_head(reply, {"stdout": out.length, "stderr": err.length})
            message = nng.OutgoingMessage.of_size(len(head) + out.length + err.length)
            try:
                body = message.body()
                body[: len(head)] = head
                start = len(head)
                for name in names:
                    span = spans_by_name[name]
                    span.read_into(body[start : start + span.length])
                    start += span.length
                body.release()
            except BaseException:
                message.close()
                raise
            return Framed(message)
        return attrs.evolve(reply, stdout=out.read(), stderr=err.read())


def _with_files(
    reply: wire.ReadOutputReply,
    out: LogSpan,
    err: LogSpan,
    out_file: FileIdentity | None,
    err_file: FileIdentity | None,
) -> wire.ReadOutputReply:
    """``reply`` with its streams named by file (``ReadOutput.spans``) instead of carried."""

    def named(span: LogSpan, identity: FileIdentity | None) -> wire.LogFileSpan | None:
        if identity is None or not span.length:
            return None
        return wire.LogFileSpan(
            str(span.path), identity.device, identity.inode, identity.generation, span.position
        )

    return attrs.evolve(reply, stdout_file=named(out, out_file), stderr_file=named(err, err_file))
