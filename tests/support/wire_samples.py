"""One hand-written instance (or more) of every wire class, shared by the codec and schema tests.

Built lazily inside a function, so that a field added to a message fails the tests that use these
samples with a clear TypeError, instead of breaking test collection.
"""

from __future__ import annotations

from typing import Any

from containerd_actors.protocol import (
    AddProcess,
    AddProcessReply,
    CgroupStats,
    Checkpoint,
    ContainerInfo,
    ContainerStats,
    CreateCheckpoint,
    CreateCheckpointReply,
    CreateContainer,
    CreateContainerReply,
    DeleteCheckpoint,
    DeleteCheckpointReply,
    ErrorCode,
    ErrorReply,
    Event,
    EventBatch,
    Events,
    EventsReply,
    EventType,
    ListCheckpoints,
    ListCheckpointsReply,
    MachineInfo,
    Metrics,
    MetricsReply,
    MetricsSnapshot,
    Ping,
    PingReply,
    ProcessInfo,
    ReadOutput,
    ReadOutputReply,
    ResizeTerminal,
    ResizeTerminalReply,
    Signal,
    SignalReply,
    State,
    StateReply,
    Stats,
    StatsReply,
    UpdateContainer,
    UpdateContainerReply,
    User,
    WriteInput,
    WriteInputReply,
)
from containerd_actors.protocol.stats import (
    BlkioEntry,
    BlkioStats,
    CounterSnapshot,
    CpuStats,
    CpuUsage,
    GaugeSnapshot,
    HugetlbStats,
    MemoryData,
    MemoryStats,
    PidsStats,
    TimerSnapshot,
)


