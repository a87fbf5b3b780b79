"""The sizes a message may have, in a module that imports nothing: a client dials with them
(nng's ``recv-size-max``) before attrs and the wire classes are imported (``client.early``).
``message_errors`` re-exports them, where the codec and the daemon have always found them."""

from __future__ import annotations

#: The daemon refuses larger JSON messages (and larger frames before protocol revision 6).
MAX_MESSAGE_BYTES = 1 << 20
#: From protocol revision 6 the daemon takes binary frames up to this: a WriteInput of 4 MiB,
#: since half of what the daemon spends on a WriteInput of 1 MiB is the request, not the bytes.
#: nng closes the pipe that sends a bigger message.
MAX_FRAME_BYTES = (4 << 20) + (64 << 10)
