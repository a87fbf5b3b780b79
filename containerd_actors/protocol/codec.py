"""The cattrs converter of the wire, and the framing of requests, replies and events.

Writers are strict and readers tolerant, so that the protocol can grow without breaking anyone:
- the daemon refuses a request with a field it does not know (``extra fields found``), so a
  client learns at once that the daemon is older than it expects;
- a client ignores fields of a reply or an event that it does not know, so a newer daemon can
  add fields without breaking older clients, foreign subscribers, or a journal written by it.
Both converters share the same hooks (strict types, tags); they differ only in extra keys.

Unions are tagged with ``"type"``. An unknown tag would raise a bare ``KeyError``, so the tag is
checked here first and every failure becomes a ``ProtocolError`` that the server can turn into an
``ErrorReply`` without guessing.

The converters are built at import, but the function that structures or unstructures each class is
generated on its first use (``_TaggedUnion``), not for every member of both unions up front as
cattrs' ``configure_tagged_union`` does: that took ~75 ms of every ``actr`` command, which needs
two or three classes. The daemon pays for all of them once, at start-up (``warm_up``).

One module (over 500 lines) on purpose: requests, replies, events and event batches share the one
converter and the one way a failure becomes a ``ProtocolError``; the plain codec and the schema
generator are held to this module by tests, which is simpler while it is the single source.
"""

from __future__ import annotations

import base64
import binascii
import json
import typing
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter
from cattrs.v import format_exception

from containerd_actors.protocol import frames
from containerd_actors.protocol.events import Event, EventBatch, event_topic
from containerd_actors.protocol.message_errors import (  # noqa: F401 - re-exported: the codec's names
    MAX_MESSAGE_BYTES,
    TAG,
    ProtocolError,
    note_unknown_fields,
)
from containerd_actors.protocol.replies import REPLY_TYPES, ErrorCode, Reply
from containerd_actors.protocol.requests import REQUEST_TYPES, SINCE, Request
from containerd_actors.protocol.validators import InvalidField

#: orjson, imported by the first event batch: a client that decodes none does not pay for it.
orjson: ModuleType | None = None
_orjson_looked_for = False

#: Separates the pub/sub topic from the JSON payload in an event frame.
TOPIC_SEPARATOR = b" "


def _tag_of(cls: type) -> str:
    return cls.__name__


def _strict(expected: type | tuple[type, ...], name: str) -> Any:
    """A structure hook that checks instead of converting.

    cattrs' JSON converter would turn ``"9"`` into 9, ``true`` into 1 and ``null`` into "None";
    a client that sends the wrong type should hear so, not get a guess.
    """

    def structure(value: Any, _type: Any) -> Any:
        if isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)):
            raise TypeError(f"expected {name}, got a boolean")
        if not isinstance(value, expected):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        return value

    return structure


class _TaggedUnion:
    """A union un/structured by its ``"type"`` tag, each member's hook made on first use.

    It writes and reads exactly what cattrs' ``configure_tagged_union`` does (the member's
    fields, then the tag; the tag is dropped before a strict converter sees the fields), but asks
    the converter for a member's hook only when that member is first met.
    """

    def __init__(self, conv: cattrs.Converter, members: tuple[type, ...]) -> None:
        self._conv = conv
        self._strip_tag = bool(getattr(conv, "forbid_extra_keys", False))
        self._tags = {cls: _tag_of(cls) for cls in members}
        self._by_tag = {tag: cls for cls, tag in self._tags.items()}
        self._structure_hooks: dict[str, tuple[Callable[[Any, type], Any], type]] = {}
        self._unstructure_hooks: dict[type, Callable[[Any], dict[str, Any]]] = {}

    def structure(self, value: dict[str, Any], _union: Any) -> Any:
        tag = value[TAG]
        found = self._structure_hooks.get(tag)
        if found is None:
            cls = self._by_tag[tag]  # KeyError for an unknown tag, as cattrs raises
            found = self._structure_hooks[tag] = (self._conv.get_structure_hook(cls), cls)
        hook, cls = found
        if self._strip_tag:
            value = value.copy()
            del value[TAG]
        return hook(value, cls)

    def unstructure(self, value: Any) -> dict[str, Any]:
        cls = value.__class__
        tag = self._tags[cls]  # KeyError for a class outside the union, as cattrs raises
        hook = self._unstructure_hooks.get(cls)
        if hook is None:
            hook = self._unstructure_hooks[cls] = self._conv.get_unstructure_hook(cls)
        result = hook(value)
        result[TAG] = tag
        return result

    def register(self, union: Any) -> None:
        self._conv.register_structure_hook(union, self.structure)
        self._conv.register_unstructure_hook(union, self.unstructure)

    def warm(self) -> None:
        """Make every member's hooks now (the daemon, at start-up)."""
        for cls, tag in self._tags.items():
            self._structure_hooks.setdefault(tag, (self._conv.get_structure_hook(cls), cls))
            self._unstructure_hooks.setdefault(cls, self._conv.get_unstructure_hook(cls))


