"""Writes ``plain_generated``: the client's structure and unstructure functions as plain Python,
made from the wire's attrs classes by the rules of ``codec``'s cattrs converter.

Why: importing cattrs and building its hooks is ~20 ms of every one-shot ``actr`` command, which
sends two or three kinds of message. The generated module does the same for the requests a client
writes and the replies it reads, and is sure of less: on anything it is not sure of it hands the
message to ``codec`` (see ``plain_hooks``). So the converter stays the one source of truth, and
this is a copy of its rules for the common case, which ``scripts/gen_plain_codec.py --check`` and
tests/unit/test_plain_codec.py hold to it: the generated file must be what this writes from
today's classes, and must decode and encode every wire sample as the converter does.

The rules copied: strict types (no "9" for 9, no bool for int; an int is a float), replies read
tolerantly (unknown keys ignored; a missing field with a default takes it), bytes as base64 in
JSON, nested records, ``X | None``, ``list[X]``, ``dict[str, X]``; requests written in field order
with the tag last. A field shape outside these makes the generator fail, not guess.

How, for speed (a State of 1,000 containers is 3,000 instances): a structure function checks its
fields' exact types inline, keeps a list of ``str``/``int``/``bool`` as ``json.loads`` made it,
and calls the class with its fields in order (its ``__init__`` and validators run as they would
for the converter); tests/unit/test_plain_state_decode.py holds that to the converter.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import attrs

from containerd_actors.protocol import replies, requests, validators
from containerd_actors.protocol.replies import REPLY_TYPES
from containerd_actors.protocol.requests import REQUEST_TYPES, SINCE

#: The modules that ``replies`` and ``requests`` import only when their classes are used: the
#: generated module imports them there too, inside the functions that make their classes.
_LATER_MODULES = frozenset({*replies.ELSEWHERE, *requests.ELSEWHERE})

_PRIMITIVES = {str: "str", int: "int", bool: "bool", float: "float", bytes: "bytes"}


def _records(roots: tuple[type, ...]) -> list[type]:
    """``roots`` and every attrs class their fields hold, each once, in the order first met."""
    found: list[type] = []
    todo = list(roots)
    while todo:
        cls = todo.pop(0)
        if cls in found:
            continue
        found.append(cls)
        hints = typing.get_type_hints(cls)
        for field in attrs.fields(cls):
            todo += [t for t in _walk(hints[field.name]) if attrs.has(t)]
    return found


def _walk(kind: Any) -> list[Any]:
    return [kind, *(inner for arg in typing.get_args(kind) for inner in _walk(arg))]


def _optional_of(kind: Any) -> Any:
    """X for ``X | None``, else None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        if len(args) == 2 and type(None) in args:
            return next(arg for arg in args if arg is not type(None))
    return None


def _structure(kind: Any, value: str, depth: int) -> str:
    """An expression structuring ``value`` (an expression) as ``kind``."""
    if kind in _PRIMITIVES:
        return f"s_{_PRIMITIVES[kind]}({value})"
    if attrs.has(kind):
        return f"s_{kind.__name__}({value})"
    inner = _optional_of(kind)
    if inner is not None:
        return f"(None if {value} is None else {_structure(inner, value, depth)})"
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    item = f"i{depth}"
    if origin is list:
        return f"[{_structure(args[0], item, depth + 1)} for {item} in s_list({value})]"
    if origin is dict and args[0] is str:
        key = f"k{depth}"
        each = _structure(args[1], item, depth + 1)
        return f"{{s_str({key}): {each} for {key}, {item} in s_dict({value}).items()}}"
    raise TypeError(f"plain codec: no rule for {kind!r}")


def _unstructure(kind: Any, value: str, depth: int) -> str:
    if kind in _PRIMITIVES:
        return f"u_{_PRIMITIVES[kind]}({value})"
    if attrs.has(kind):
        return f"u_{kind.__name__}({value})"
    inner = _optional_of(kind)
    if inner is not None:
        return f"(None if {value} is None else {_unstructure(inner, value, depth)})"
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    item = f"i{depth}"
    if origin is list:
        return f"[{_unstructure(args[0], item, depth + 1)} for {item} in u_list({value})]"
    if origin is dict and args[0] is str:
        key = f"k{depth}"
        each = _unstructure(args[1], item, depth + 1)
        return f"{{u_str({key}): {each} for {key}, {item} in u_dict({value}).items()}}"
    raise TypeError(f"plain codec: no rule for {kind!r}")


def _fields(cls: type) -> list[tuple[attrs.Attribute[Any], Any]]:
    hints = typing.get_type_hints(cls)
    fields = []
    for field in attrs.fields(cls):
        if not field.init or field.alias != field.name:
            raise TypeError(f"plain codec: {cls.__name__}.{field.name} is not a plain init field")
        fields.append((field, hints[field.name]))
    return fields


