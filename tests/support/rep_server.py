"""A Rep0 in a thread that answers the way a test says: a daemon stand-in for the blocking client,
which must be driven from a thread of its own (it blocks, and has no trio loop to share)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pynng


@contextmanager
def server(address: str, answer: Callable[[pynng.Rep0, bytes], None]) -> Iterator[list[bytes]]:
    """A Rep0 on ``address`` calling ``answer`` for each request; yields the requests it got."""
    received: list[bytes] = []
    socket = pynng.Rep0(listen=address, recv_timeout=100)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                request = socket.recv()
            except pynng.Timeout:
                continue
            except pynng.Closed:
                return
            received.append(request)
            answer(socket, request)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        # The thread leaves its recv within recv_timeout: closing the socket under a recv in another
        # thread can abort the whole process inside nng (seen as "Fatal Python error: Aborted").
        stop.set()
        thread.join(5)
        socket.close()
