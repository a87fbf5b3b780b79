"""The replies the daemon sends, their tagged union, and the error vocabulary.

Each request is answered by its own reply class or by ``ErrorReply``, never by silence.
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
from attrs import field, frozen

from containerd_actors.protocol.lazy import names_from_elsewhere
from containerd_actors.protocol.records import Checkpoint, ContainerInfo, MachineInfo

if TYPE_CHECKING:
    from containerd_actors.protocol.events import Event
    from containerd_actors.protocol.migration import (
        MigrateContainerReply,
        MigrationAbortReply,
        MigrationBeginReply,
        MigrationChunkReply,
        MigrationCommitReply,
    )
    from containerd_actors.protocol.stats import ContainerStats, MetricsSnapshot

#: Classes of other modules that replies hold or that are members of ``Reply``: imported when one of
#: them, ``Reply`` or ``REPLY_TYPES`` is first used (``lazy.names_from_elsewhere`` says why).
ELSEWHERE = {
    "containerd_actors.protocol.events": ("Event",),
    "containerd_actors.protocol.migration": (
        "MigrateContainerReply",
        "MigrationAbortReply",
        "MigrationBeginReply",
        "MigrationChunkReply",
        "MigrationCommitReply",
    ),
    "containerd_actors.protocol.stats": ("ContainerStats", "MetricsSnapshot"),
}

#: The wire's revision, announced in every ``PingReply``. It grows by one whenever a request type
#: or a request field is added, so a client can tell before sending whether the daemon knows it.
#: 1: the first numbered revision (readers tolerant, requests strict).
#: 2: ``CreateContainer.terminal``; ``ListCheckpoints.bundle`` (and its ``id`` may be empty).
#: 3: ``State.id``; ``ReadOutput.binary`` (its reply as a binary frame); ``WriteInput`` may be a binary frame.
#: 4: live migration: ``MigrateContainer`` and the daemon-to-daemon ``Migration*`` requests.
#: 5: another change's (merged separately).
#: 6: ``WriteInput.writer`` and ``WriteInput.offset``: several WriteInputs of one writer in flight;
#:    binary frames of up to ``MAX_FRAME_BYTES`` (4 MiB of stdin per WriteInput).
#: 7: ``OpenStdin``: a client on the daemon's host writes a process's stdin pipe itself;
#:    ``ReadOutput.spans``: a local client is told where the output is in the log files
#:    (``ReadOutputReply.stdout_file``/``stderr_file``) and copies it from there itself.
PROTOCOL_VERSION = 7

#: Shared by the two replies that carry it.
JOURNAL_ID_DESCRIPTION = (
    "The event journal's identity, chosen at random when the journal was created: a different id "
    "(or seqs that go backwards) means the journal was wiped and seq starts again, so a subscriber's "
    "cursor no longer applies. Empty from a daemon older than this field."
)


@frozen
class PingReply:
    """``events_subscribers`` counts connected event subscribers, of both streams (a client can
    wait to be one).

    ``last_event_seq`` is the ``seq`` of the newest event so far (0 before the first): a client
    that subscribes and then pings knows that every event after it is meant for it, and can
    fetch any it does not receive with ``Events``.
    """

    request_id: str
    daemon_id: str
    version: str
    events_address: str
    events_subscribers: int
    last_event_seq: int
    events_batch_address: str | None = field(
        default=None,
        metadata={
            "description": "Where the same events are published in batches (EventBatch messages), "
            "for subscribers that must keep up with many events per second; null if this daemon "
            "publishes no batch stream."
        },
    )
    protocol_version: int = field(
        default=0,
        metadata={
            "description": "The revision of the wire protocol this daemon speaks (see "
            "proto_schemas/README.md, 'How the protocol grows'); 0 from a daemon older than this field."
        },
    )
    remote_events_address: str | None = field(
        default=None,
        metadata={
            "description": "The event stream's address for subscribers on other hosts: tls+tcp:// "
            "(same certificates as the API), or tcp:// where the daemon runs with --insecure-tcp; null "
            "if the daemon has no remote listener."
        },
    )
    remote_events_batch_address: str | None = field(
        default=None,
        metadata={"description": "The batch stream's remote address; null as for remote_events_address."},
    )
    journal_id: str = field(default="", metadata={"description": JOURNAL_ID_DESCRIPTION})


@frozen
class CreateContainerReply:
    request_id: str
    pid: int


@frozen
class SignalReply:
    request_id: str


@frozen
class StateReply:
    request_id: str
    containers: list[ContainerInfo]
    machine: MachineInfo


@frozen
class CreateCheckpointReply:
    request_id: str
    checkpoint: Checkpoint


@frozen
class ListCheckpointsReply:
    request_id: str
    checkpoints: list[Checkpoint]


@frozen
class DeleteCheckpointReply:
    request_id: str


@frozen
class UpdateContainerReply:
    request_id: str


@frozen
class StatsReply:
    request_id: str
    stats: ContainerStats


@frozen
class MetricsReply:
    request_id: str
    metrics: MetricsSnapshot


@frozen
class AddProcessReply:
    request_id: str
    pid: int


@frozen
class LogFileSpan:
    """Where one stream's bytes of a ``ReadOutputReply`` are (``ReadOutput.spans``): from
    ``position`` in the log file ``path``, as many as the reply's offsets say (``next_stdout_offset
    - stdout_offset`` for stdout).

    ``device``, ``inode`` and ``generation`` (the file system's generation of that inode,
    ``FS_IOC_GETVERSION``) name the file itself: a rotation renames the current log to
    ``<path>.1`` (the same file, so look there when ``path`` is another file now), and the next
    one deletes it, after which its inode number may be given to a new log. A reader that holds
    the file open with that identity finds the bytes there whatever rotates later (a log only
    grows); if neither ``path`` nor ``<path>.1`` is that file, the bytes were rotated out: read
    again from the same offsets without ``spans``, and the reply says what was skipped.
    """

    path: str
    device: int
    inode: int
    generation: int
    position: int


@frozen
class ReadOutputReply:
    """Output bytes and where the next ReadOutput should start.

    ``stdout`` and ``stderr`` are base64 in JSON, or blobs of a binary frame when the request
    asked for ``binary`` (see "Binary frames" in proto_schemas/README.md).

    ``stdout``/``stderr`` begin at ``stdout_offset``/``stderr_offset``, which are the requested
    offsets unless that output was rotated away (the gap is ``skipped`` bytes in total) or
    ``tail`` was asked for. ``exited`` is true once the process has exited and both streams have
    been read to their end: then ``status`` is its exit status (null if unknowable) and nothing
    more will come.
    """

    request_id: str
    stdout: bytes
    stderr: bytes
    stdout_offset: int
    stderr_offset: int
    next_stdout_offset: int
    next_stderr_offset: int
    skipped: int = 0
    exited: bool = False
    status: int | None = None
    terminal: bool = False
    stdout_file: LogFileSpan | None = field(
        default=None,
        metadata={
            "description": "With ReadOutput.spans, where stdout's bytes are (stdout is then empty); "
            "null when there are none or the daemon sent them"
        },
    )
    stderr_file: LogFileSpan | None = field(
        default=None,
        metadata={
            "description": "With ReadOutput.spans, where stderr's bytes are (stderr is then empty); "
            "null when there are none or the daemon sent them"
        },
    )
    stdout_end: int | None = field(
        default=None,
        metadata={
            "description": "Where stdout's log ended when the daemon answered (the offset its next byte "
            "will have): a client that feeds the process's stdin keeps its input within reach of what "
            "it has read (ctl.attach_blocking.OutputBacklog); null from a daemon older than it"
        },
    )
    stderr_end: int | None = field(
        default=None,
        metadata={"description": "As stdout_end, for stderr"},
    )


@frozen
class WriteInputReply:
    request_id: str
    written: int


@frozen
class ResizeTerminalReply:
    request_id: str


@frozen
class OpenStdinReply:
    """The daemon's write end of the process's stdin pipe, as a path its host can open."""

    request_id: str
    path: str = field(metadata={"description": "/proc/<daemon pid>/fd/<n>: open it for writing"})
    inode: int = field(metadata={"description": "st_ino of the pipe: the opened file must have it"})
    device: int = field(metadata={"description": "st_dev of the pipe: the opened file must have it"})


@frozen
class EventsReply:
    """One page of the event journal, in ``seq`` order.

    Events missing from the page (a jump between ``from_seq`` and the first event, or between
    two events) are lost for good: older than the journal's retention (compare
    ``first_available_seq``) or in a journal segment that was found corrupt.
    """

    request_id: str
    events: list[Event]
    next_seq: int = field(
        metadata={
            "description": "The from_seq of the next page. Always greater than the request's from_seq "
            "when from_seq <= last_seq, so paging always makes progress."
        }
    )
    last_seq: int = field(
        metadata={"description": "The seq of the newest event so far; next_seq > last_seq means caught up."}
    )
    first_available_seq: int = field(
        metadata={
            "description": "The oldest seq the journal still holds (last_seq + 1 when it holds none); "
            "older events are beyond retention."
        }
    )
    journal_id: str = field(default="", metadata={"description": JOURNAL_ID_DESCRIPTION})


@frozen
class ErrorReply:
    """Every failed request is answered with this, never with silence.

    ``request_id`` is null only when the request was too broken to carry one.
    ``code`` is one of the ``ErrorCode`` constants; ``details`` lists machine-readable specifics
    (for validation errors, one line per offending field).
    """

    request_id: str | None
    code: str
    message: str
    details: list[str] = field(factory=list)


def _reply_union() -> Any:
    """``Reply``, the tagged union of every reply; made on first use, once ``ELSEWHERE`` is imported."""
    return (
        PingReply
        | CreateContainerReply
        | SignalReply
        | StateReply
        | CreateCheckpointReply
        | ListCheckpointsReply
        | DeleteCheckpointReply
        | UpdateContainerReply
        | StatsReply
        | MetricsReply
        | AddProcessReply
        | ReadOutputReply
        | WriteInputReply
        | ResizeTerminalReply
        | EventsReply
        | OpenStdinReply
        | MigrateContainerReply
        | MigrationBeginReply
        | MigrationChunkReply
        | MigrationCommitReply
        | MigrationAbortReply
        | ErrorReply
    )


#: ``Reply``; and ``REPLY_TYPES``, the members of ``Reply`` in its order, for ``isinstance`` and the
#: codec's tag table.
__getattr__ = names_from_elsewhere(
    globals(),
    ELSEWHERE,
    {"Reply": _reply_union, "REPLY_TYPES": lambda: typing.get_args(globals()["Reply"])},
)


class ErrorCode:
    """The error vocabulary; clients branch on these strings."""

    MALFORMED = "malformed"  # not JSON, not an object, too deep
    UNKNOWN_TYPE = "unknown_type"  # missing or unknown "type" tag
    INVALID_REQUEST = "invalid_request"  # fields missing, extra, or of the wrong type/value
    INVALID_BUNDLE = "invalid_bundle"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    INVALID_STATE = "invalid_state"  # e.g. stdin already closed, not a terminal, container paused
    RUNTIME_FAILED = "runtime_failed"  # runc (or the kernel) refused; message carries its stderr
    PERMISSION_DENIED = "permission_denied"  # a read-only TLS client asked to change something
    INTERNAL = "internal"
