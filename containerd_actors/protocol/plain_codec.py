"""A client's encoding of requests and decoding of replies without cattrs, for one-shot commands.

Why: cattrs (its import and the hooks it builds) is ~20 ms of a one-shot ``actr`` command. The
functions of ``plain_generated`` (replies) and ``plain_requests_generated`` (requests) are made
from the same attrs classes by the rules of ``codec``'s converter, and are sure of less: whenever
one is not (``plain_hooks.Unsure``, or any other error: a validator's, bad base64, a missing
field), the whole message goes to ``codec`` instead, which gives the value or the exact error it
always gave. So the converter stays the one source of
truth; here is only its common case, held to it by tests/unit/test_plain_codec.py.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
import attrs

from containerd_actors.protocol import frames
from containerd_actors.protocol.message_errors import TAG, note_unknown_fields
from containerd_actors.protocol.plain_generated import REPLIES
from containerd_actors.protocol.plain_requests import drop_later_defaults
from containerd_actors.protocol.plain_requests_generated import REQUESTS

if TYPE_CHECKING:
    # Not at run time: the unions are made on first use, with the migration types (``lazy``).
    from containerd_actors.protocol.replies import Reply
    from containerd_actors.protocol.requests import Request

#: The package of the wire types, whose requests ``REQUESTS`` knows by name.
_WIRE_PACKAGE = "containerd_actors.protocol."

#: Per message tag, its bytes fields that travel as blobs of a binary frame (``codec.BLOB_FIELDS``,
#: which a test compares with ``BLOB_FIELDS``). By name: a command that writes its requests with
#: ``plain_requests`` never defines the request classes (~20M instructions).
_BLOBS_BY_TAG = {"ReadOutputReply": ("stdout", "stderr"), "WriteInput": ("data",)}


def __getattr__(name: str) -> Any:
    """``BLOB_FIELDS``, by class as ``codec`` has it, made when asked (it needs the classes)."""
    if name != "BLOB_FIELDS":
        raise AttributeError(name)
    import containerd_actors.protocol as wire

    return {getattr(wire, tag): names for tag, names in _BLOBS_BY_TAG.items()}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def encode_request(request: Request, *, framed: bool = False) -> bytes:
    """As ``codec.encode_request``, the same bytes."""
    kind = type(request)
    unstructure = REQUESTS.get(kind.__name__) if kind.__module__.startswith(_WIRE_PACKAGE) else None
    names = _BLOBS_BY_TAG.get(kind.__name__) if framed and unstructure is not None else None
    try:
        if unstructure is None:
            raise LookupError(kind)
        # A framed message's bytes never meet the unstructure function (which would base64 them,
        # a MiB's worth of CPU per MiB, only for the text to be dropped): an empty value stands in.
        obj = unstructure(attrs.evolve(request, **dict.fromkeys(names, b"")) if names else request)
    except Exception:
        from containerd_actors.protocol import codec

        return codec.encode_request(request, framed=framed)
    drop_later_defaults(kind.__name__, obj)
    if names:
        blobs = [(name, getattr(request, name)) for name in names]
        for name in names:
            obj.pop(name, None)
        return frames.pack_frame(obj, blobs)
    return _dumps(obj)


def decode_reply(data: bytes | memoryview, *, views: bool = False) -> Reply:
    """As ``codec.decode_reply``: the same reply, or (from ``codec``) the same ``ProtocolError``.

    ``views``: a binary frame's blobs stay views of ``data`` rather than ``bytes`` copies (a
    follow's output, written out and dropped: a MiB of memmove per MiB saved). They compare equal
    to the same bytes and ``os.write`` takes them, but have no ``bytes`` methods (``decode``).
    """
    kept: dict[str, memoryview] = {}
    try:
        if frames.is_frame(data):
            obj, blobs = frames.unpack_frame(data)
            allowed = _BLOBS_BY_TAG.get(obj.get(TAG), ())
            if any(name not in allowed or name in obj for name in blobs):
                raise LookupError(sorted(blobs))
            if views:
                kept = blobs
                obj.update(dict.fromkeys(blobs, b""))
            else:
                obj.update(blobs)
        else:
            obj = json.loads(data)
        structure = REPLIES[obj[TAG]]
        reply = structure(obj)
    except Exception:
        from containerd_actors.protocol import codec

        return codec.decode_reply(data if isinstance(data, bytes) else bytes(data))
    note_unknown_fields(obj, type(reply))
    if kept:
        reply = attrs.evolve(reply, **kept)
    return reply
