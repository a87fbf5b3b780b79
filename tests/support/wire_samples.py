"""One hand-written instance (or more) of every wire class, and how each kind of message travels;
shared by the codec and schema tests.

Built lazily inside a function, so that a field added to a message fails the tests that use these
samples with a clear TypeError, instead of breaking test collection.
"""

from __future__ import annotations

import json
from typing import Any

import containerd_actors.protocol as wire
from containerd_actors.protocol import stats

#: Every class that crosses the wire on its own: the requests, the replies, an event, a batch.
WIRE_CLASSES: tuple[type, ...] = (*wire.REQUEST_TYPES, *wire.REPLY_TYPES, wire.Event, wire.EventBatch)


def encode(message: Any) -> bytes:
    """The bytes ``message`` travels as: a tagged request or reply, an event frame, a batch."""
    if isinstance(message, wire.EventBatch):
        return wire.encode_event_batch(message)
    if isinstance(message, wire.Event):
        return wire.encode_event(message)
    if isinstance(message, wire.REQUEST_TYPES):
        return wire.encode_request(message)
    return wire.encode_reply(message)


def decode(cls: type, data: bytes) -> Any:
    """The inverse of ``encode`` for a message of class ``cls``."""
    if cls is wire.EventBatch:
        return wire.decode_event_batch(data)
    if cls is wire.Event:
        return wire.decode_event(data)
    if cls in wire.REQUEST_TYPES:
        return wire.decode_request(data)
    return wire.decode_reply(data)


def json_object(message: Any) -> dict[str, Any]:
    """The JSON object of an encoded message (of an event: its frame's payload, after the topic)."""
    data = encode(message)
    if isinstance(message, wire.Event):
        _topic, _, data = data.partition(wire.TOPIC_SEPARATOR)
    return json.loads(data)