def _structure_bytes(value: Any, _type: Any) -> bytes:
    """A bytes field: base64 text in JSON, or a blob of a binary frame (which JSON cannot hold)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return _structure_base64(value)


def _structure_bytes_kept(value: Any, _type: Any) -> bytes:
    """As ``_structure_bytes``, but a blob stays the read-only view it came as (the daemon's
    reading of requests): a framed WriteInput's MiB goes from nng's message to the pipe with no
    copy in between. A view of a frame is read-only, compares equal to the same bytes, and is
    what ``os.write`` and ``hashlib`` take; the daemon never needs a ``bytes`` method of it."""
    if isinstance(value, memoryview) and value.readonly:
        return value  # type: ignore[return-value]  # bytes-like, see above
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return _structure_base64(value)


def _structure_base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected base64 text, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField("must be base64 (RFC 4648, with padding)") from None


def _unstructure_bytes(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _make_wire_converter(
    *, forbid_extra_keys: bool, keep_views: bool = False
) -> tuple[cattrs.Converter, list[_TaggedUnion]]:
    conv = make_converter(forbid_extra_keys=forbid_extra_keys)
    # cattrs' JSON preset writes bytes as base85; the wire has always said base64.
    conv.register_structure_hook(bytes, _structure_bytes_kept if keep_views else _structure_bytes)
    conv.register_unstructure_hook(bytes, _unstructure_bytes)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(bool, _strict(bool, "a boolean"))
    conv.register_structure_hook(float, lambda v, t: float(_strict((int, float), "a number")(v, t)))
    # ``by`` and ``bys`` are left out when null (every local client's event): the field is absent
    # for local clients, and their events are byte for byte what they were before it existed.
    # Made on first use, like every other hook: a one-shot ``actr`` writes no event (~2 ms each).
    conv.register_unstructure_hook_factory(
        lambda cls: cls is Event,
        lambda cls: make_dict_unstructure_fn(Event, conv, by=override(omit_if_default=True)),
    )
    conv.register_unstructure_hook_factory(
        lambda cls: cls is EventBatch,
        lambda cls: make_dict_unstructure_fn(EventBatch, conv, bys=override(omit_if_default=True)),
    )
    unions = [_TaggedUnion(conv, REQUEST_TYPES), _TaggedUnion(conv, REPLY_TYPES)]
    unions[0].register(Request)
    unions[1].register(Reply)
    return conv, unions


#: Requests (the daemon's reading) and every encoding: refuses unknown fields.
converter, _unions = _make_wire_converter(forbid_extra_keys=True, keep_views=True)
#: Replies and events (a client's reading): ignores fields it does not know.
tolerant_converter, _tolerant_unions = _make_wire_converter(forbid_extra_keys=False)

_REQUESTS_BY_TAG = {_tag_of(cls): cls for cls in REQUEST_TYPES}
_REPLIES_BY_TAG = {_tag_of(cls): cls for cls in REPLY_TYPES}


#: ``json.dumps`` with options builds a ``JSONEncoder`` per call; every reply and event shares one.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


#: Per request type, its fields added after revision 1 and their defaults (see ``requests.SINCE``).
_LATER_FIELDS: dict[type, tuple[tuple[str, Any], ...]] = {
    cls: tuple((a.name, a.default) for a in attrs.fields(cls) if SINCE in a.metadata) for cls in REQUEST_TYPES
}


def _bytes_fields(cls: type) -> tuple[str, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(a.name for a in attrs.fields(cls) if hints[a.name] is bytes)


#: Per message type, its bytes fields: base64 in JSON, blobs in a binary frame.
BLOB_FIELDS: dict[type, tuple[str, ...]] = {
    cls: names for cls in (*REQUEST_TYPES, *REPLY_TYPES) if (names := _bytes_fields(cls))
}


def _unstructure_framed(message: Any, union: Any) -> tuple[dict[str, Any], list[tuple[str, frames.Blob]]]:
    """The message's JSON object without its bytes fields, and those fields as blobs.

    The converter never sees the bytes (an empty value stands in for each, then goes), so a framed
    message costs no base64 and no copy of its payload before ``pack_frame``.
    """
    names = BLOB_FIELDS[type(message)]
    blobs = [(name, getattr(message, name)) for name in names]
    obj = converter.unstructure(attrs.evolve(message, **dict.fromkeys(names, b"")), unstructure_as=union)
    for name in names:
        del obj[name]
    return obj, blobs


def encode_request(request: Request, *, framed: bool = False) -> bytes:
    """A later field at its default is left out: the daemon fills it in, and an older daemon, which
    refuses fields it does not know, still takes a request that does not use it.

    ``framed``: a request with bytes fields (``WriteInput``) as a binary frame, for a daemon of
    protocol revision 3 or later; other requests are JSON whatever it says.
    """
    blobs: list[tuple[str, frames.Blob]] | None = None
    if framed and type(request) in BLOB_FIELDS:
        obj, blobs = _unstructure_framed(request, Request)
    else:
        obj = converter.unstructure(request, unstructure_as=Request)
    for name, default in _LATER_FIELDS[type(request)]:
        if obj.get(name, default) == default:
            obj.pop(name, None)
    if blobs is not None:
        return frames.pack_frame(obj, blobs)
    return _dumps(obj)


def reply_frame_head(reply: Reply, sizes: dict[str, int]) -> tuple[bytes, tuple[str, ...]]:
    """A framed reply up to its first blob, and the names of its blobs in the order they follow:
    the sender reads each (``sizes[name]`` bytes) into place after the head (see
    ``frames.frame_head``); ``reply``'s own values of those fields are ignored."""
    obj, blobs = _unstructure_framed(reply, Reply)
    names = tuple(name for name, _ in blobs)
    return frames.frame_head(obj, [(name, sizes[name]) for name in names]), names


