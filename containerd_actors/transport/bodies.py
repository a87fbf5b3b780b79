"""The body of a received nng message: copied when small, a view that owns the message when big.

Why: the bytes of stdin, process output and checkpoint chunks cross in binary frames of a MiB
each; copying each out of nng's message (and freeing it) cost a MiB of memmove per MiB, in the
daemon and in the client alike. A big frame's body is instead handed out as a read-only view
whose owner frees the message when the last view of it (or slice of one) is gone: freed exactly
once, by nobody else, and never while a view can still read it. Shared by the blocking client
(``blocking``, which must not import the pynng package) and ``nng``.
"""

from __future__ import annotations

from typing import Any

from containerd_actors.protocol.frames import MAGIC, is_frame
from containerd_actors.transport import memory
from containerd_actors.transport.bindings import ffi, lib

#: Bodies of binary frames this big or bigger are handed out as views rather than copied.
VIEW_FROM_BYTES = 64 << 10


def owned_body(message: Any) -> memoryview:
    """A read-only view of ``message``'s body that owns it: nng frees the message when the last
    view (or slice of one) is gone. The caller gives up ``message`` and must not free it."""
    length = lib.nng_msg_len(message)

    def free(_body: Any, message: Any = message) -> None:
        lib.nng_msg_free(message)

    owner = ffi.gc(ffi.cast("char *", lib.nng_msg_body(message)), free)
    return memoryview(ffi.buffer(owner, length)).toreadonly()


def body_of(message: Any) -> tuple[bytes | memoryview, bool]:
    """The body of a received message, and whether it now owns the message (``owned_body``): a
    copy for what is small or JSON (which callers parse as bytes), a view for a big frame."""
    length = lib.nng_msg_len(message)
    pointer = lib.nng_msg_body(message)
    if length >= VIEW_FROM_BYTES and is_frame(ffi.buffer(pointer, len(MAGIC))):
        memory.once()  # a stream of such frames: reuse freed buffers (see ``memory``)
        return owned_body(message), True
    return bytes(ffi.buffer(pointer, length)), False
