"""The client library: the one door to a daemon for ``actr`` and for every other service.

``Client`` (``connection``) sends requests; ``Client.subscribe`` (``subscription``) gives a
lossless event stream; ``errors`` is what both raise. The wire types a caller meets in those
calls, and the helpers a command line needs (the default address, durations, the Prometheus
format), are re-exported here, so that a caller imports from this package alone and never from
the daemon's side of the tree.
"""

from containerd_actors.client.connection import (
    DEFAULT_TIMEOUT_S,
    FOLLOW_BACKOFF_S,
    FOLLOW_WAIT_S,
    INPUT_CHUNK_BYTES,
    Client,
    OutputRead,
)
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

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT_S",
    "EVENTS_PER_CHUNK",
    "FOLLOW_BACKOFF_S",
    "FOLLOW_WAIT_S",
    "IDLE_CHECK_MAX_S",
    "IDLE_CHECK_MIN_S",
    "IDLE_CHECK_TIMEOUT_S",
    "ID_PATTERN",
    "INPUT_CHUNK_BYTES",
    "Checkpoint",
    "Client",
    "ClientError",
    "ContainerInfo",
    "ContainerStats",
    "DaemonUnreachable",
    "ErrorCode",
    "ErrorReply",
    "Event",
    "EventSubscription",
    "EventType",
    "EventsLost",
    "EventsReply",
    "JournalReset",
    "MachineInfo",
    "MetricsSnapshot",
    "OutputRead",
    "PingReply",
    "ProcessInfo",
    "ProtocolError",
    "ReadOutputReply",
    "RequestFailed",
    "StateReply",
    "SubscriptionStats",
    "TlsFiles",
    "TlsFilesError",
    "User",
    "converter",
    "format_prometheus",
    "normalize_address",
    "parse_duration",
]
