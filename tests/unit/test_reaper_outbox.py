"""The reaper never blocks on a server that does not read: it must keep reaping meanwhile."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from containerd_actors.reaper import wire
from containerd_actors.reaper.process import Reaper


def test_messages_to_a_stalled_server_queue_up_and_arrive_in_order(tmp_path: Path) -> None:
    reaper = Reaper(["-c", "pass"], tmp_path, daemon_argv=[], lock_fd=-1)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    reaper.server_sock = ours
    read_end, write_end = os.pipe()
    try:
        count = 20_000  # far more than the socket buffer holds
        for pid in range(count):
            reaper._send({"op": "exit", "pid": pid, "status": 0, "time": 0.0})  # returns at once
        reaper._send({"op": "kept", "key": "c1"}, [write_end])
        assert reaper.outbox, "the socket buffer should have filled up"
        os.close(write_end)  # the queued message holds its own duplicate of the fd
        received = []
        theirs.settimeout(5)
        while len(received) < count + 1:
            reaper._flush()
            message, fds = wire.receive(theirs)
            received.append((message, fds))
        assert [m["pid"] for m, _ in received[:count]] == list(range(count))
        kept_message, kept_fds = received[-1]
        assert kept_message == {"op": "kept", "key": "c1"} and len(kept_fds) == 1
        os.write(kept_fds[0], b"ok")  # the fd arrived alive, though the reaper's copy was closed
        assert os.read(read_end, 2) == b"ok"
        os.close(kept_fds[0])
        assert not reaper.outbox
    finally:
        reaper._disconnect()
        theirs.close()
        os.close(read_end)
