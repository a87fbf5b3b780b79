"""The wire contract shared by the daemon, the client library and every foreign client.

This package imports nothing else of ours, so ``proto_schemas/`` can be generated from it alone.
``requests`` and ``replies`` hold the two tagged unions, ``events`` what is published, ``records``
and ``stats`` what those carry, ``validators`` the field checks and limits, ``codec`` the one
converter and the framing, and ``schema`` the JSON Schema generator. Everything a client or the
daemon needs is re-exported here, and imported on first use: the reaper process parses its flags
with ``addresses`` and ``durations`` and must not carry the codec (cattrs) for that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from containerd_actors.protocol.lazy import lazy_exports

if TYPE_CHECKING:
    from containerd_actors.protocol.codec import (
        TOPIC_SEPARATOR,
        ReplyTemplate,
        converter,
        decode_event,
        decode_event_batch,
        decode_event_payload,
        decode_reply,
        decode_request,
        encode_event,
        encode_event_batch,
        encode_event_payload,
        encode_reply,
        encode_request,
        frame_event,
        reply_frame_head,
        reply_template,
        warm_up,
    )
    from containerd_actors.protocol.events import (
        EVENT_TOPIC_PREFIX,
        Event,
        EventBatch,
        EventType,
        event_topic,
    )
    from containerd_actors.protocol.message_errors import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, ProtocolError
    from containerd_actors.protocol.migration import (
        MigrateContainer,
        MigrateContainerReply,
        MigrationAbort,
        MigrationAbortReply,
        MigrationBegin,
        MigrationBeginReply,
        MigrationChunk,
        MigrationChunkReply,
        MigrationCommit,
        MigrationCommitReply,
    )
    from containerd_actors.protocol.migration_frames import (
        decode_framed_request,
        encode_framed_request,
        is_migration_chunk,
    )
    from containerd_actors.protocol.records import Checkpoint, ContainerInfo, MachineInfo, ProcessInfo, User
    from containerd_actors.protocol.replies import (
        PROTOCOL_VERSION,
        REPLY_TYPES,
        AddProcessReply,
        CreateCheckpointReply,
        CreateContainerReply,
        DeleteCheckpointReply,
        ErrorCode,
        ErrorReply,
        EventsReply,
        ListCheckpointsReply,
        MetricsReply,
        OpenStdinReply,
        PingReply,
        ReadOutputReply,
        Reply,
        ResizeTerminalReply,
        SignalReply,
        StateReply,
        StatsReply,
        UpdateContainerReply,
        WriteInputReply,
    )
    from containerd_actors.protocol.requests import (
        REQUEST_TYPES,
        AddProcess,
        CreateCheckpoint,
        CreateContainer,
        DeleteCheckpoint,
        Events,
        ListCheckpoints,
        Metrics,
        OpenStdin,
        Ping,
        ReadOutput,
        Request,
        ResizeTerminal,
        Signal,
        State,
        Stats,
        UpdateContainer,
        WriteInput,
    )
    from containerd_actors.protocol.stats import CgroupStats, ContainerStats, MetricsSnapshot
    from containerd_actors.protocol.validators import (
        ID_PATTERN,
        MAX_EVENTS_PER_PAGE,
        MAX_READ_BYTES,
        MAX_WAIT_S,
    )

#: Where each re-exported name lives, by submodule of this package.
_HOMES: dict[str, tuple[str, ...]] = {
    "codec": (
        "TOPIC_SEPARATOR",
        "converter",
        "decode_event",
        "decode_event_batch",
        "decode_event_payload",
        "decode_reply",
        "decode_request",
        "encode_event",
        "encode_event_batch",
        "encode_event_payload",
        "encode_reply",
        "encode_request",
        "frame_event",
        "reply_frame_head",
        "ReplyTemplate",
        "reply_template",
        "warm_up",
    ),
    "message_errors": ("MAX_FRAME_BYTES", "MAX_MESSAGE_BYTES", "ProtocolError"),
    "events": (
        "EVENT_TOPIC_PREFIX",
        "Event",
        "EventBatch",
        "EventType",
        "event_topic",
    ),
    "migration": (
        "MigrateContainer",
        "MigrateContainerReply",
        "MigrationAbort",
        "MigrationAbortReply",
        "MigrationBegin",
        "MigrationBeginReply",
        "MigrationChunk",
        "MigrationChunkReply",
        "MigrationCommit",
        "MigrationCommitReply",
    ),
    "migration_frames": (
        "decode_framed_request",
        "encode_framed_request",
        "is_migration_chunk",
    ),
    "records": (
        "Checkpoint",
        "ContainerInfo",
        "MachineInfo",
        "ProcessInfo",
        "User",
    ),
    "replies": (
        "PROTOCOL_VERSION",
        "REPLY_TYPES",
        "AddProcessReply",
        "CreateCheckpointReply",
        "CreateContainerReply",
        "DeleteCheckpointReply",
        "ErrorCode",
        "ErrorReply",
        "EventsReply",
        "ListCheckpointsReply",
        "MetricsReply",
        "OpenStdinReply",
        "PingReply",
        "ReadOutputReply",
        "Reply",
        "ResizeTerminalReply",
        "SignalReply",
        "StateReply",
        "StatsReply",
        "UpdateContainerReply",
        "WriteInputReply",
    ),
    "requests": (
        "REQUEST_TYPES",
        "AddProcess",
        "CreateCheckpoint",
        "CreateContainer",
        "DeleteCheckpoint",
        "Events",
        "ListCheckpoints",
        "Metrics",
        "OpenStdin",
        "Ping",
        "ReadOutput",
        "Request",
        "ResizeTerminal",
        "Signal",
        "State",
        "Stats",
        "UpdateContainer",
        "WriteInput",
    ),
    "stats": (
        "CgroupStats",
        "ContainerStats",
        "MetricsSnapshot",
    ),
    "validators": (
        "ID_PATTERN",
        "MAX_EVENTS_PER_PAGE",
        "MAX_READ_BYTES",
        "MAX_WAIT_S",
    ),
}
__all__ = sorted(name for names in _HOMES.values() for name in names)
__getattr__, __dir__ = lazy_exports(globals(), _HOMES, f"{__name__}.")
