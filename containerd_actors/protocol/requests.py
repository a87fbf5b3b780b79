"""The requests a client sends, and their tagged union.

A request travels as one JSON object tagged ``"type": "<ClassName>"``; every request carries a
``request_id`` that its reply echoes.
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
from attrs import field, frozen

from containerd_actors.protocol.lazy import names_from_elsewhere
from containerd_actors.protocol.records import User
from containerd_actors.protocol.validators import (
    MAX_EVENTS_PER_PAGE,
    absolute_or_empty,
    env_entries,
    non_empty_args,
    non_negative,
    page_limit,
    pause_or_run,
    read_size,
    signal_number,
    stream_offset,
    tail_lines,
    uint16,
    valid_id,
    valid_id_or_empty,
    valid_optional_name,
    wait_seconds,
)

if TYPE_CHECKING:
    from containerd_actors.protocol.migration import (
        MigrateContainer,
        MigrationAbort,
        MigrationBegin,
        MigrationChunk,
        MigrationCommit,
    )

#: Metadata key of a request field added after revision 1: the revision that added it. Such a field
#: is left out of an encoded request while it holds its default (``codec.encode_request``), so a
#: client that does not use it still speaks to a daemon older than the field.
SINCE = "since"


def since(revision: int, description: str) -> dict[str, object]:
    return {SINCE: revision, "description": f"{description} (protocol revision {revision})"}


@frozen
class _ProcessRequest:
    """A request about one process of a container: ``pid`` 0 is the container's init.

    attrs puts these fields first in every subclass, so each request keeps the field order it has
    in its schema and in positional construction.
    """

    request_id: str
    id: str = field(validator=valid_id)
    pid: int = field(default=0, validator=non_negative)


@frozen
class Ping:
    """A no-op round trip; also tells the client where the events socket is."""

    request_id: str


@frozen
class CreateContainer:
    """Start a container from an OCI bundle (an absolute directory holding ``config.json``).

    With ``checkpoint``, restore it instead from ``<bundle>/checkpoints/<checkpoint>``.
    ``terminal`` gives the init a pty (true) or pipes (false) whatever the bundle's
    ``process.terminal`` says; null follows the bundle (for a restore: the checkpoint). A
    terminal's output is one stream (stdout); ``ResizeTerminal`` sets its window size. Sent
    again with the same ``request_id``, ``id`` and ``bundle`` (a reply lost to a dropped
    connection or a daemon restart), it is answered with the pid of the container it made.
    """

    request_id: str
    id: str = field(validator=valid_id)
    bundle: str
    checkpoint: str | None = field(default=None, validator=valid_optional_name)
    terminal: bool | None = field(
        default=None,
        metadata=since(2, "true: a pty for the init; false: pipes; null: as the bundle (or checkpoint) says"),
    )


@frozen
class Signal(_ProcessRequest):
    """Send ``signal`` to a container's init process (``pid`` 0) or to one of its processes."""

    signal: int = field(default=15, validator=signal_number)


@frozen
class State:
    """List every container the daemon supervises (or just the one ``id`` names), plus machine
    information."""

    request_id: str
    id: str = field(
        default="",
        validator=valid_id_or_empty,
        metadata=since(3, "Only this container (none if there is no such container); empty: every one"),
    )


@frozen
class CreateCheckpoint:
    """Dump a running container with CRIU into ``<bundle>/checkpoints/<name>``.

    ``tcp`` keeps established TCP connections (the container must live in a network namespace
    created beforehand), ``unix_sockets`` allows external unix sockets, ``shell`` allows shell
    jobs, and ``exit`` stops the container once the dump has succeeded.
    """

    request_id: str
    id: str = field(validator=valid_id)
    name: str = field(validator=valid_id)
    tcp: bool = False
    unix_sockets: bool = False
    shell: bool = False
    exit: bool = False


@frozen
class ListCheckpoints:
    """The checkpoints stored in a container's bundle: give ``id`` (a container, running or
    recently exited) or ``bundle`` (an absolute bundle directory, no container needed)."""

    request_id: str
    id: str = field(default="", validator=valid_id_or_empty)
    bundle: str = field(
        default="",
        validator=absolute_or_empty,
        metadata=since(2, "An absolute bundle directory whose checkpoints to list, instead of id"),
    )