def wire_samples() -> dict[type, list[Any]]:
    """Hand-written instances of every wire class (built lazily: a field added to a message
    fails the tests that use it, with a clear TypeError, instead of breaking collection).

    tests/unit/test_schemas.py and tests/unit/test_codec.py both check that every wire class has one."""
    process = wire.ProcessInfo(
        pid=4242,
        args=["/bin/sh", "-c", "sleep 1"],
        env=["PATH=/usr/bin"],
        cwd="/",
        user=wire.User(uid=1000, gid=1000, additional_gids=[10, 20]),
        terminal=True,
    )
    checkpoint = wire.Checkpoint(
        name="before-upgrade", tcp=True, unix_sockets=False, shell=False, exit=False, created=1700000000.5
    )
    full_stats = wire.ContainerStats(
        id="web",
        timestamp=1700000000.5,
        cgroup=wire.CgroupStats(
            cpu=stats.CpuStats(usage=stats.CpuUsage(total=10, per_cpu=[4, 6], kernel=3, user=7)),
            memory=stats.MemoryStats(
                usage=stats.MemoryData(usage=1 << 20, max_usage=2 << 20, failcnt=0, limit=16 << 20)
            ),
            blkio=stats.BlkioStats(
                io_service_bytes_recursive=[stats.BlkioEntry(major=8, minor=0, op="Read", value=4096)]
            ),
            pids=stats.PidsStats(current=2, limit=0),
            hugetlb={"2MB": stats.HugetlbStats(usage=0)},
        ),
    )
    return {
        wire.Ping: [wire.Ping(request_id="r-1")],
        wire.CreateContainer: [
            wire.CreateContainer(request_id="r-2", id="web.1_a-b", bundle="/srv/bundles/web"),
            wire.CreateContainer(
                request_id="r-2", id="clone", bundle="/srv/bundles/web", checkpoint="before-upgrade"
            ),
            wire.CreateContainer(request_id="r-2", id="shell", bundle="/srv/bundles/web", terminal=True),
        ],
        wire.Signal: [
            wire.Signal(request_id="r-3", id="web"),
            wire.Signal(request_id="", id="a" * 128, pid=7, signal=64),
        ],
        wire.State: [wire.State(request_id="r-4")],
        wire.PingReply: [
            wire.PingReply(
                request_id="r-1",
                daemon_id="daemon-1",
                version="0.1.0",
                events_address="ipc:///run/containerd-actors/events.sock",
                events_subscribers=2,
                last_event_seq=41,
                events_batch_address="ipc:///run/containerd-actors/events-batch.sock",
                protocol_version=1,
            ),
            wire.PingReply(
                request_id="r-1",
                daemon_id="daemon-1",
                version="0.1.0",
                events_address="tcp://127.0.0.1:7001",
                events_subscribers=0,
                last_event_seq=0,
            ),
        ],
        wire.CreateContainerReply: [wire.CreateContainerReply(request_id="r-2", pid=4242)],
        wire.SignalReply: [wire.SignalReply(request_id="r-3")],
        wire.StateReply: [
            wire.StateReply(
                request_id="r-4", containers=[], machine=wire.MachineInfo(id="host", cpus=8, memory=1 << 34)
            ),
            wire.StateReply(
                request_id="r-5",
                containers=[
                    wire.ContainerInfo(
                        id="web", bundle="/srv/bundles/web", status="running", pid=4242, processes=[process]
                    ),
                    wire.ContainerInfo(id="db", bundle="/srv/bundles/db", status="stopped", pid=0),
                ],
                machine=wire.MachineInfo(id="host", cpus=1, memory=0),
            ),
        ],
        wire.CreateCheckpoint: [
            wire.CreateCheckpoint(request_id="r-7", id="web", name="before-upgrade"),
            wire.CreateCheckpoint(
                request_id="r-8", id="web", name="tcp.1", tcp=True, unix_sockets=True, shell=True, exit=True
            ),
        ],
        wire.ListCheckpoints: [
            wire.ListCheckpoints(request_id="r-9", id="web"),
            wire.ListCheckpoints(request_id="r-9", bundle="/srv/bundles/web"),
        ],
        wire.DeleteCheckpoint: [wire.DeleteCheckpoint(request_id="r-10", id="web", name="before-upgrade")],
        wire.CreateCheckpointReply: [wire.CreateCheckpointReply(request_id="r-7", checkpoint=checkpoint)],
        wire.ListCheckpointsReply: [
            wire.ListCheckpointsReply(request_id="r-9", checkpoints=[]),
            wire.ListCheckpointsReply(request_id="r-9", checkpoints=[checkpoint, checkpoint]),
        ],
        wire.DeleteCheckpointReply: [wire.DeleteCheckpointReply(request_id="r-10")],
        wire.Events: [
            wire.Events(request_id="r-15"),
            wire.Events(request_id="r-16", from_seq=5, since=1700000000.25, limit=10),
        ],
        wire.EventsReply: [
            wire.EventsReply(request_id="r-15", events=[], next_seq=1, last_seq=0, first_available_seq=1),
            wire.EventsReply(
                request_id="r-16",
                events=[
                    wire.Event(
                        seq=5, timestamp=1700000000.25, type=wire.EventType.START_CONTAINER, id="web", pid=42
                    ),
                    wire.Event(
                        seq=7, timestamp=1700000001.0, type=wire.EventType.EXIT, id="web", pid=42, status=0
                    ),
                    wire.Event(
                        seq=8,
                        timestamp=1700000002.0,
                        type=wire.EventType.EXIT,
                        id="db",
                        pid=43,
                        status=None,
                        reason="exited while no reaper was its parent",
                    ),
                ],
                next_seq=9,
                last_seq=9,
                first_available_seq=5,
            ),
        ],
        wire.UpdateContainer: [
            wire.UpdateContainer(request_id="r-11", id="web", status="paused"),
            wire.UpdateContainer(request_id="r-12", id="web", status="running"),
        ],
        wire.Stats: [wire.Stats(request_id="r-13", id="web")],
        wire.Metrics: [wire.Metrics(request_id="r-14")],
        wire.UpdateContainerReply: [wire.UpdateContainerReply(request_id="r-11")],
        wire.StatsReply: [
            wire.StatsReply(
                request_id="r-13",
                stats=wire.ContainerStats(id="web", timestamp=1.5, cgroup=wire.CgroupStats()),
            ),
            wire.StatsReply(request_id="r-13", stats=full_stats),
        ],
        wire.MetricsReply: [
            wire.MetricsReply(request_id="r-14", metrics=wire.MetricsSnapshot(timestamp=2.5)),
            wire.MetricsReply(
                request_id="r-14",
                metrics=wire.MetricsSnapshot(
                    timestamp=2.5,
                    timers=[
                        stats.TimerSnapshot(name="container-start-time", count=3, min=1, max=9, mean=4.5)
                    ],
                    counters=[stats.CounterSnapshot(name="events", count=7)],
                    gauges=[stats.GaugeSnapshot(name="fds", value=42)],
                ),
            ),
        ],
        wire.AddProcess: [
            wire.AddProcess(request_id="r-15", id="web", args=["echo", "hi"]),
            wire.AddProcess(
                request_id="r-16",
                id="web",
                args=["sh"],
                env=["TERM=xterm", "A="],
                cwd="/tmp",
                user=wire.User(uid=1000, gid=1000, additional_gids=[10]),
                terminal=True,
                rows=40,
                cols=120,
            ),
        ],
        wire.AddProcessReply: [wire.AddProcessReply(request_id="r-15", pid=4343)],
        wire.ReadOutput: [
            wire.ReadOutput(request_id="r-17", id="web"),
            wire.ReadOutput(
                request_id="r-18",
                id="web",
                pid=4343,
                stdout_offset=1 << 20,
                stderr_offset=7,
                wait=5.0,
                max_bytes=65536,
            ),
            wire.ReadOutput(request_id="r-19", id="web", tail=10),
            wire.ReadOutput(request_id="r-23", id="web", max_bytes=4 << 20, binary=True),
        ],
        wire.ReadOutputReply: [
            wire.ReadOutputReply(
                request_id="r-17",
                stdout=b"hi\n",
                stderr=b"",
                stdout_offset=0,
                stderr_offset=0,
                next_stdout_offset=3,
                next_stderr_offset=0,
            ),
            wire.ReadOutputReply(
                request_id="r-18",
                stdout=b"",
                stderr=b"",
                stdout_offset=100,
                stderr_offset=7,
                next_stdout_offset=100,
                next_stderr_offset=7,
                skipped=93,
                exited=True,
                status=0,
                terminal=True,
            ),
        ],
        wire.WriteInput: [
            wire.WriteInput(request_id="r-20", id="web", data=b"hi\n"),
            wire.WriteInput(request_id="r-21", id="web", pid=4343, close=True),
            wire.WriteInput(request_id="r-22", id="web", data=b"more\n", writer="7-a1b2", offset=3),
        ],
        wire.WriteInputReply: [wire.WriteInputReply(request_id="r-20", written=3)],
        wire.ResizeTerminal: [wire.ResizeTerminal(request_id="r-22", id="web", pid=4343, rows=50, cols=200)],
        wire.ResizeTerminalReply: [wire.ResizeTerminalReply(request_id="r-22")],
        wire.OpenStdin: [wire.OpenStdin(request_id="r-23", id="web", pid=4343)],
        wire.OpenStdinReply: [
            wire.OpenStdinReply(request_id="r-23", path="/proc/812/fd/31", inode=91233, device=14)
        ],
        wire.MigrateContainer: [
            wire.MigrateContainer(request_id="r-30", id="web", to="tls+tcp://198.18.0.2:7000"),
            wire.MigrateContainer(
                request_id="r-31",
                id="web",
                to="tls+tcp://b:7000",
                tcp=True,
                keep_source=True,
                rootfs_copy=True,
            ),
        ],
        wire.MigrateContainerReply: [
            wire.MigrateContainerReply("r-30", 5151, 0.21, 0.35, 0.08, 0.05, 0.08, 262144)
        ],
        wire.MigrationBegin: [
            wire.MigrationBegin(
                "r-32", "m0123", "web", "/containers/web", "/containers/web/rootfs", terminal=True
            )
        ],
        wire.MigrationBeginReply: [wire.MigrationBeginReply("r-32", "/var/lib/ca/migrated/web.m0123")],
        wire.MigrationChunk: [
            wire.MigrationChunk(
                "r-33",
                "m0123",
                0,
                "image",
                "pages-1.img",
                0,
                "abababababababababababababababababababababababababababababababab",
            )
        ],
        wire.MigrationChunkReply: [wire.MigrationChunkReply("r-33")],
        wire.MigrationCommit: [
            wire.MigrationCommit(
                "r-34",
                "m0123",
                12,
                "abababababababababababababababababababababababababababababababab",
                frozen_at=1700000000.5,
            )
        ],
        wire.MigrationCommitReply: [wire.MigrationCommitReply("r-34", 6161, 0.08)],
        wire.MigrationAbort: [wire.MigrationAbort("r-35", "m0123", reason="the dump failed")],
        wire.MigrationAbortReply: [wire.MigrationAbortReply("r-35", removed_container=True)],
        wire.ErrorReply: [
            wire.ErrorReply(
                request_id=None, code=wire.ErrorCode.MALFORMED, message="message is not valid JSON"
            ),
            wire.ErrorReply(
                request_id="r-6",
                code=wire.ErrorCode.INVALID_REQUEST,
                message="invalid Signal",
                details=["signal must be between 1 and 64"],
            ),
        ],
        wire.Event: [
            wire.Event(
                seq=1, timestamp=1700000000.25, type=wire.EventType.START_CONTAINER, id="web", pid=4242
            ),
            wire.Event(
                seq=2, timestamp=1700000001.0, type=wire.EventType.EXIT, id="web", pid=4242, status=137
            ),
            wire.Event(seq=3, timestamp=1700000002.0, type=wire.EventType.CHECKPOINT, id="web", pid=4242),
            wire.Event(seq=4, timestamp=1700000003.0, type=wire.EventType.OOM, id="web", pid=4242),
            wire.Event(seq=5, timestamp=1700000004.0, type=wire.EventType.START_PROCESS, id="web", pid=4343),
        ],
        wire.EventBatch: [
            wire.EventBatch(
                first_seq=41,
                timestamps=[1700000000.25, 1700000001.0, 1700000001.5],
                types=[wire.EventType.START_CONTAINER, wire.EventType.EXIT, wire.EventType.EXIT],
                ids=["web", "web", "db"],
                pids=[4242, 4242, 4343],
                statuses=[None, 137, None],
                reasons=[None, None, "exited while no reaper was its parent"],
            ),
            wire.EventBatch(first_seq=1, timestamps=[], types=[], ids=[], pids=[], statuses=[], reasons=[]),
        ],
    }
