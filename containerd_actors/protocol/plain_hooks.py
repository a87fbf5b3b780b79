"""The pieces of the generated plain codec (``plain_generated``): each takes only what it is sure
the cattrs converter takes the same way, and raises ``Unsure`` on anything else.

Why so narrow: the plain codec never decides a doubtful case. Whatever it is not sure of (a wrong
type, a missing field, a validator's refusal, bad base64) makes ``plain_codec`` hand the whole
message to ``codec``, whose cattrs converter gives the value or the exact error it always gave.
"""

from __future__ import annotations

from typing import Any


class Unsure(Exception):
    """Not a case the plain codec is sure of: ``codec`` decides it."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: A field without a default, in ``plain_requests_generated.FIELDS``: a request must give it.
REQUIRED: Any = _Required()


def s_str(value: Any) -> str:
    if type(value) is not str:
        raise Unsure
    return value


def s_int(value: Any) -> int:
    if type(value) is not int:
        raise Unsure
    return value


def s_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise Unsure
    return value


def s_float(value: Any) -> float:
    if type(value) is not float and type(value) is not int:
        raise Unsure
    return float(value)


def s_bytes(value: Any) -> bytes:
    """base64 text in JSON (validated as the converter does), or a blob of a binary frame."""
    kind = type(value)
    if kind is str:
        if not value:
            return b""  # what base64 makes of nothing: an empty read needs no base64
        import base64  # here: a State or a pid needs none of it (~0.4 ms of every command)

        return base64.b64decode(value, validate=True)  # binascii.Error: the converter's words
    if kind is bytes or kind is bytearray or kind is memoryview:
        return bytes(value)
    raise Unsure


def s_list(value: Any) -> list[Any]:
    if type(value) is not list:
        raise Unsure
    return value


def s_list_of(value: Any, kind: type) -> list[Any]:
    """A list whose items are all exactly ``kind`` (``str``, ``int`` or ``bool``), kept as it is:
    one call per list rather than one per item (a State of 1,000 containers has 2,000 such lists)."""
    if type(value) is not list:
        raise Unsure
    for item in value:
        if type(item) is not kind:
            raise Unsure
    return value


def s_dict(value: Any) -> dict[Any, Any]:
    if type(value) is not dict:
        raise Unsure
    return value


def u_str(value: Any) -> str:
    if type(value) is not str:
        raise Unsure
    return value


def u_int(value: Any) -> int:
    if type(value) is not int:
        raise Unsure
    return value


def u_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise Unsure
    return value


def u_float(value: Any) -> float:
    if type(value) is not float:
        raise Unsure
    return value


def u_bytes(value: Any) -> str:
    kind = type(value)
    if kind is not bytes and kind is not memoryview and kind is not bytearray:
        raise Unsure
    if not value:
        return ""  # what base64 makes of nothing: an EOF (``exec -a`` < /dev/null) needs no base64
    import base64

    return base64.b64encode(value).decode()


def u_list(value: Any) -> list[Any]:
    if type(value) is not list:
        raise Unsure
    return value


def u_dict(value: Any) -> dict[Any, Any]:
    if type(value) is not dict:
        raise Unsure
    return value
