"""``protocol.plain_requests``: a request written from its fields before any wire class exists.

It must write exactly what ``plain_codec`` (and so ``codec``) writes for the same request, or
decline (None) so that the caller builds the class, which gives the usual value or error; and it
must never write a request that the class would refuse.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import attrs
import pytest
from support.wire_samples import wire_samples

import containerd_actors.protocol as wire
from containerd_actors.protocol import codec, plain_codec, validators
from containerd_actors.protocol.plain_hooks import REQUIRED
from containerd_actors.protocol.plain_requests import encode_fields
from containerd_actors.protocol.plain_requests_generated import FIELDS


def _fields(request: Any) -> dict[str, Any]:
    return {field.name: getattr(request, field.name) for field in attrs.fields(type(request))}


def _requests() -> list[Any]:
    return [
        sample for cls, samples in wire_samples().items() if cls in wire.REQUEST_TYPES for sample in samples
    ]


@pytest.mark.parametrize("request_", _requests(), ids=lambda r: type(r).__name__)
def test_it_writes_what_the_plain_codec_and_the_converter_write_or_declines(request_: Any) -> None:
    written = encode_fields(type(request_).__name__, _fields(request_))
    if written is not None:
        assert written == plain_codec.encode_request(request_) == codec.encode_request(request_)


def test_it_writes_a_request_of_every_kind_it_has_a_table_for() -> None:
    written = {type(r).__name__ for r in _requests() if encode_fields(type(r).__name__, _fields(r))}
    assert written == set(FIELDS)


@pytest.mark.parametrize("request_", _requests(), ids=lambda r: type(r).__name__)
def test_fields_left_out_take_their_defaults(request_: Any) -> None:
    """As the class fills them in: the same bytes as the request built with only the fields that
    have no default (when that request is valid)."""
    cls = type(request_)
    required = {f.name: getattr(request_, f.name) for f in attrs.fields(cls) if f.default is attrs.NOTHING}
    try:
        built = cls(**required)
    except (TypeError, ValueError):
        return  # its defaults alone make no valid request (Events' since)
    written = encode_fields(cls.__name__, required)
    if written is not None:
        assert written == codec.encode_request(built)
    else:
        assert cls.__name__ not in FIELDS or not all(map(_plain_value, required.values()))


def _plain_value(value: Any) -> bool:
    return type(value) in (str, int, bool, float, bytes) or (
        type(value) is list and all(type(item) in (str, int) for item in value)
    )


def test_bytes_go_as_base64_in_json() -> None:
    request = wire.WriteInput("r-1", id="c", pid=3, data=b"\x00hi", close=True)
    assert encode_fields("WriteInput", _fields(request)) == codec.encode_request(request)
    closing = encode_fields("WriteInput", {"request_id": "r", "id": "c", "close": True})
    assert closing == codec.encode_request(wire.WriteInput("r", id="c", close=True))  # data b""


def test_it_is_sure_of_an_exec_as_actr_sends_it() -> None:
    """``actr containers exec`` without ``-u``: every field given, plain values (what it is for)."""
    fields = {"id": "web", "args": ["sh", "-c", "exit 3"], "env": ["A=1", "B=="], "cwd": "/tmp"}
    fields |= {"user": None, "terminal": False, "rows": 0, "cols": 0}
    written = encode_fields("AddProcess", {"request_id": "1-2-3", **fields})
    assert written == codec.encode_request(wire.AddProcess(request_id="1-2-3", **fields))
    ping = encode_fields("Ping", {"request_id": "p"})
    assert ping == codec.encode_request(wire.Ping(request_id="p"))


EXEC = {"request_id": "r", "id": "web", "args": ["true"], "env": [], "cwd": "", "user": None}
EXEC |= {"terminal": False, "rows": 0, "cols": 0}


@pytest.mark.parametrize(
    "change",
    [
        {"cwd": "relative"},  # a validator refuses: the class says so, in its own words
        {"args": [""]},
        {"args": []},
        {"env": ["=x"]},
        {"rows": 1 << 16},
        {"id": "../x"},
        {"rows": True},  # a bool for an int: the converter's business
        {"rows": 1.0},
        {"cwd": None},
        {"user": wire.User(uid=1)},  # a record: built as the class
        {"args": ("true",)},
        {"args": [b"true"]},
        {"extra": 1},
    ],
    ids=repr,
)
def test_it_declines_what_it_is_not_sure_of(change: dict[str, Any]) -> None:
    """Whatever the class would refuse, and what it would take but only the converter is sure of."""
    assert encode_fields("AddProcess", EXEC | change) is None
    assert encode_fields("AddProcess", EXEC) is not None


def test_it_declines_a_missing_field_and_an_unknown_tag() -> None:
    assert encode_fields("AddProcess", {k: v for k, v in EXEC.items() if k != "args"}) is None
    assert encode_fields("NoSuchRequest", {"request_id": "r"}) is None
    without_env = encode_fields("AddProcess", {k: v for k, v in EXEC.items() if k != "env"})
    assert without_env == encode_fields("AddProcess", EXEC)  # a default, not a missing field


def test_its_fields_and_checks_are_the_classes() -> None:
    """The generated table names each class's fields in order, with the validators attrs runs and
    their defaults; a class with another kind of check or default is left out (always built as
    the class)."""
    for cls in wire.REQUEST_TYPES:
        spec = FIELDS.get(cls.__name__)
        if spec is None:
            continue
        assert [name for name, _, _ in spec] == [field.name for field in attrs.fields(cls)]
        for (_, check, default), field in zip(spec, attrs.fields(cls), strict=True):
            assert check is field.validator
            assert check is None or check.__module__ == validators.__name__
            if field.default is attrs.NOTHING:
                assert default is REQUIRED
            elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                assert default is field.default.factory  # type: ignore[attr-defined]
            else:
                assert default == field.default and type(default) is type(field.default)
    assert {"AddProcess", "ReadOutput", "WriteInput", "State", "CreateContainer"} <= set(FIELDS)


def test_writing_one_imports_neither_attrs_nor_a_wire_class() -> None:
    code = (
        "import sys\n"
        "from containerd_actors.protocol.plain_requests import encode_fields\n"
        "fields = {'request_id': 'r', 'id': 'web', 'args': ['true'], 'env': [], 'cwd': '', 'user': None,\n"
        "          'terminal': False, 'rows': 0, 'cols': 0}\n"
        "assert encode_fields('AddProcess', fields)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('attr', 'attrs', 'cattrs')\n"
        "             or m.startswith(('containerd_actors.protocol.re',\n"
        "                              'containerd_actors.protocol.codec'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
