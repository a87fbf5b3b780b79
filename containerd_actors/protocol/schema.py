"""JSON Schema (draft 2020-12) for the wire, derived from the attrs classes of the protocol package.

``generate_schemas()`` walks ``attrs.fields()`` of every request, reply and event class with
their resolved type hints, so a field added to a message reaches ``proto_schemas/`` by running
``scripts/gen_schemas.py``; nothing here names a message field except the few descriptions in
``_FIELD_DESCRIPTIONS``.

Every schema file is self-contained: nested records are emitted into its own ``$defs`` and
referenced as ``#/$defs/<ClassName>``, so a client can load one file without a resolver.

Requests are closed (``additionalProperties: false``): the daemon refuses a field it does not
know. Replies and events are open: the daemon may add fields, and a reader that validates against
these files must accept them, as the client library does.

Constraints come from the field types and from the validators this module recognises by
identity (``_VALIDATOR_CONSTRAINTS``); a validator it does not know adds no constraint, which
leaves the schema looser than the daemon, never stricter.
"""

from __future__ import annotations

import base64
import enum
import inspect
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import attrs

from containerd_actors.protocol import validators
from containerd_actors.protocol.codec import MAX_MESSAGE_BYTES, TAG, TOPIC_SEPARATOR
from containerd_actors.protocol.events import EVENT_TOPIC_PREFIX, Event, EventBatch, EventType
from containerd_actors.protocol.message_errors import MAX_FRAME_BYTES
from containerd_actors.protocol.replies import REPLY_TYPES, ErrorCode, ErrorReply
from containerd_actors.protocol.requests import REQUEST_TYPES

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_SUFFIX = ".schema.json"
REQUEST_FILE = "request" + SCHEMA_SUFFIX
REPLY_FILE = "reply" + SCHEMA_SUFFIX
EVENT_FILE = "event" + SCHEMA_SUFFIX
EVENT_BATCH_FILE = "event-batch" + SCHEMA_SUFFIX
#: Marks a bytes field, which a binary frame may carry as a blob of its name (see the README).
BLOB_KEYWORD = "x-blob"
#: Classes published on pub/sub (not tagged; the ``type`` field is the event kind).
EVENT_TYPES: tuple[type, ...] = (Event,)

#: Validators recognised by identity, and the keywords each one adds to the field's schema.
_VALIDATOR_CONSTRAINTS: dict[Callable[..., Any], dict[str, Any]] = {
    validators.valid_id: {"pattern": "^" + validators.ID_PATTERN + "$"},
    validators.valid_id_or_empty: {"pattern": "^(" + validators.ID_PATTERN + ")?$"},
    validators.non_negative: {"minimum": 0},
    validators.signal_number: {"minimum": 1, "maximum": 64},
    validators.non_empty_args: {"minItems": 1},
    validators.uint16: {"minimum": 0, "maximum": 65535},
    validators.tail_lines: {"minimum": -1},
    validators.wait_seconds: {"minimum": 0, "maximum": validators.MAX_WAIT_S},
    validators.read_size: {"minimum": 1, "maximum": validators.MAX_READ_BYTES},
    validators.page_limit: {"minimum": 1, "maximum": validators.MAX_EVENTS_PER_PAGE},
}


def _constants(namespace: type) -> list[str]:
    """The public string constants of a vocabulary class such as ``ErrorCode``, sorted."""
    return sorted(
        value
        for name, value in vars(namespace).items()
        if not name.startswith("_") and isinstance(value, str)
    )


def _field_descriptions() -> dict[tuple[type, str], str]:
    # Open vocabularies are described, not enumerated: a new error code or event kind must not
    # make an older client's validator reject the message.
    return {
        (ErrorReply, "code"): "One of the error codes: " + ", ".join(_constants(ErrorCode)) + ".",
        (Event, "type"): "The event kind, also the topic suffix: " + ", ".join(_constants(EventType)) + ".",
        (EventBatch, "first_seq"): "The seq of the first event; event i has seq first_seq + i.",
        (EventBatch, "types"): "Each event's kind (see event.schema.json): "
        + ", ".join(_constants(EventType))
        + ".",
    }


_FIELD_DESCRIPTIONS = _field_descriptions()


class SchemaError(TypeError):
    """A message class uses a type or default this generator cannot express."""


# --------------------------------------------------------------------------- class walking


def _description(cls: type) -> str | None:
    doc = cls.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if doc else None


def _iter_validators(validator: Any) -> Iterator[Any]:
    """Flatten ``validator=[a, b]`` / ``attrs.validators.and_(a, b)`` into its parts."""
    if validator is None:
        return
    parts = getattr(validator, "_validators", None)
    if isinstance(parts, tuple):
        for part in parts:
            yield from _iter_validators(part)
    else:
        yield validator


