"""The shortcuts from the API server to an open stdin port and to an output view (``container.routes``).

Real container actors under the real supervisor with a fake runc (``support.actors``). ``routed``
does what the API server's WriteInput handler does first; whatever it does not take goes the long
way (``harness.ask``, through the supervisor), whose answers must be those it always gave.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
from support.actors import Harness, running, write_bundle

from containerd_actors import protocol as wire
from containerd_actors.daemon.api import LOCAL_CALLER, ApiServer
from containerd_actors.daemon.config import DaemonConfig
from containerd_actors.daemon.container.stdio import OutputView
from containerd_actors.daemon.faults import Fault, FaultHook
from containerd_actors.daemon.mailbox import Answer, Ask, CommandError
from containerd_actors.protocol import ErrorCode, EventType

NOT_ROUTED = object()


def write(id: str, data: bytes, pid: int = 0, close: bool = False) -> wire.WriteInput:
    return wire.WriteInput(request_id="r", id=id, pid=pid, data=data, close=close)


async def routed(harness: Harness, request: wire.WriteInput | wire.ResizeTerminal) -> object:
    """The answer of the port the routes hand ``request`` to, or NOT_ROUTED."""
    reply_send, reply_receive = trio.open_memory_channel[Answer](1)
    if not harness.supervisor.process_routes.offer(Ask(request, reply_send)):
        return NOT_ROUTED
    with trio.fail_after(5):
        return (await reply_receive.receive()).unwrap()


async def output_until(view: OutputView, expected: bytes) -> bytes:
    seen = b""
    with trio.fail_after(5):
        while expected not in seen:
            chunk = await view.read(len(seen), 0, wait=1.0, max_bytes=1 << 16)
            seen += chunk.stdout
    return seen


async def test_writes_to_an_open_stdin_skip_the_supervisor_and_arrive_in_order(
    harness: Harness, tmp_path: Path
) -> None:
    pid = await harness.ask(
        wire.CreateContainer(request_id="r", id="c1", bundle=str(write_bundle(tmp_path / "b", "cat")))
    )
    await harness.next_event()
    assert await routed(harness, write("c1", b"one\n")) == 4
    assert await routed(harness, write("c1", b"two\n", pid=pid)) == 4  # the init by its own pid too
    assert await harness.ask(write("c1", b"three\n")) == 6  # the long way reaches the same port
    view = await harness.ask(wire.ReadOutput(request_id="r", id="c1"))
    assert await output_until(view, b"three\n") == b"one\ntwo\nthree\n"
    # No terminal: a resize goes the long way, which refuses it as before.
    assert await routed(harness, wire.ResizeTerminal(request_id="r", id="c1", rows=1, cols=1)) is NOT_ROUTED
    # Unknown ids and pids are not routed; the long way says why.
    assert await routed(harness, write("nope", b"x")) is NOT_ROUTED
    assert await routed(harness, write("c1", b"x", pid=pid + 100000)) is NOT_ROUTED
    with pytest.raises(CommandError) as failure:
        await harness.ask(write("nope", b"x"))
    assert failure.value.code == ErrorCode.NOT_FOUND


async def test_a_closed_stdin_leaves_the_routes_and_is_refused_the_long_way(
    harness: Harness, tmp_path: Path
) -> None:
    await harness.ask(
        wire.CreateContainer(request_id="r", id="c1", bundle=str(write_bundle(tmp_path / "b", "cat")))
    )
    await harness.next_event()
    assert await routed(harness, write("c1", b"last\n", close=True)) == 5
    assert await routed(harness, write("c1", b"more")) is NOT_ROUTED
    with pytest.raises(CommandError) as failure:
        await harness.ask(write("c1", b"more"))
    assert failure.value.code == ErrorCode.INVALID_STATE
    # cat ends at the EOF: with the container gone, nothing of it is left in the routes.
    assert (await harness.next_event()).type == EventType.EXIT
    assert len(harness.supervisor.process_routes) == 0


async def test_an_exited_exec_leaves_the_routes(harness: Harness, tmp_path: Path) -> None:
    await harness.ask(
        wire.CreateContainer(request_id="r", id="c1", bundle=str(write_bundle(tmp_path / "b", "cat")))
    )
    await harness.next_event()
    exec_pid = await harness.ask(wire.AddProcess(request_id="r", id="c1", args=["cat"]))
    await harness.next_event()
    assert await routed(harness, write("c1", b"x", pid=exec_pid)) == 1
    await harness.ask(wire.Signal(request_id="r", id="c1", pid=exec_pid, signal=signal.SIGKILL))
    assert (await harness.next_event()).type == EventType.EXIT
    assert await routed(harness, write("c1", b"x", pid=exec_pid)) is NOT_ROUTED
    with pytest.raises(CommandError) as failure:
        await harness.ask(write("c1", b"x", pid=exec_pid))
    assert failure.value.code == ErrorCode.INVALID_STATE
    assert await routed(harness, write("c1", b"init\n")) == 5


async def test_after_a_crash_the_route_follows_the_successor(tmp_path: Path) -> None:
    faults = FaultHook([Fault("container=c1", "Stats", 1)])
    async with running(Harness(tmp_path / "state", faults=faults)) as harness:
        bundle = write_bundle(tmp_path / "b", "cat")
        await harness.ask(wire.CreateContainer(request_id="r", id="c1", bundle=str(bundle)))
        await harness.next_event()
        assert await routed(harness, write("c1", b"before\n")) == 7
        first_port = harness.supervisor.process_routes._ports[("c1", 0)]
        with pytest.raises(CommandError):
            await harness.ask(wire.Stats(request_id="r", id="c1"))  # crashes the actor
        # From the crash on, the dead actor's port takes nothing (its nursery is cancelled).
        assert await routed(harness, write("c1", b"x")) is NOT_ROUTED or (
            harness.supervisor.process_routes._ports[("c1", 0)] is not first_port
        )
        assert (await harness.next_event()).type == EventType.ACTOR_RESTART
        # The successor's port, once it owns the process; until then the long way serves.
        assert await harness.ask(write("c1", b"during\n")) == 7
        assert await routed(harness, write("c1", b"after\n")) == 6
        assert harness.supervisor.process_routes._ports[("c1", 0)] is not first_port
        view = await harness.ask(wire.ReadOutput(request_id="r", id="c1"))
        assert await output_until(view, b"after\n") == b"before\nduring\nafter\n"
        await harness.ask(wire.Signal(request_id="r", id="c1", signal=signal.SIGKILL))
        assert (await harness.next_event()).type == EventType.EXIT
        assert len(harness.supervisor.process_routes) == 0


async def test_a_living_actors_views_are_routed_and_an_exited_containers_come_from_the_supervisor(
    harness: Harness, tmp_path: Path
) -> None:
    routes = harness.supervisor.process_routes
    bundle = write_bundle(tmp_path / "b", "cat")
    pid = await harness.ask(wire.CreateContainer(request_id="r", id="c1", bundle=str(bundle)))
    await harness.next_event()
    exec_pid = await harness.ask(wire.AddProcess(request_id="r", id="c1", args=["cat"]))
    await harness.next_event()
    for asked in (0, pid, exec_pid):
        assert routes.view("c1", asked) is await harness.ask(
            wire.ReadOutput(request_id="r", id="c1", pid=asked)
        )
    assert routes.view("c1", exec_pid + 100000) is None and routes.view("nope", 0) is None
    # An exited exec's output stays readable, from the same view, while its container runs.
    await harness.ask(wire.Signal(request_id="r", id="c1", pid=exec_pid, signal=signal.SIGKILL))
    assert (await harness.next_event()).type == EventType.EXIT
    assert routes.view("c1", exec_pid) is await harness.ask(
        wire.ReadOutput(request_id="r", id="c1", pid=exec_pid)
    )
    assert await routed(harness, write("c1", b"bye\n")) == 4
    init_view = routes.view("c1", 0)
    assert init_view is not None
    # The echo is in the log before the kill: a SIGKILL sent at once could end ``cat`` before it
    # read the line, and the supervisor's view below would then wait for bytes that never come.
    assert await output_until(init_view, b"bye\n") == b"bye\n"
    await harness.ask(wire.Signal(request_id="r", id="c1", signal=signal.SIGKILL))
    assert (await harness.next_event()).type == EventType.EXIT
    assert routes.view("c1", 0) is None and len(routes) == 0
    kept = await harness.ask(wire.ReadOutput(request_id="r", id="c1"))
    assert await output_until(kept, b"bye\n") == b"bye\n"


async def test_an_addprocess_goes_straight_to_the_living_actor_and_the_long_way_otherwise(
    harness: Harness, tmp_path: Path
) -> None:
    """The API server's AddProcess handler: into the mailbox of the actor the routes name;
    through the supervisor (which gives the answers it always gave) when they name none."""
    config = DaemonConfig(
        id="test",
        debug=False,
        state_dir=tmp_path / "api",
        concurrency=1,
        metrics_interval=60.0,
        listen=f"ipc://{tmp_path}/api.sock",
        events_address=f"ipc://{tmp_path}/events.sock",
        oom_notify=False,
    )
    through_supervisor: list[object] = []
    spy_send, spy_receive = trio.open_memory_channel[object](10)

    async def relay() -> None:
        async for message in spy_receive:
            if isinstance(message, Ask):
                through_supervisor.append(message.request)
            await harness.supervisor.mailbox.send(message)

    routes = harness.supervisor.process_routes
    api = ApiServer(
        config,
        spy_send,
        trio.open_memory_channel[object](1)[0],
        trio.open_memory_channel[object](1)[0],
        process_routes=routes,
    )
    add = api.handlers[wire.AddProcess]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay)
        assert routes.actor("c1") is None
        with pytest.raises(CommandError) as failure:
            await add(wire.AddProcess(request_id="r", id="c1", args=["cat"]), LOCAL_CALLER)
        assert failure.value.code == ErrorCode.NOT_FOUND and len(through_supervisor) == 1
        bundle = write_bundle(tmp_path / "b", "cat")
        await harness.ask(wire.CreateContainer(request_id="r", id="c1", bundle=str(bundle)))
        await harness.next_event()
        assert routes.actor("c1") is not None
        reply = await add(wire.AddProcess(request_id="r", id="c1", args=["cat"]), LOCAL_CALLER)
        assert len(through_supervisor) == 1  # not this one
        assert (await harness.next_event()).type == EventType.START_PROCESS
        listed = await harness.ask(wire.State(request_id="r"))
        assert reply.pid in [process.pid for process in listed[0].processes]
        for pid in (reply.pid, listed[0].pid):
            await harness.ask(wire.Signal(request_id="r", id="c1", pid=pid, signal=signal.SIGKILL))
            assert (await harness.next_event()).type == EventType.EXIT
        assert routes.actor("c1") is None
        with pytest.raises(CommandError) as failure:
            await add(wire.AddProcess(request_id="r", id="c1", args=["cat"]), LOCAL_CALLER)
        assert failure.value.code == ErrorCode.NOT_FOUND and len(through_supervisor) == 2
        nursery.cancel_scope.cancel()