#: The primitives whose check is one ``type(value) is T`` and whose value is kept as it is (a
#: float is not among them: an int is a float too, and becomes one).
_EXACT = {str: "str", int: "int", bool: "bool"}


def _default(cls: type, field: attrs.Attribute[Any], imports: list[type]) -> str:
    """The expression of ``field``'s default, as attrs would make it for a missing key: a literal,
    or a call of its factory (``list``, ``dict``, or a wire class, added to ``imports``)."""
    default = field.default
    if not isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return _literal(default)
    factory = default.factory  # type: ignore[attr-defined]
    if default.takes_self:  # type: ignore[attr-defined]
        raise TypeError(f"plain codec: {cls.__name__}.{field.name}'s factory takes self")
    if factory is list or factory is dict:
        return "[]" if factory is list else "{}"
    if attrs.has(factory):
        imports.append(factory)
        return f"{factory.__name__}()"
    raise TypeError(f"plain codec: no rule for {cls.__name__}.{field.name}'s factory {factory!r}")


def _field_value(kind: Any, value: str) -> str:
    """An expression structuring ``value`` (a local name) as ``kind``, for a field whose exact
    primitive type is not checked apart (see ``_structure_function``)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list and args[0] in _EXACT:
        return f"s_list_of({value}, {_EXACT[args[0]]})"
    return _structure(kind, value, 0)


def _structure_function(cls: type) -> list[str]:
    """``s_<cls>``: reads each field into a local, checks the exact primitive ones in one test,
    and calls the class with them in order, so its ``__init__`` (and validators) runs as the
    converter's would, without a dict of keyword arguments per instance. A list of ``str``/
    ``int``/``bool`` is checked and kept, not copied: the object is a fresh ``json.loads``'s."""
    name = cls.__name__
    imports = [cls]
    body = ["    if type(o) is not dict:", "        raise Unsure"]
    checks = []
    positional, keywords = [], []
    for field, kind in _fields(cls):
        local = f"f_{field.name}"
        key = repr(field.name)
        exact = _EXACT.get(kind)
        if field.default is attrs.NOTHING:
            value = f"o[{key}]" if exact else _field_value(kind, f"o[{key}]")
            body.append(f"    {local} = {value}")
        else:
            default = _default(cls, field, imports)
            value = f"o[{key}]" if exact else _field_value(kind, f"o[{key}]")
            body.append(f"    {local} = {value} if {key} in o else {default}")
        if exact:
            checks.append(f"type({local}) is not {exact}")
        (keywords if field.kw_only else positional).append(local)
    if checks:
        body.append(f"    if {' or '.join(checks)}:")
        body.append("        raise Unsure")
    arguments = [*positional, *(f"{local[2:]}={local}" for local in keywords)]
    body.append(f"    return {name}({', '.join(arguments)})")
    return [f"def s_{name}(o: Any) -> {name}:", *_later_imports(imports), *body]


def _later_imports(classes: list[type]) -> list[str]:
    """The import lines a function needs for those of ``classes`` whose modules are imported late."""
    lines = []
    for module in sorted({cls.__module__ for cls in classes} & _LATER_MODULES):
        names = sorted({cls.__name__ for cls in classes if cls.__module__ == module})
        lines.append(f"    from {module} import {', '.join(names)}")
    return lines


def _unstructure_function(cls: type, tag: str | None) -> list[str]:
    name = cls.__name__
    lines = [f"def u_{name}(o: {name}) -> dict[str, Any]:", "    return {"]
    for field, kind in _fields(cls):
        lines.append(f'        "{field.name}": {_unstructure(kind, f"o.{field.name}", 0)},')
    if tag is not None:
        lines.append(f'        "type": "{tag}",')
    lines.append("    }")
    return lines


def _literal(value: Any) -> str:
    text = repr(value)
    copy = eval(text)
    if copy != value or type(copy) is not type(value):
        raise TypeError(f"plain codec: default {value!r} is not a literal")
    return text


def render() -> str:
    """The source of ``plain_generated``: the replies' structure functions."""
    reading = _records(REPLY_TYPES)
    modules = sorted({cls.__module__ for cls in reading} - _LATER_MODULES)
    lines = [
        '"""Generated by scripts/gen_plain_codec.py from the wire classes (``plain_gen``): do not edit.',
        "",
        "The client's structure (``s_``) functions without cattrs; see ``plain_codec`` for how they are",
        "used and ``plain_hooks`` for why they refuse so readily. The requests' unstructure functions",
        "are in ``plain_requests_generated``, which imports no wire class. Its length is one function",
        "per wire class, and grows with the protocol: it is read by the drift test, not by people, so",
        "it is one file rather than split by concern.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import TYPE_CHECKING, Any",
        "",
    ]
    for module in modules:
        names = sorted(cls.__name__ for cls in reading if cls.__module__ == module)
        lines.append(f"from {module} import {', '.join(names)}")
    lines.append(
        "from containerd_actors.protocol.plain_hooks import Unsure, s_bool, s_bytes, s_dict, s_float, s_int, "
        "s_list, s_list_of, s_str"
    )
    lines += ["", "if TYPE_CHECKING:"]
    for module in sorted(_LATER_MODULES):
        names = sorted(cls.__name__ for cls in reading if cls.__module__ == module)
        if names:
            lines.append(f"    from {module} import {', '.join(names)}")
    for cls in reading:
        lines += ["", "", *_structure_function(cls)]
    lines += ["", "", "#: Each reply's structure function, by its tag.", "REPLIES = {"]
    lines += [f'    "{cls.__name__}": s_{cls.__name__},' for cls in REPLY_TYPES]
    lines += ["}", ""]
    return "\n".join(lines)