@frozen
class DeleteCheckpoint:
    """Delete a checkpoint from a container's bundle (the container may have exited)."""

    request_id: str
    id: str = field(validator=valid_id)
    name: str = field(validator=valid_id)


@frozen
class UpdateContainer:
    """Pause (freeze every process of) or resume a container: the original's UpdateContainer status."""

    request_id: str
    id: str = field(validator=valid_id)
    status: str = field(validator=pause_or_run)


@frozen
class Stats:
    """One sample of a container's cgroup statistics; a client streams by asking about once a second."""

    request_id: str
    id: str = field(validator=valid_id)


@frozen
class Metrics:
    """The daemon's own telemetry: timers, counters and gauges."""

    request_id: str


@frozen
class AddProcess:
    """Run another process in a running container (``runc exec``); the reply carries its pid.

    The process starts from the container's own process spec (capabilities, rlimits, ...), with
    ``args``, ``cwd`` (empty: the container's), ``user`` and ``terminal`` replaced and ``env``
    added on top of the container's environment (a key given here wins). With ``terminal`` it
    gets a pty of ``rows`` x ``cols`` (0: runc's default); otherwise stdin/stdout/stderr are pipes.
    Its output is kept in the daemon's logs (ReadOutput) whether or not anyone attaches.
    """

    request_id: str
    id: str = field(validator=valid_id)
    args: list[str] = field(validator=non_empty_args)
    env: list[str] = field(factory=list, validator=env_entries)
    cwd: str = field(default="", validator=absolute_or_empty)
    user: User | None = None
    terminal: bool = False
    rows: int = field(default=0, validator=uint16)
    cols: int = field(default=0, validator=uint16)


@frozen
class ReadOutput(_ProcessRequest):
    """Read a process's output from the daemon's logs, starting at byte offsets; the attach stream.

    ``pid`` 0 means the container's init. Offsets count bytes since the process started, across log
    rotation. With ``tail`` >= 0 the offsets are ignored and reading starts at the last ``tail``
    lines of each stream. If nothing is available yet and the process may still write, the daemon
    waits up to ``wait`` seconds before answering (long poll). Works after the process, and its
    container, have exited, until the container id is reused.
    """

    stdout_offset: int = field(default=0, validator=non_negative)
    stderr_offset: int = field(default=0, validator=non_negative)
    wait: float = field(default=0.0, validator=wait_seconds)
    max_bytes: int = field(default=1 << 20, validator=read_size)
    tail: int = field(default=-1, validator=tail_lines)
    binary: bool = field(
        default=False,
        metadata=since(
            3, "true: the reply is a binary frame with stdout and stderr as blobs; false: JSON with base64"
        ),
    )
    spans: bool = field(
        default=False,
        metadata=since(
            7,
            "true: a client on the daemon's host that can read its log files may be told where the bytes"
            " are (the reply's stdout_file/stderr_file) instead of getting them; the daemon ignores it"
            " for a TLS client, or where it cannot name a file safely, and answers with the bytes",
        ),
    )


@frozen
class WriteInput(_ProcessRequest):
    """Write ``data`` to a process's stdin (a pty's input for a terminal); ``close`` then closes it.

    ``data`` is base64 in JSON, or a blob when the request is a binary frame (protocol revision 3).

    Closing a pipe gives the process EOF; on a terminal it sends the EOF character (Ctrl-D) instead.
    The reply says how many bytes were written: fewer than sent if the process stopped reading
    for a while, so send the rest again.

    Several in flight (protocol revision 6): a writer that names itself (``writer``) and says where
    each request's ``data`` starts in its stream (``offset``) may send the next requests before
    the replies come, on as many connections as it likes. The daemon writes each writer's bytes
    once and in order, whatever order the requests arrive in: a request ahead of a gap waits
    (up to the write's timeout) for the bytes before it, and bytes already written are skipped.
    ``written`` then counts from the request's ``offset``, skipped bytes included, so a writer
    resends from ``offset + written``; a request that waited for a gap that never filled answers 0.
    """

    data: bytes = b""
    close: bool = False
    writer: str = field(
        default="",
        validator=valid_id_or_empty,
        metadata=since(
            6, "Who writes, a name unique among this process's writers (a random token); empty: no ordering"
        ),
    )
    offset: int = field(
        default=-1,
        validator=stream_offset,
        metadata=since(
            6, "Where data starts in this writer's stream (its first byte is 0); -1: none, write as it comes"
        ),
    )