def _is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_is_json_value(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_value(v) for k, v in value.items())
    return False


_EMPTY_FACTORIES: dict[Any, Any] = {list: [], tuple: [], set: [], frozenset: [], dict: {}}


def _default_of(attribute: attrs.Attribute) -> tuple[bool, Any]:
    """``(has_json_default, value)``; a factory counts only if it is an empty container type."""
    default = attribute.default
    if isinstance(default, attrs.Factory):
        if not default.takes_self and default.factory in _EMPTY_FACTORIES:
            return True, _EMPTY_FACTORIES[default.factory].copy()
        return False, None
    if isinstance(default, enum.Enum):
        default = default.value
    if isinstance(default, bytes):
        return True, base64.b64encode(default).decode()
    if _is_json_value(default):
        return True, list(default) if isinstance(default, tuple) else default
    return False, None


class _Builder:
    """Builds one self-contained schema document, collecting nested records into ``$defs``."""

    def __init__(self, *, closed: bool) -> None:
        #: Whether records refuse properties they do not name (requests) or allow them (the rest).
        self.closed = closed
        self.defs: dict[str, dict[str, Any]] = {}
        self._classes: dict[str, tuple[type, bool]] = {}

    def ref(self, cls: type, *, tagged: bool = False) -> dict[str, Any]:
        name = cls.__name__
        seen = self._classes.get(name)
        if seen is not None and seen != (cls, tagged):
            raise SchemaError(f"{name} is used both as {seen} and as {(cls, tagged)}; rename one")
        if seen is None:
            self._classes[name] = (cls, tagged)
            self.defs[name] = {}  # placeholder, so a recursive record terminates
            self.defs[name] = self.record(cls, tagged=tagged)
        return {"$ref": f"#/$defs/{name}"}

    def record(self, cls: type, *, tagged: bool) -> dict[str, Any]:
        """The object schema of one attrs class; ``tagged`` adds the union's ``type`` const."""
        if not attrs.has(cls):
            raise SchemaError(f"{cls!r} is not an attrs class")
        hints = typing.get_type_hints(cls)
        properties: dict[str, Any] = {}
        required: list[str] = []
        if tagged:
            properties[TAG] = {"const": cls.__name__, "description": "The message tag."}
            required.append(TAG)
        for attribute in attrs.fields(cls):
            if not attribute.init:
                continue  # cattrs neither reads nor writes init=False fields
            name = attribute.name
            if tagged and name == TAG:
                raise SchemaError(f"{cls.__name__}.{name} collides with the union tag {TAG!r}")
            where = f"{cls.__name__}.{name}"
            prop = self.type_schema(hints[name], where)
            for validator in _iter_validators(attribute.validator):
                prop.update(_VALIDATOR_CONSTRAINTS.get(validator, {}))
            description = attribute.metadata.get("description") or _FIELD_DESCRIPTIONS.get((cls, name))
            if description:
                prop["description"] = description
            if attribute.default is attrs.NOTHING:
                required.append(name)
            else:
                has_default, value = _default_of(attribute)
                if has_default:
                    prop["default"] = value
            properties[name] = prop
        schema: dict[str, Any] = {
            "title": cls.__name__,
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": not self.closed,
        }
        description = _description(cls)
        if description:
            schema["description"] = description
        return schema

    def type_schema(self, hint: Any, where: str) -> dict[str, Any]:
        """The schema of one resolved type hint."""
        if hint is Any:
            return {}
        if hint is None or hint is type(None):
            return {"type": "null"}
        if hint is bool:
            return {"type": "boolean"}
        if hint is int:
            return {"type": "integer"}
        if hint is float:
            return {"type": "number"}
        if hint is str:
            return {"type": "string"}
        if hint is bytes:
            # Base64 in JSON; in a binary frame, a blob of the field's name may stand in for it.
            return {"type": "string", "contentEncoding": "base64", BLOB_KEYWORD: True}
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return {"enum": [member.value for member in hint]}
        if isinstance(hint, type) and attrs.has(hint):
            return self.ref(hint)
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is typing.Union or origin is types.UnionType:
            return _union([self.type_schema(arg, where) for arg in args])
        if origin is typing.Literal:
            return {"enum": list(args)}
        if origin is list or origin is Sequence:
            (item,) = args or (Any,)
            return {"type": "array", "items": self.type_schema(item, where)}
        if origin is dict:
            key, value = args or (str, Any)
            if key is not str:
                raise SchemaError(f"{where}: JSON object keys must be str, not {key!r}")
            return {"type": "object", "additionalProperties": self.type_schema(value, where)}
        raise SchemaError(f"{where}: cannot express type {hint!r} in JSON Schema")