def encode_reply(reply: Reply, *, framed: bool = False) -> bytes:
    """``framed``: a reply with bytes fields (``ReadOutputReply``) as a binary frame, as the request
    asked (``ReadOutput.binary``); other replies, errors included, are JSON whatever it says."""
    if framed and type(reply) in BLOB_FIELDS:
        return frames.pack_frame(*_unstructure_framed(reply, Reply))
    return _dumps(converter.unstructure(reply, unstructure_as=Reply))


@attrs.frozen
class ReplyTemplate:
    """A reply's JSON cut where its ``request_id`` goes: ``encode_reply``'s bytes for any request id.

    For a reply many requests share but for their ids (the daemon's State of every container), so
    the rest is encoded once rather than for each request.
    """

    head: bytes
    tail: bytes

    def encode(self, request_id: str) -> bytes:
        return self.head + _dumps(request_id) + self.tail


def reply_template(reply: Reply) -> ReplyTemplate:
    """``reply`` encoded once with a marker for its request id, cut around the marker.

    ``json.dumps`` writes a dict's values one by one, so the id's own encoding between the two
    halves gives the very bytes ``encode_reply`` writes. The marker holds a NUL byte, which no path
    or argument can hold; should it appear twice all the same, the template refuses (ValueError).
    """
    marker = "\x00request-id-" + uuid.uuid4().hex
    head, _, tail = encode_reply(attrs.evolve(reply, request_id=marker)).partition(_dumps(marker))
    if not tail or _dumps(marker) in tail:
        raise ValueError(f"no single request_id in the encoding of {type(reply).__name__}")
    return ReplyTemplate(head, tail)


def _load_object(data: bytes, loads: Callable[[bytes], Any] = json.loads) -> dict[str, Any]:
    try:
        obj = loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.MALFORMED, f"message must be a JSON object, got {type(obj).__name__}")
    return obj


def _describe_field_error(exc: BaseException, type_: type | None) -> str:
    """Keep our validators' own words (``id '../x' must match ...``).

    cattrs would otherwise say only "invalid value", which does not tell a client what to fix.
    """
    if isinstance(exc, InvalidField):
        return str(exc)
    return format_exception(exc, type_)


def _load_frame(data: bytes) -> tuple[dict[str, Any], dict[str, memoryview]]:
    try:
        return frames.unpack_frame(data)
    except frames.FrameError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"bad binary frame: {exc}") from None