def wire_samples() -> dict[type, list[Any]]:
    """Hand-written instances of every wire class (built lazily: a field added to a message
    fails the tests that use it, with a clear TypeError, instead of breaking collection).

    tests/unit/test_schemas.py and tests/unit/test_codec.py both check that every wire class has one."""
    process = ProcessInfo(
        pid=4242,
        args=["/bin/sh", "-c", "sleep 1"],
        env=["PATH=/usr/bin"],
        cwd="/",
        user=User(uid=1000, gid=1000, additional_gids=[10, 20]),
        terminal=True,
    )
    checkpoint = Checkpoint(
        name="before-upgrade", tcp=True, unix_sockets=False, shell=False, exit=False, created=1700000000.5
    )
    full_stats = ContainerStats(
        id="web",
        timestamp=1700000000.5,
        cgroup=CgroupStats(
            cpu=CpuStats(usage=CpuUsage(total=10, per_cpu=[4, 6], kernel=3, user=7)),
            memory=MemoryStats(usage=MemoryData(usage=1 << 20, max_usage=2 << 20, failcnt=0, limit=16 << 20)),
            blkio=BlkioStats(
                io_service_bytes_recursive=[BlkioEntry(major=8, minor=0, op="Read", value=4096)]
            ),
            pids=PidsStats(current=2, limit=0),
            hugetlb={"2MB": HugetlbStats(usage=0)},
        ),
    )
    return {
        Ping: [Ping(request_id="r-1")],
        CreateContainer: [
            CreateContainer(request_id="r-2", id="web.1_a-b", bundle="/srv/bundles/web"),
            CreateContainer(
                request_id="r-2", id="clone", bundle="/srv/bundles/web", checkpoint="before-upgrade"
            ),
        ],
        Signal: [Signal(request_id="r-3", id="web"), Signal(request_id="", id="a" * 128, pid=7, signal=64)],
        State: [State(request_id="r-4")],
        PingReply: [
            PingReply(
                request_id="r-1",
                daemon_id="daemon-1",
                version="0.1.0",
                events_address="ipc:///run/containerd-actors/events.sock",
                events_subscribers=2,
                last_event_seq=41,
                events_batch_address="ipc:///run/containerd-actors/events-batch.sock",
            ),
            PingReply(
                request_id="r-1",
                daemon_id="daemon-1",
                version="0.1.0",
                events_address="tcp://127.0.0.1:7001",
                events_subscribers=0,
                last_event_seq=0,
            ),
        ],
        CreateContainerReply: [CreateContainerReply(request_id="r-2", pid=4242)],
        SignalReply: [SignalReply(request_id="r-3")],
        StateReply: [
            StateReply(
                request_id="r-4", containers=[], machine=MachineInfo(id="host", cpus=8, memory=1 << 34)
            ),
            StateReply(
                request_id="r-5",
                containers=[
                    ContainerInfo(
                        id="web", bundle="/srv/bundles/web", status="running", pid=4242, processes=[process]
                    ),
                    ContainerInfo(id="db", bundle="/srv/bundles/db", status="stopped", pid=0),
                ],
                machine=MachineInfo(id="host", cpus=1, memory=0),
            ),
        ],
        CreateCheckpoint: [
            CreateCheckpoint(request_id="r-7", id="web", name="before-upgrade"),
            CreateCheckpoint(
                request_id="r-8", id="web", name="tcp.1", tcp=True, unix_sockets=True, shell=True, exit=True
            ),
        ],
        ListCheckpoints: [ListCheckpoints(request_id="r-9", id="web")],
        DeleteCheckpoint: [DeleteCheckpoint(request_id="r-10", id="web", name="before-upgrade")],
        CreateCheckpointReply: [CreateCheckpointReply(request_id="r-7", checkpoint=checkpoint)],
        ListCheckpointsReply: [
            ListCheckpointsReply(request_id="r-9", checkpoints=[]),
            ListCheckpointsReply(request_id="r-9", checkpoints=[checkpoint, checkpoint]),
        ],
        DeleteCheckpointReply: [DeleteCheckpointReply(request_id="r-10")],
        Events: [
            Events(request_id="r-15"),
            Events(request_id="r-16", from_seq=5, since=1700000000.25, limit=10),
        ],
        EventsReply: [
            EventsReply(request_id="r-15", events=[], next_seq=1, last_seq=0, first_available_seq=1),
            EventsReply(
                request_id="r-16",
                events=[
                    Event(seq=5, timestamp=1700000000.25, type=EventType.START_CONTAINER, id="web", pid=42),
                    Event(seq=7, timestamp=1700000001.0, type=EventType.EXIT, id="web", pid=42, status=0),
                    Event(
                        seq=8,
                        timestamp=1700000002.0,
                        type=EventType.EXIT,
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
        UpdateContainer: [
            UpdateContainer(request_id="r-11", id="web", status="paused"),
            UpdateContainer(request_id="r-12", id="web", status="running"),
        ],
        Stats: [Stats(request_id="r-13", id="web")],
        Metrics: [Metrics(request_id="r-14")],
        UpdateContainerReply: [UpdateContainerReply(request_id="r-11")],
        StatsReply: [
            StatsReply(
                request_id="r-13", stats=ContainerStats(id="web", timestamp=1.5, cgroup=CgroupStats())
            ),
            StatsReply(request_id="r-13", stats=full_stats),
        ],
        MetricsReply: [
            MetricsReply(request_id="r-14", metrics=MetricsSnapshot(timestamp=2.5)),
            MetricsReply(
                request_id="r-14",
                metrics=MetricsSnapshot(
                    timestamp=2.5,
                    timers=[TimerSnapshot(name="container-start-time", count=3, min=1, max=9, mean=4.5)],
                    counters=[CounterSnapshot(name="events", count=7)],
                    gauges=[GaugeSnapshot(name="fds", value=42)],
                ),
            ),
        ],
        AddProcess: [
            AddProcess(request_id="r-15", id="web", args=["echo", "hi"]),
            AddProcess(
                request_id="r-16",
                id="web",
                args=["sh"],
                env=["TERM=xterm", "A="],
                cwd="/tmp",
                user=User(uid=1000, gid=1000, additional_gids=[10]),
                terminal=True,
                rows=40,
                cols=120,
            ),
        ],
        AddProcessReply: [AddProcessReply(request_id="r-15", pid=4343)],
        ReadOutput: [
            ReadOutput(request_id="r-17", id="web"),
            ReadOutput(
                request_id="r-18",
                id="web",
                pid=4343,
                stdout_offset=1 << 20,
                stderr_offset=7,
                wait=5.0,
                max_bytes=65536,
            ),
            ReadOutput(request_id="r-19", id="web", tail=10),
        ],
        ReadOutputReply: [
            ReadOutputReply(
                request_id="r-17",
                stdout="aGkK",
                stderr="",
                stdout_offset=0,
                stderr_offset=0,
                next_stdout_offset=3,
                next_stderr_offset=0,
            ),
            ReadOutputReply(
                request_id="r-18",
                stdout="",
                stderr="",
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
        WriteInput: [
            WriteInput(request_id="r-20", id="web", data="aGkK"),
            WriteInput(request_id="r-21", id="web", pid=4343, close=True),
        ],
        WriteInputReply: [WriteInputReply(request_id="r-20", written=3)],
        ResizeTerminal: [ResizeTerminal(request_id="r-22", id="web", pid=4343, rows=50, cols=200)],
        ResizeTerminalReply: [ResizeTerminalReply(request_id="r-22")],
        ErrorReply: [
            ErrorReply(request_id=None, code=ErrorCode.MALFORMED, message="message is not valid JSON"),
            ErrorReply(
                request_id="r-6",
                code=ErrorCode.INVALID_REQUEST,
                message="invalid Signal",
                details=["signal must be between 1 and 64"],
            ),
        ],
        Event: [
            Event(seq=1, timestamp=1700000000.25, type=EventType.START_CONTAINER, id="web", pid=4242),
            Event(seq=2, timestamp=1700000001.0, type=EventType.EXIT, id="web", pid=4242, status=137),
            Event(seq=3, timestamp=1700000002.0, type=EventType.CHECKPOINT, id="web", pid=4242),
            Event(seq=4, timestamp=1700000003.0, type=EventType.OOM, id="web", pid=4242),
            Event(seq=5, timestamp=1700000004.0, type=EventType.START_PROCESS, id="web", pid=4343),
        ],
        EventBatch: [
            EventBatch(
                first_seq=41,
                timestamps=[1700000000.25, 1700000001.0, 1700000001.5],
                types=[EventType.START_CONTAINER, EventType.EXIT, EventType.EXIT],
                ids=["web", "web", "db"],
                pids=[4242, 4242, 4343],
                statuses=[None, 137, None],
                reasons=[None, None, "exited while no reaper was its parent"],
            ),
            EventBatch(first_seq=1, timestamps=[], types=[], ids=[], pids=[], statuses=[], reasons=[]),
        ],
    }