@frozen
class OpenStdin(_ProcessRequest):
    """Where a client on the daemon's own host may open a process's stdin pipe itself (protocol
    revision 7), to write its bytes there instead of through WriteInput.

    Every WriteInput carries its bytes through the socket, the daemon and a pipe write; a local
    client can open the very pipe the daemon writes to and send them without the daemon. The
    reply names ``/proc/<daemon pid>/fd/<n>``, the daemon's own write end: opening it (for
    writing, with ``O_NONBLOCK`` so that a pipe with no reader left fails with ENXIO instead of
    waiting) needs the right to inspect the daemon (its uid, or root). The client must then
    compare the opened file's inode and device with the reply's: another pid namespace, or an fd
    closed and its number reused since the reply, name another file. At its EOF the client
    closes what it opened and then sends ``WriteInput`` with ``close``: the process sees EOF
    once every write end is closed, the daemon's too.

    Refused with ``permission_denied`` over tcp or TLS (the path names a file on the daemon's
    host), with ``invalid_state`` for a terminal (its input is a pty master, which WriteInput
    writes) or a closed stdin, and ``not_found`` for an unknown container or process.
    """


@frozen
class ResizeTerminal(_ProcessRequest):
    """Set the window size of a process's terminal (the client got SIGWINCH)."""

    rows: int = field(default=24, validator=uint16)
    cols: int = field(default=80, validator=uint16)


@frozen
class Events:
    """Read one page of past events from the daemon's event journal, oldest first.

    The page starts at the first journalled event whose ``seq`` is at least ``from_seq`` and,
    if ``since`` is given, whose ``timestamp`` is at least ``since``. ``since`` only picks the
    starting point: every later event follows, whatever its timestamp, so a wall clock stepped
    backwards cannot hide events. To read on, send ``from_seq = next_seq`` from the reply
    (without ``since``) until ``next_seq > last_seq``; then the live stream takes over.
    """

    request_id: str
    from_seq: int = field(
        default=0,
        validator=non_negative,
        metadata={"description": "First seq wanted; 0 (or 1) means the oldest event still journalled."},
    )
    since: float | None = field(
        default=None,
        metadata={"description": "Seconds since the Unix epoch; start at the first event this new or newer."},
    )
    limit: int = field(
        default=MAX_EVENTS_PER_PAGE,
        validator=page_limit,
        metadata={"description": f"Most events in the reply (1 to {MAX_EVENTS_PER_PAGE})."},
    )


def _request_union() -> Any:
    """``Request``, the tagged union of every request; made on first use, once ``ELSEWHERE`` is imported."""
    return (
        Ping
        | CreateContainer
        | Signal
        | State
        | CreateCheckpoint
        | ListCheckpoints
        | DeleteCheckpoint
        | UpdateContainer
        | Stats
        | Metrics
        | AddProcess
        | ReadOutput
        | WriteInput
        | ResizeTerminal
        | Events
        | OpenStdin
        | MigrateContainer
        | MigrationBegin
        | MigrationChunk
        | MigrationCommit
        | MigrationAbort
    )


#: The members of ``Request`` defined in another module: imported when one of them, ``Request`` or
#: ``REQUEST_TYPES`` is first used (``lazy.names_from_elsewhere`` says why).
ELSEWHERE = {
    "containerd_actors.protocol.migration": (
        "MigrateContainer",
        "MigrationAbort",
        "MigrationBegin",
        "MigrationChunk",
        "MigrationCommit",
    ),
}
#: ``Request``; and ``REQUEST_TYPES``, the members of ``Request`` in its order, for ``isinstance`` and
#: the codec's tag table.
__getattr__ = names_from_elsewhere(
    globals(),
    ELSEWHERE,
    {"Request": _request_union, "REQUEST_TYPES": lambda: typing.get_args(globals()["Request"])},
)
