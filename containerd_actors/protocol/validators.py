"""Field validators of the wire messages, and the limits they enforce.

attrs runs these when a message is built, so the daemon refuses a bad request while decoding it,
before any actor sees it. ``schema`` recognises them by identity and turns each into JSON Schema
keywords; a validator it does not know adds no constraint, which leaves the schema looser than the
daemon, never stricter.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: ``actr``'s argument checks use ID_PATTERN without attrs
    from attrs import Attribute

#: Container ids become runc ids and directory names, so they must not carry path tricks.
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_ID_RE = re.compile(ID_PATTERN)


class InvalidField(ValueError):
    """Raised by the validators below; the codec puts its text verbatim into the error reply."""


def valid_id(instance: Any, attribute: Attribute, value: str) -> None:
    if not _ID_RE.fullmatch(value):
        raise InvalidField(f"{attribute.name} {value!r} must match {ID_PATTERN}")


def valid_id_or_empty(instance: Any, attribute: Attribute, value: str) -> None:
    """Empty means "not given" where another field can name the thing instead."""
    if value:
        valid_id(instance, attribute, value)


def valid_optional_name(instance: Any, attribute: Attribute, value: str | None) -> None:
    if value is not None:
        valid_id(instance, attribute, value)


#: The most events one ``EventsReply`` carries. Even with 128-character ids a page stays far
#: below ``MAX_MESSAGE_BYTES``, and the events actor, which serves pages between publishes,
#: is never busy with one reader for long.
MAX_EVENTS_PER_PAGE = 1000


def page_limit(instance: Any, attribute: Attribute, value: int) -> None:
    if not 1 <= value <= MAX_EVENTS_PER_PAGE:
        raise InvalidField(f"{attribute.name} must be between 1 and {MAX_EVENTS_PER_PAGE}, got {value}")


def non_negative(instance: Any, attribute: Attribute, value: int) -> None:
    if value < 0:
        raise InvalidField(f"{attribute.name} must be >= 0, got {value}")


def signal_number(instance: Any, attribute: Attribute, value: int) -> None:
    if not 1 <= value <= 64:
        raise InvalidField(f"{attribute.name} must be between 1 and 64, got {value}")


def non_empty_args(instance: Any, attribute: Attribute, value: list[str]) -> None:
    if not value:
        raise InvalidField(f"{attribute.name} must name a program to run, got an empty list")
    if not value[0]:
        raise InvalidField(f"{attribute.name}[0] must not be empty")


def absolute_or_empty(instance: Any, attribute: Attribute, value: str) -> None:
    """Empty means "the container's own cwd"; anything else is resolved inside the container."""
    if value and not value.startswith("/"):
        raise InvalidField(f"{attribute.name} must be an absolute path, got {value!r}")


def env_entries(instance: Any, attribute: Attribute, value: list[str]) -> None:
    for entry in value:
        if "=" not in entry or entry.startswith("="):
            raise InvalidField(f"{attribute.name} entries must look like KEY=VALUE, got {entry!r}")


def uint16(instance: Any, attribute: Attribute, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise InvalidField(f"{attribute.name} must be between 0 and 65535, got {value}")


def stream_offset(instance: Any, attribute: Attribute, value: int) -> None:
    if value < -1:
        raise InvalidField(f"{attribute.name} must be -1 (none) or a byte offset, got {value}")


def tail_lines(instance: Any, attribute: Attribute, value: int) -> None:
    if value < -1:
        raise InvalidField(f"{attribute.name} must be -1 (everything) or a number of lines, got {value}")


#: The longest a ReadOutput may wait for output; the server's workers are a shared resource.
MAX_WAIT_S = 30.0
#: The most output bytes (per stream) a ReadOutput may ask for (a framed reply: 8 MiB of blobs).
MAX_READ_BYTES = 4 << 20


def wait_seconds(instance: Any, attribute: Attribute, value: float) -> None:
    if not 0 <= value <= MAX_WAIT_S:
        raise InvalidField(f"{attribute.name} must be between 0 and {MAX_WAIT_S:g} seconds, got {value}")


def read_size(instance: Any, attribute: Attribute, value: int) -> None:
    if not 1 <= value <= MAX_READ_BYTES:
        raise InvalidField(f"{attribute.name} must be between 1 and {MAX_READ_BYTES}, got {value}")


def pause_or_run(instance: Any, attribute: Attribute, value: str) -> None:
    if value not in ("paused", "running"):
        raise InvalidField(f"{attribute.name} must be 'paused' or 'running', got {value!r}")


_EVENT_TYPE_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")


def event_kind(instance: Any, attribute: Attribute, value: str) -> None:
    """An event kind becomes a topic; a space in it would split the ``topic payload`` frame."""
    if not _EVENT_TYPE_RE.fullmatch(value):
        raise InvalidField(f"{attribute.name} {value!r} must match {_EVENT_TYPE_RE.pattern}")


def event_kinds(instance: Any, attribute: Attribute, value: list[str]) -> None:
    """Every kind in a batch must be one an ``Event`` accepts; checked once per distinct kind."""
    for kind in set(value):
        if not isinstance(kind, str) or not _EVENT_TYPE_RE.fullmatch(kind):
            raise InvalidField(f"{attribute.name} holds {kind!r}, which must match {_EVENT_TYPE_RE.pattern}")