def _place_blobs(
    obj: dict[str, Any], blobs: dict[str, memoryview], cls: type, request_id: str | None
) -> None:
    """Put each blob where its field goes; only a bytes field of the message may be one."""
    allowed = BLOB_FIELDS.get(cls, ())
    for name, blob in blobs.items():
        if name not in allowed:
            expected = ", ".join(allowed) or "none"
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST,
                f"invalid {cls.__name__}: blob {name!r} is not one of its bytes fields ({expected})",
                request_id=request_id,
            )
        if name in obj:
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST,
                f"invalid {cls.__name__}: {name!r} is both in the header and a blob",
                request_id=request_id,
            )
        obj[name] = blob


def _structure_tagged(
    data: bytes, by_tag: dict[str, type], union: Any, kind: str, conv: cattrs.Converter
) -> Any:
    """A JSON message or a binary frame (told apart by the first byte) as the same attrs class."""
    blobs: dict[str, memoryview] | None = None
    if frames.is_frame(data):
        obj, blobs = _load_frame(data)
    else:
        obj = _load_object(data)
    request_id = obj.get("request_id")
    if not isinstance(request_id, str):
        request_id = None
    tag = obj.get(TAG)
    if not isinstance(tag, str) or tag not in by_tag:
        known = ", ".join(sorted(by_tag))
        what = "missing" if tag is None else f"unknown ({tag!r})"
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"{kind} type is {what}; expected one of: {known}", request_id=request_id
        )
    if blobs:
        _place_blobs(obj, blobs, by_tag[tag], request_id)
    if conv is tolerant_converter:
        note_unknown_fields(obj, by_tag[tag])
    try:
        return conv.structure(obj, union)
    except cattrs.BaseValidationError as exc:
        details = cattrs.transform_error(exc, format_exception=_describe_field_error)
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST,
            f"invalid {tag}: " + "; ".join(details),
            details=details,
            request_id=request_id,
        ) from None
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST, f"invalid {tag}: {exc}", request_id=request_id
        ) from None


def decode_request(data: bytes) -> Request:
    """Parse one request; raises ``ProtocolError`` with a client-facing explanation."""
    return _structure_tagged(data, _REQUESTS_BY_TAG, Request, "request", converter)


def decode_reply(data: bytes) -> Reply:
    """Parse one reply, ignoring fields this client does not know (a newer daemon's)."""
    return _structure_tagged(data, _REPLIES_BY_TAG, Reply, "reply", tolerant_converter)


def encode_event_payload(event: Event) -> bytes:
    """The JSON object of one event: the payload of its pub/sub frame and one journal line."""
    return _dumps(converter.unstructure(event))


def frame_event(event_type: str, payload: bytes) -> bytes:
    """Frame an encoded event for pub/sub: ``/containers/<type> {json}``."""
    return event_topic(event_type).encode() + TOPIC_SEPARATOR + payload


def encode_event(event: Event) -> bytes:
    """Frame an event for pub/sub: ``/containers/<type> {json}``."""
    return frame_event(event.type, encode_event_payload(event))


def decode_event(frame: bytes) -> Event:
    _, _, payload = frame.partition(TOPIC_SEPARATOR)
    return decode_event_payload(payload)


def decode_event_payload(payload: bytes) -> Event:
    """Parse an event's JSON object, ignoring fields this reader does not know; raises
    ``ProtocolError`` (code ``malformed``)."""
    try:
        obj = _load_object(payload)
        note_unknown_fields(obj, Event)
        return tolerant_converter.structure(obj, Event)
    except ProtocolError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"bad event frame: {exc.message}") from None
    except cattrs.BaseValidationError as exc:
        details = cattrs.transform_error(exc, format_exception=_describe_field_error)
        raise ProtocolError(ErrorCode.MALFORMED, "bad event frame: " + "; ".join(details), details) from None
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"bad event frame: {exc}") from None


def encode_event_batch(batch: EventBatch) -> bytes:
    """One message of the batch stream: the ``EventBatch`` JSON object, with no topic before it."""
    return _dumps(converter.unstructure(batch))


_NONE = type(None)
#: What each column of a batch may hold, and how to say so: the checks the converter's strict
#: hooks make for an ``Event``, applied to a whole column at once.
_BATCH_COLUMN_TYPES: dict[str, tuple[frozenset[type], str]] = {
    "timestamps": (frozenset({int, float}), "a number"),
    "types": (frozenset({str}), "a string"),
    "ids": (frozenset({str}), "a string"),
    "pids": (frozenset({int}), "an integer"),
    "statuses": (frozenset({int, _NONE}), "an integer or null"),
    "reasons": (frozenset({str, _NONE}), "a string or null"),
}
#: The optional column, checked like the others when it is there and not null.
_BATCH_OPTIONAL_COLUMNS: dict[str, tuple[frozenset[type], str]] = {
    "bys": (frozenset({str, _NONE}), "a string or null"),
}
_BATCH_FIELDS = ("first_seq", *EventBatch.COLUMNS)