def _union(members: list[dict[str, Any]]) -> dict[str, Any]:
    """``X | None`` of plain types becomes ``{"type": [x, "null"]}``; anything else ``anyOf``."""
    if all(set(m) == {"type"} and isinstance(m["type"], str) for m in members):
        return {"type": [m["type"] for m in members]}
    return {"anyOf": members}


# --------------------------------------------------------------------------- documents


def _document(builder: _Builder, body: dict[str, Any], title: str) -> dict[str, Any]:
    doc = {"$schema": JSON_SCHEMA_DIALECT, **body, "title": title}
    if builder.defs:
        doc["$defs"] = builder.defs
    return doc


def class_schema(cls: type, *, tagged: bool, closed: bool = False) -> dict[str, Any]:
    """The self-contained schema of one message class; ``tagged`` for request/reply classes,
    ``closed`` for what the daemon reads (requests)."""
    builder = _Builder(closed=closed)
    body = builder.record(cls, tagged=tagged)
    if cls.__name__ in builder.defs:
        raise SchemaError(f"{cls.__name__} contains itself; recursive messages are not supported")
    return _document(builder, body, cls.__name__)


def union_schema(classes: Iterable[type], *, title: str, description: str, closed: bool) -> dict[str, Any]:
    """One of ``classes``, told apart by the ``type`` tag."""
    builder = _Builder(closed=closed)
    body = {"oneOf": [builder.ref(cls, tagged=True) for cls in classes], "description": description}
    return _document(builder, body, title)


def event_schema() -> dict[str, Any]:
    if len(EVENT_TYPES) != 1:
        raise SchemaError("event.schema.json assumes one event class; make it a union first")
    (cls,) = EVENT_TYPES
    schema = class_schema(cls, tagged=False)
    schema["$comment"] = (
        f"Published on pub/sub as the topic {EVENT_TOPIC_PREFIX}<type>, one byte "
        f"{TOPIC_SEPARATOR.decode()!r}, then this JSON object."
    )
    return schema


def event_batch_schema() -> dict[str, Any]:
    schema = class_schema(EventBatch, tagged=False)
    schema["$comment"] = (
        "Published on the batch stream (PingReply.events_batch_address) as this JSON object alone, "
        "with no topic before it; every list holds one element per event."
    )
    return schema


def generate_schemas() -> dict[str, dict[str, Any]]:
    """Every file of ``proto_schemas/``: filename -> schema.

    Each request and reply class gets ``<ClassName>.schema.json``; the event class is described
    by ``event.schema.json`` only (an ``Event.schema.json`` beside it would collide on
    case-insensitive file systems), and a batch of events by ``event-batch.schema.json``.
    """
    schemas: dict[str, dict[str, Any]] = {}
    for cls in REQUEST_TYPES:
        schemas[cls.__name__ + SCHEMA_SUFFIX] = class_schema(cls, tagged=True, closed=True)
    for cls in REPLY_TYPES:
        schemas[cls.__name__ + SCHEMA_SUFFIX] = class_schema(cls, tagged=True)
    schemas[REQUEST_FILE] = union_schema(
        REQUEST_TYPES,
        closed=True,
        title="Request",
        description=(
            "Any request a client may send on the REQ socket: one JSON object, tagged by 'type', "
            f"at most {MAX_MESSAGE_BYTES} bytes; or, from protocol revision 3, a binary frame whose "
            f"header is that object and whose blobs are its '{BLOB_KEYWORD}' fields (see README.md), "
            f"of up to {MAX_FRAME_BYTES} bytes from revision 6."
        ),
    )
    schemas[REPLY_FILE] = union_schema(
        REPLY_TYPES,
        closed=False,
        title="Reply",
        description=(
            "Any reply the daemon sends: the request's own reply type, or ErrorReply. "
            "'request_id' echoes the request's. A ReadOutputReply to a ReadOutput with 'binary' is a "
            f"binary frame whose blobs are its '{BLOB_KEYWORD}' fields (see README.md)."
        ),
    )
    schemas[EVENT_FILE] = event_schema()
    schemas[EVENT_BATCH_FILE] = event_batch_schema()
    folded: dict[str, str] = {}
    for name in schemas:
        other = folded.setdefault(name.casefold(), name)
        if other != name:
            raise SchemaError(f"{other} and {name} collide on case-insensitive file systems")
    return schemas


def render(schema: dict[str, Any]) -> str:
    """The canonical text of a schema file: sorted keys, two-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_schemas() -> dict[str, str]:
    """Filename -> exact file content, as ``scripts/gen_schemas.py`` writes it."""
    return {name: render(schema) for name, schema in sorted(generate_schemas().items())}
