"""The one framing of the reaper socket, seen from both ends: the reaper's blocking socket and the
API server's trio socket (``ReaperLink``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from containerd_actors.reaper import wire
from containerd_actors.reaper.link import ReaperLink


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    reaper_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        yield reaper_end, server_end
    finally:
        reaper_end.close()
        server_end.close()


def test_a_message_and_its_fds_arrive_close_on_exec(socket_pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = socket_pair
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    try:
        wire.send(sender, {"op": "keep", "key": "c1"}, [write_end])
        received = wire.receive(receiver)
        assert received is not None
        message, fds = received
        assert message == {"op": "keep", "key": "c1"} and len(fds) == 1
        # A child started after this (the server, or runc) must not inherit another container's pipe end.
        assert not os.get_inheritable(fds[0])
        os.write(fds[0], b"ok")
        assert os.read(read_end, 2) == b"ok"
        os.close(fds[0])
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_closed_peer_reads_as_none(socket_pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = socket_pair
    sender.close()
    assert wire.receive(receiver) is None


async def test_the_link_speaks_the_reapers_framing(socket_pair: tuple[socket.socket, socket.socket]) -> None:
    reaper_end, server_end = socket_pair
    read_end, write_end = os.pipe()
    try:
        wire.send(reaper_end, {"op": "kept", "key": "c1"}, [write_end])
        wire.send(reaper_end, {"op": "exit", "pid": 4242, "status": 137, "time": 0.0})
        wire.send(reaper_end, {"op": "ready"})
        link = ReaperLink(server_end)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await nursery.start(link.run)  # started once the replay is complete
                assert list(link.kept) == ["c1"] and not os.get_inheritable(link.kept["c1"][0])
                assert link.exited_while_away(4242) == 137
                await link.keep("c2", [read_end])
                await link.acknowledge(4242)
                nursery.cancel_scope.cancel()
        kept = wire.receive(reaper_end)
        assert kept is not None and kept[0] == {"op": "keep", "key": "c2"} and len(kept[1]) == 1
        assert wire.receive(reaper_end) == ({"op": "ack", "pids": [4242]}, [])
        assert link.exited_while_away(4242) is None
        os.close(kept[1][0])
        os.close(link.kept["c1"][0])
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_a_process_started_here_waits_for_the_reapers_report(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    """``started_here``: the reaper is its parent whatever /proc says (no look-up per start); here
    /proc names this test as the parent, which without the flag reads as adopted elsewhere."""
    reaper_end, server_end = socket_pair
    wire.send(reaper_end, {"op": "ready"})
    link = ReaperLink(server_end)
    child = subprocess.Popen(["sleep", "30"])
    statuses: list[int | None] = []
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await nursery.start(link.run)
                done = trio.Event()

                async def wait() -> None:
                    statuses.append(await link.wait_for_exit(-1, child.pid, started_here=True))
                    done.set()

                nursery.start_soon(wait)
                await trio.testing.wait_all_tasks_blocked()
                assert statuses == []  # waiting for the reaper, not answered from /proc
                wire.send(reaper_end, {"op": "exit", "pid": child.pid, "status": 3, "time": 0.0})
                await done.wait()
                nursery.cancel_scope.cancel()
        assert statuses == [3]
    finally:
        child.kill()
        child.wait()


def test_the_reaper_process_stays_light() -> None:
    """The reaper outlives every server crash; it must not load what could fail in interesting ways."""
    probe = (
        "import sys, containerd_actors.reaper.process\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'trio', 'pynng', 'cattrs'})))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