def _wrong_type(expected: str, value: Any, where: str) -> str:
    got = "null" if value is None else type(value).__name__
    return f"invalid value for type, expected {expected}, got {got} @ $.{where}"


def _batch_problems(obj: dict[str, Any]) -> list[str]:
    """Every way ``obj`` is not an ``EventBatch``, in the converter's words (``... @ $.field``).

    A column is checked with ``set(map(type, column))``, which runs in C: a few ns an event,
    where structuring the lists through cattrs would cost more than building the events.
    """
    problems = [f"required field missing @ $.{name}" for name in _BATCH_FIELDS if name not in obj]
    first_seq = obj.get("first_seq", 0)
    if type(first_seq) is not int:
        problems.append(_wrong_type("an integer", first_seq, "first_seq"))
    columns = [*_BATCH_COLUMN_TYPES.items()]
    columns += [(name, types) for name, types in _BATCH_OPTIONAL_COLUMNS.items() if obj.get(name) is not None]
    for name, (allowed, expected) in columns:
        column = obj.get(name, [])
        if type(column) is not list:
            problems.append(_wrong_type("a list", column, name))
        elif not allowed.issuperset(map(type, column)):
            index, value = next((i, v) for i, v in enumerate(column) if type(v) not in allowed)
            problems.append(_wrong_type(expected, value, f"{name}[{index}]"))
    return problems


def decode_event_batch(data: bytes) -> EventBatch:
    """Parse one message of the batch stream; raises ``ProtocolError`` (code ``malformed``).

    As strict as ``decode_event_payload`` (no ``"9"`` for 9, no ``true`` for 1, no missing
    field) and as tolerant (fields it does not know, such as a newer daemon's column, are
    ignored), but checked column by column instead of through cattrs, so that decoding
    costs about as much as parsing the JSON plus building the events.

    Parsing is 3-4 times faster with orjson, where it is installed: json spends most of a batch's
    time on the timestamps' floats, and orjson cut a Python subscriber's cost from ~2.5 to ~2.1 µs
    an event. orjson refuses a few things json accepts (NaN, lone surrogates) and reads integers
    beyond 64 bits as floats, so any batch that fails with it is decoded again with json alone:
    what is accepted, and what it decodes to, never depends on orjson.
    """
    fast = _orjson()
    if fast is not None:
        try:
            return _parse_event_batch(data, fast.loads)
        except ProtocolError:
            pass  # json decides, and explains
    return _parse_event_batch(data, json.loads)


def _orjson() -> ModuleType | None:
    """orjson if installed (a declared dependency, but only an accelerator: json does the same)."""
    global orjson, _orjson_looked_for
    if not _orjson_looked_for:
        _orjson_looked_for = True
        try:
            import orjson as found
        except ImportError:
            found = None
        orjson = found
    return orjson


def _parse_event_batch(data: bytes, loads: Callable[[bytes], Any]) -> EventBatch:
    """Parse, check and build a batch; ``ProtocolError`` (``malformed``) names every problem."""
    try:
        obj = _load_object(data, loads)
    except ProtocolError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"bad event batch: {exc.message}") from None
    note_unknown_fields(obj, EventBatch)
    problems = _batch_problems(obj)
    if problems:
        raise ProtocolError(ErrorCode.MALFORMED, "bad event batch: " + "; ".join(problems), problems)
    timestamps = obj["timestamps"]
    if int in set(map(type, timestamps)):
        obj["timestamps"] = [float(t) for t in timestamps]  # JSON wrote 1700000000.0 as an integer
    try:
        return EventBatch(**{name: obj[name] for name in _BATCH_FIELDS}, bys=obj.get("bys"))
    except InvalidField as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"bad event batch: {exc}", [str(exc)]) from None


def warm_up() -> None:
    """cattrs generates a function per class on first use; pay that at start-up, not per request."""
    for cls in (*REQUEST_TYPES, *REPLY_TYPES, Event, EventBatch):
        converter.get_structure_hook(cls)
        converter.get_unstructure_hook(cls)
    for cls in (*REPLY_TYPES, Event):
        tolerant_converter.get_structure_hook(cls)
    for union in (*_unions, *_tolerant_unions):
        union.warm()
