"""The client library: the one door to a daemon for ``actr`` and for every other service.

``Client`` (``connection``) sends requests under trio; ``Client.subscribe`` (``subscription``) gives
a lossless event stream; ``BlockingClient`` (``blocking``) sends one request at a time without trio,
for commands that ask once and print; ``errors`` is what all of them raise. The wire types a caller
meets in those calls, and the helpers a command line needs (the default address, durations, the
Prometheus format), are re-exported here, so that a caller imports from this package alone and
never from the daemon's side of the tree.

Every name is imported on first use (as in ``containerd_actors.protocol``): ``actr containers``
must not pay for trio, and ``actr --help`` for nothing at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from containerd_actors.protocol.lazy import lazy_exports

if TYPE_CHECKING:
    from containerd_actors.client.blocking import BlockingClient
    from containerd_actors.client.calls import (
        DEFAULT_TIMEOUT_S,
        FOLLOW_BACKOFF_S,
        FOLLOW_WAIT_S,
        FRAMED_INPUT_CHUNK_BYTES,
        INPUT_CHUNK_BYTES,
        OutputRead,
    )
    from containerd_actors.client.connection import Client
    from containerd_actors.client.errors import ClientError, DaemonUnreachable, RequestFailed
    from containerd_actors.client.subscription import (
        EVENTS_PER_CHUNK,
        IDLE_CHECK_MAX_S,
        IDLE_CHECK_MIN_S,
        IDLE_CHECK_TIMEOUT_S,
        EventsLost,
        EventSubscription,
        JournalReset,
        SubscriptionStats,
    )
    from containerd_actors.protocol import (
        ID_PATTERN,
        Checkpoint,
        ContainerInfo,
        ContainerStats,
        ErrorCode,
        ErrorReply,
        Event,
        EventsReply,
        EventType,
        MachineInfo,
        MetricsSnapshot,
        PingReply,
        ProcessInfo,
        ProtocolError,
        ReadOutputReply,
        StateReply,
        User,
        converter,
    )
    from containerd_actors.protocol.addresses import DEFAULT_ADDRESS, normalize_address
    from containerd_actors.protocol.durations import parse_duration
    from containerd_actors.protocol.prometheus import format_prometheus
    from containerd_actors.transport.tls import TlsFiles, TlsFilesError

#: Where each re-exported name lives.
_HOMES: dict[str, tuple[str, ...]] = {
    "containerd_actors.client.blocking": ("BlockingClient",),
    "containerd_actors.client.calls": (
        "OutputRead",
        "DEFAULT_TIMEOUT_S",
        "FOLLOW_BACKOFF_S",
        "FOLLOW_WAIT_S",
        "FRAMED_INPUT_CHUNK_BYTES",
        "INPUT_CHUNK_BYTES",
    ),
    "containerd_actors.client.connection": ("Client",),
    "containerd_actors.client.errors": ("ClientError", "DaemonUnreachable", "RequestFailed"),
    "containerd_actors.client.subscription": (
        "EVENTS_PER_CHUNK",
        "IDLE_CHECK_MAX_S",
        "IDLE_CHECK_MIN_S",
        "IDLE_CHECK_TIMEOUT_S",
        "EventsLost",
        "EventSubscription",
        "JournalReset",
        "SubscriptionStats",
    ),
    "containerd_actors.protocol": (
        "ID_PATTERN",
        "Checkpoint",
        "ContainerInfo",
        "ContainerStats",
        "ErrorCode",
        "ErrorReply",
        "Event",
        "EventsReply",
        "EventType",
        "MachineInfo",
        "MetricsSnapshot",
        "PingReply",
        "ProcessInfo",
        "ProtocolError",
        "ReadOutputReply",
        "StateReply",
        "User",
        "converter",
    ),
    "containerd_actors.protocol.addresses": ("DEFAULT_ADDRESS", "normalize_address"),
    "containerd_actors.protocol.durations": ("parse_duration",),
    "containerd_actors.protocol.prometheus": ("format_prometheus",),
    "containerd_actors.transport.tls": ("TlsFiles", "TlsFilesError"),
}
__all__ = sorted(name for names in _HOMES.values() for name in names)
__getattr__, __dir__ = lazy_exports(globals(), _HOMES)
