"""Messages between the reaper and the API server over a SOCK_SEQPACKET socketpair.

One datagram is one JSON object, optionally carrying file descriptors (SCM_RIGHTS). SEQPACKET
keeps message boundaries and delivers fds with the message they belong to, so there is no length
prefix: ``pack`` and ``unpack`` are the whole encoding, used by the reaper's blocking socket
(``send``/``receive``) and by the server's trio socket (``reaper.link``) alike. Both processes are
ours and share a version, so this is not a public protocol. This module must stay importable by the
reaper process, which imports neither trio nor anything else that could fail in interesting ways.

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

import array
import json
import socket
from typing import Any

from containerd_actors.host.fds import close_quietly

#: Big enough for any message here; fds per message stay far below the kernel's SCM_MAX_FD (253).
MAX_MESSAGE = 64 << 10
MAX_FDS = 16
#: The fd number the reaper hands the server its end of the socketpair on.
SERVER_FD = 3

_FD_SIZE = array.array("i").itemsize
#: Room for the fds of one message in ``recvmsg``'s ancillary buffer.
ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS * _FD_SIZE)
#: Received fds are close-on-exec from the moment they arrive: both processes start children
#: (the reaper the server, the server runc) that must not inherit another container's pipe ends.
RECEIVE_FLAGS = socket.MSG_CMSG_CLOEXEC

Message = dict[str, Any]
#: What ``sendmsg`` takes after the socket: the datagram's buffers and its ancillary data.
Packed = tuple[list[bytes], list[tuple[int, int, bytes]]]


#: Made once: ``json.dumps`` with options builds an encoder per message.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def pack(message: Message, fds: list[int] | None = None) -> Packed:
    """The arguments of ``sendmsg`` for one message and the fds it carries."""
    data = _ENCODER.encode(message).encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    return [data], ancillary


def unpack(data: bytes, ancillary: list[tuple[int, int, bytes]]) -> tuple[Message, list[int]] | None:
    """One message and its fds from what ``recvmsg`` returned; None when the peer has gone."""
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - (len(payload) % _FD_SIZE)])
            fds.extend(received)
    if not data:
        close_quietly(*fds)
        return None
    return json.loads(data), fds


def send(sock: socket.socket, message: Message, fds: list[int] | None = None) -> None:
    """Send on a blocking or non-blocking stdlib socket (the reaper's end)."""
    sock.sendmsg(*pack(message, fds))


def receive(sock: socket.socket) -> tuple[Message, list[int]] | None:
    """Receive from a stdlib socket (the reaper's end); None when the peer has gone."""
    data, ancillary, _flags, _address = sock.recvmsg(MAX_MESSAGE, ANCILLARY_SPACE, RECEIVE_FLAGS)
    return unpack(data, ancillary)
