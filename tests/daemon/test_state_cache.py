"""The State of every container is encoded once and kept (``api.StateCache``) until a supervisor
report changes it: each change must show in the very next State, and the bytes must be those the
codec writes for a fresh reply."""

from __future__ import annotations

import signal
from pathlib import Path

from support.actors import Harness, write_bundle

from containerd_actors import protocol as wire
from containerd_actors.daemon.api import StateCache
from containerd_actors.protocol import EventType

MACHINE = wire.MachineInfo("d", 2, 1 << 30)


class Lister:
    """What the API server does for ``actr containers``: ask the supervisor, answer from the cache."""

    def __init__(self, harness: Harness) -> None:
        self._harness = harness
        self._cache = StateCache(MACHINE)
        self._asked = 0
        self.last: list[wire.ContainerInfo] | None = None

    async def state(self) -> list[tuple[str, str, list[int]]]:
        """(id, status, pids) of each container, read back from the bytes the client would get."""
        self._asked += 1
        request_id = f"r{self._asked}"
        containers = await self._harness.ask(wire.State(request_id=request_id))
        data = self._cache.reply(request_id, containers).data
        assert data == wire.encode_reply(wire.StateReply(request_id, containers, MACHINE))
        reply = wire.decode_reply(data)
        assert isinstance(reply, wire.StateReply) and reply.request_id == request_id
        self.last = containers
        return [(c.id, c.status, [p.pid for p in c.processes]) for c in reply.containers]


async def exited(harness: Harness, pid: int) -> None:
    """Until the exit of ``pid`` is published (its report reached the supervisor before it)."""
    while (event := await harness.next_event()).type != EventType.EXIT or event.pid != pid:
        pass


def create(id: str, bundle: Path) -> wire.CreateContainer:
    return wire.CreateContainer(request_id="r", id=id, bundle=str(bundle))


async def test_every_change_shows_in_the_next_state(harness: Harness, tmp_path: Path) -> None:
    lister = Lister(harness)
    assert await lister.state() == []
    c1 = await harness.ask(create("c1", write_bundle(tmp_path / "b1", "sleep", "100")))
    assert await lister.state() == [("c1", "running", [c1])]
    unchanged = lister.last
    assert await lister.state() == [("c1", "running", [c1])]
    assert lister.last is unchanged  # nothing happened: the same list, its encoding kept

    c2 = await harness.ask(create("c2", write_bundle(tmp_path / "b2", "sleep", "100")))
    assert await lister.state() == [("c1", "running", [c1]), ("c2", "running", [c2])]

    await harness.ask(wire.UpdateContainer(request_id="r", id="c1", status="paused"))
    assert await lister.state() == [("c1", "paused", [c1]), ("c2", "running", [c2])]
    await harness.ask(wire.UpdateContainer(request_id="r", id="c1", status="running"))
    assert await lister.state() == [("c1", "running", [c1]), ("c2", "running", [c2])]

    started = await harness.ask(wire.AddProcess(request_id="r", id="c2", args=["sleep", "100"]))
    assert await lister.state() == [("c1", "running", [c1]), ("c2", "running", [c2, started])]
    await harness.ask(wire.Signal(request_id="r", id="c2", pid=started, signal=signal.SIGKILL))
    await exited(harness, started)
    assert await lister.state() == [("c1", "running", [c1]), ("c2", "running", [c2])]

    await harness.ask(wire.Signal(request_id="r", id="c1", signal=signal.SIGKILL))
    await exited(harness, c1)
    assert await lister.state() == [("c2", "running", [c2])]


def test_the_cached_bytes_are_the_codecs_for_any_request_id() -> None:
    user = wire.User(0, 0)
    containers = [
        wire.ContainerInfo(
            "c1", "/b", "running", 7, [wire.ProcessInfo(7, ["sh", '"é\\'], ["A=\x01"], "/", user)]
        )
    ]
    cache = StateCache(MACHINE)
    for request_id in ["", "plain", 'quote"back\\slash', "ünï\u2028", "\x00nul"]:
        expected = wire.encode_reply(wire.StateReply(request_id, containers, MACHINE))
        assert cache.reply(request_id, containers).data == expected
