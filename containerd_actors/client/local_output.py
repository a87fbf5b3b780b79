"""``BlockingClient.follow_output`` for a client on the daemon's host: bytes from the log files.

A client that dials the daemon's ipc:// socket asks its reads with ``spans`` (protocol revision
7) and gets, instead of the bytes, where they are (``log_files``); what it yields then holds
``FileBytes``, which its writer copies with ``sendfile``. Everything else is as before: the same
offsets, ``skipped`` and exit. It falls back to the bytes in replies (binary frames), for good,
when the daemon is older (it refuses the field), when this user may not open the logs, or when
the files are out of reach (named files not found several reads in a row: another mount
namespace); and for one read when a file was rotated out before it could be opened, so that the
daemon's reply says what was skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
import attrs

from containerd_actors import protocol as wire
from containerd_actors.client import calls
from containerd_actors.client.errors import RequestFailed
from containerd_actors.client.log_files import FileBytes, LogFiles

if TYPE_CHECKING:
    from containerd_actors.client.blocking import BlockingClient
    from containerd_actors.client.redial import Redial

#: Reads in a row whose named files were found under neither name: then the files are taken to
#: be out of this process's reach, and the reads go without ``spans``.
MISSES = 3


def is_local(address: str) -> bool:
    """Whether a client of ``address`` runs on the daemon's host (its ipc:// socket)."""
    return address.startswith("ipc://")


def refuses_spans(failure: RequestFailed) -> bool:
    """Whether ``failure`` is a daemon older than revision 7 refusing ``ReadOutput.spans``."""
    return failure.code == wire.ErrorCode.INVALID_REQUEST and any(
        "extra fields" in detail and "spans" in detail for detail in (failure.details or [failure.message])
    )


@attrs.define
class Reader:
    """What a local follow holds between reads: the open files, and what went which way."""

    files: LogFiles = attrs.field(factory=LogFiles)
    #: False once the reads go without ``spans`` for good.
    spans: bool = True
    #: Output bytes copied from the files, and bytes that came in replies.
    from_files: int = 0
    from_replies: int = 0
    misses: int = 0


def follow_output(
    client: BlockingClient,
    id: str,
    pid: int = 0,
    *,
    follow: bool = True,
    tail: int = -1,
    offsets: tuple[int, int] = (0, 0),
    reader: Reader | None = None,
    redial: Redial | None = None,
) -> Iterator[calls.OutputRead]:
    """As ``client.follow_output``; a local client's output as ``FileBytes`` where it can.

    With ``redial`` (whose first connection is ``client``), a read whose connection is lost is
    asked again, from the same offsets, on a new connection (``redial.Redial``): reads change
    nothing, so nothing is yielded twice or skipped."""
    reader = Reader() if reader is None else reader
    if not is_local(client.address):
        reader.spans = False
    state = calls.OutputFollow(framed=True, follow=follow, tail=tail, offsets=offsets)

    def ask(fields: dict[str, Any]) -> Callable[[BlockingClient], calls.OutputRead]:
        def one(connection: BlockingClient) -> calls.OutputRead:
            read = _read(connection, id, pid, dict(fields), state, reader) if reader.spans else None
            if read is None:  # without spans, as the client always read
                read = state.take(connection.read_next(id, pid, state, dict(fields)))
                reader.from_replies += len(read.stdout) + len(read.stderr)
            return read

        return one

    while not state.done:
        fields: dict[str, Any] = dict(state.fields())  # the same fields if it is asked again
        request = ask(fields)
        yield request(client) if redial is None else redial.run(request)
        if state.backoff:
            time.sleep(state.backoff)  # the daemon's long polls were all taken


def _read(
    client: BlockingClient,
    id: str,
    pid: int,
    fields: dict[str, Any],
    state: calls.OutputFollow,
    reader: Reader,
) -> calls.OutputRead | None:
    """One read with ``spans``; None if the daemon does not know them (then ``reader.spans`` is off)."""
    try:
        reply = client.call(
            "ReadOutput", wire.ReadOutputReply, views=True, id=id, pid=pid, spans=True, **fields
        )
    except RequestFailed as failure:
        if not refuses_spans(failure):
            raise
        reader.spans = False
        return None
    try:
        local = _from_files(reply, reader.files)
    except OSError:
        reader.spans = False  # not ours to read (EACCES): the bytes come in replies from now on
        local = None
    if local is None:
        reader.misses += 1
        if reader.misses >= MISSES:
            reader.spans = False
        # The same read without spans: the bytes, or what was skipped since.
        if fields["tail"] >= 0:
            fields = {**fields, "tail": -1}
            fields.update(stdout_offset=reply.stdout_offset, stderr_offset=reply.stderr_offset)
        reply = client.call("ReadOutput", wire.ReadOutputReply, views=True, id=id, pid=pid, **fields)
        read = state.take(reply)
        reader.from_replies += len(read.stdout) + len(read.stderr)
        return read
    reader.misses = 0
    stdout, stderr = local
    for part in local:
        if isinstance(part, FileBytes):
            reader.from_files += len(part)
        else:
            reader.from_replies += len(part)
    return attrs.evolve(state.take(reply), stdout=stdout, stderr=stderr)


def _from_files(
    reply: wire.ReadOutputReply, files: LogFiles
) -> tuple[FileBytes | bytes | memoryview, FileBytes | bytes | memoryview] | None:
    """Each stream's bytes: from its named file, or as the reply carries them (none named, or a
    daemon that sent them); None if a named file was rotated out before it could be opened."""
    streams: list[FileBytes | bytes | memoryview] = []
    for named, carried, length in (
        (reply.stdout_file, reply.stdout, reply.next_stdout_offset - reply.stdout_offset),
        (reply.stderr_file, reply.stderr, reply.next_stderr_offset - reply.stderr_offset),
    ):
        if named is None:
            streams.append(carried)
            continue
        found = files.bytes_of(named, length)
        if found is None:
            return None
        streams.append(found)
    return streams[0], streams[1]
