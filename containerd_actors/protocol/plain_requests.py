"""A request written from its fields alone, before attrs and the wire classes are imported.

Why: ``actr containers exec`` waits for the daemon's ``runc exec`` (~20 ms), and before this it
could not send its AddProcess until attrs and the wire classes were defined (~20 ms more, on the
critical path). ``encode_fields`` writes the bytes that ``plain_codec.encode_request`` writes for
the same request, using only what ``plain_gen`` generated from the classes
(``plain_requests_generated``: the unstructure function, each field's validator, the later
fields), so the classes stay the one source of truth; the classes are then imported while the
daemon works.

It is sure of less than the classes: values of plain JSON types or bytes (base64, as in a JSON
request; never a binary frame), no nested record, defaults that are literals or new lists, and
every validator passing. Otherwise it returns None, and the caller builds the request as the
class, which gives the usual value or error.
tests/unit/test_plain_requests.py holds it to ``plain_codec``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from containerd_actors.protocol.plain_hooks import REQUIRED
from containerd_actors.protocol.plain_requests_generated import FIELDS, LATER_FIELDS, REQUESTS

_PLAIN = (str, int, bool, float, type(None), bytes, bytearray, memoryview)


class _Named:
    """What a validator is given as attrs' ``Attribute``: it reads only the name (``validators``)."""

    def __init__(self, name: str) -> None:
        self.name = name


def drop_later_defaults(tag: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Leave out the fields added after revision 1 that hold their defaults: an older daemon,
    strict about fields it does not know, then still takes the request (``codec`` does the same)."""
    for name, default in LATER_FIELDS.get(tag, ()):
        if obj.get(name, default) == default:
            obj.pop(name, None)
    return obj


def _plain(value: Any) -> bool:
    kind = type(value)
    if kind is list:
        return all(type(item) in (str, int) for item in value)
    return kind in _PLAIN


def encode_fields(tag: str, fields: dict[str, Any]) -> bytes | None:
    """The JSON request ``tag`` with ``fields`` (``request_id`` among them; a field left out takes
    its default), as ``plain_codec.encode_request`` writes it; None where that is not certain here."""
    spec = FIELDS.get(tag)
    if spec is None:
        return None
    values = {}
    try:
        for name, check, default in spec:
            if name in fields:
                value = fields[name]
            elif default is REQUIRED:
                return None
            else:
                value = default() if default is list or default is dict else default
            if not _plain(value):
                return None
            if check is not None:
                check(None, _Named(name), value)
            values[name] = value
        if any(name not in values for name in fields):
            return None  # a field the class does not have
        obj = REQUESTS[tag](SimpleNamespace(**values))
    except Exception:
        return None  # a validator's refusal, an unsure type: the class decides
    return json.dumps(drop_later_defaults(tag, obj), separators=(",", ":")).encode()