#: What ``_fields_table`` writes for a field without a default: the request must give it.
_REQUIRED = "REQUIRED"


def _fields_table(cls: type) -> list[str] | None:
    """``cls``'s init fields in order, each as the source of ``(name, validator, default)``: the
    validator's name or None, the default's literal, ``list``/``dict`` for those factories, or
    ``REQUIRED``. None if a check is not a plain function of ``validators`` or a default is none
    of these (its requests are then always built as the class)."""
    if hasattr(cls, "__attrs_post_init__"):
        return None
    entries = []
    for field, _kind in _fields(cls):
        check = field.validator
        if check is not None and not (
            isinstance(check, types.FunctionType) and check.__module__ == validators.__name__
        ):
            return None
        default = field.default
        if default is attrs.NOTHING:
            value = _REQUIRED
        elif isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            factory = default.factory  # type: ignore[attr-defined]
            if default.takes_self or factory not in (list, dict):  # type: ignore[attr-defined]
                return None
            value = factory.__name__
        else:
            try:
                value = _literal(default)
            except TypeError:
                return None
        entries.append(f"({field.name!r}, {None if check is None else check.__name__}, {value})")
    return entries


def render_requests() -> str:
    """The source of ``plain_requests_generated``: the requests' unstructure functions, their
    later fields, and each one's fields and checks, with no wire class imported (``plain_requests``
    writes a request from its fields before attrs is even imported)."""
    writing = _records(REQUEST_TYPES)
    tables = {cls: _fields_table(cls) for cls in REQUEST_TYPES}
    used = sorted(
        {
            field.validator.__name__
            for cls, table in tables.items()
            if table is not None
            for field in attrs.fields(cls)
            if field.validator is not None
        }
    )
    lines = [
        '"""Generated by scripts/gen_plain_codec.py from the wire classes (``plain_gen``): do not edit.',
        "",
        "The client's unstructure (``u_``) functions of the requests without cattrs, and each request's",
        "fields with their validators; see ``plain_codec`` and ``plain_requests`` for how they are used.",
        "It imports no wire class, nor attrs: ``actr containers exec`` sends its request with these",
        "while the wire classes are still to be defined.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import TYPE_CHECKING, Any",
        "",
        "from containerd_actors.protocol.plain_hooks import "
        "REQUIRED, u_bool, u_bytes, u_dict, u_float, u_int, u_list, u_str",
    ]
    if used:
        lines.append(f"from containerd_actors.protocol.validators import {', '.join(used)}")
    lines += ["", "if TYPE_CHECKING:"]
    for module in sorted({cls.__module__ for cls in writing}):
        names = sorted(cls.__name__ for cls in writing if cls.__module__ == module)
        lines.append(f"    from {module} import {', '.join(names)}")
    for cls in writing:
        tag = cls.__name__ if cls in REQUEST_TYPES else None
        lines += ["", "", *_unstructure_function(cls, tag)]
    lines += ["", "", "#: Each request's unstructure function (its tag last), by its tag.", "REQUESTS = {"]
    lines += [f'    "{cls.__name__}": u_{cls.__name__},' for cls in REQUEST_TYPES]
    lines += [
        "}",
        "#: Per request tag, its fields added after revision 1 and their defaults.",
        "LATER_FIELDS = {",
    ]
    for cls in REQUEST_TYPES:
        later = [(a.name, a.default) for a in attrs.fields(cls) if SINCE in a.metadata]
        if later:
            pairs = "".join(f"({name!r}, {_literal(default)}), " for name, default in later)
            lines.append(f'    "{cls.__name__}": ({pairs.rstrip(", ")},),')
    lines += [
        "}",
        "#: Per request tag, its init fields in order, each with the validator attrs runs on it (None:",
        "#: none) and its default (a literal; ``list`` or ``dict``: a new one; ``REQUIRED``: none). A",
        "#: request with another kind of check or default is not here.",
        "FIELDS = {",
    ]
    for cls, table in tables.items():
        if table is not None:
            lines.append(f'    "{cls.__name__}": ({", ".join(table)},),')
    lines += ["}", ""]
    return "\n".join(lines)
