"""The base of both sides: an nng socket whose receives wait in trio's own epoll.

nng raises the socket's ``recv_fd`` in C while a message waits, without touching Python, so a task
parks on that descriptor with ``trio.lowlevel.wait_readable`` instead of an nng aio whose
completion would need an nng thread to take the GIL and post back into trio.
"""

from __future__ import annotations

import pynng
import trio

from containerd_actors.transport.closing import ClosedOnExit
from containerd_actors.transport.nng import closed_error


class PolledSocket(ClosedOnExit):
    """An nng socket whose receives wait on its ``recv_fd``; closing it wakes them."""

    def __init__(self, socket: pynng.Socket) -> None:
        self._socket = socket
        self._recv_fd = socket.recv_fd
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_readable(self) -> None:
        """Until nng raises ``recv_fd``; raises ``pynng.Closed`` once the socket is closed."""
        try:
            await trio.lowlevel.wait_readable(self._recv_fd)
        except trio.ClosedResourceError:
            raise closed_error() from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            trio.lowlevel.notify_closing(self._recv_fd)  # wake a receive parked on the descriptor
        except RuntimeError:
            pass  # not inside trio.run: nobody can be parked
        self._socket.close()
        self._after_close()

    def _after_close(self) -> None:
        """What a subclass frees once nng has closed the socket."""
