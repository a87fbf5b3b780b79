"""Replies the API server sends as they are, already encoded by whoever made them.

Why a module of its own: the server's workers send them (``api``), and what makes them lives
elsewhere (the kept State encoding in ``api``, the ReadOutput replies in ``output_reads``);
both sides need the two types without importing each other.
"""

from __future__ import annotations

import attrs

from containerd_actors.transport import nng


@attrs.frozen
class Framed:
    """A reply already encoded as a binary frame in an nng message, its bytes read into place
    (``ReadOutput.binary``); whoever holds it sends it or closes it."""

    message: nng.OutgoingMessage


@attrs.frozen
class Encoded:
    """A reply already encoded as JSON (``StateCache``, a ``ReadOutput.spans`` reply): sent as it is."""

    data: bytes
