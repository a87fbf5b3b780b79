"""Messages between the reaper and the API server over a SOCK_SEQPACKET socketpair.

One datagram is one JSON object, optionally carrying file descriptors (SCM_RIGHTS). SEQPACKET
keeps message boundaries and delivers fds with the message they belong to, so neither side needs
framing code. Both processes are ours and share a version, so this is not a public protocol.

Server to reaper:
- ``{"op": "keep", "key": K}`` + fds: hold these pipe ends for a container (``K`` is its id).
- ``{"op": "drop", "key": K}``: the container is gone; close what is held for it.
- ``{"op": "ack", "pids": [..]}``: these exits are published; forget them.
- ``{"op": "serving"}``: the server is up; from now on a crash means "restart it".
Reaper to server:
- ``{"op": "kept", "key": K}`` + fds: sent for every held key right after the server connects.
- ``{"op": "exit", "pid": P, "status": S, "time": T}``: a child (an orphaned container process) exited.
- ``{"op": "ready"}``: the initial ``kept``/``exit`` replay is complete.
"""

from __future__ import annotations

import json
import socket
from typing import Any

#: Big enough for any message here; fds per message stay far below the kernel's SCM_MAX_FD (253).
MAX_MESSAGE = 64 << 10
MAX_FDS = 16
#: The fd number the reaper hands the server its end of the socketpair on.
SERVER_FD = 3


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """One message and its fds; None when the peer has gone."""
    data, fds, _flags, _address = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data:
        for fd in fds:
            _close(fd)
        return None
    return json.loads(data), list(fds)


def _close(fd: int) -> None:
    import os

    try:
        os.close(fd)
    except OSError:
        pass
