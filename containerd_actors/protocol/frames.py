"""Binary frames: a JSON header followed by raw bytes, for messages whose bulk is bytes.

Process output and input, and checkpoint images sent from one daemon to another, are bytes. Carried
as base64 inside JSON they cost a third more on the wire and about 20 ms of CPU per MiB to encode
and parse. A binary frame keeps the message's JSON object, for the small fields, and carries the
bytes after it as they are, so a receiver slices them out without copying or decoding.

Layout (documented for other languages in ``proto_schemas/README.md``)::

    magic    4 bytes   00 43 41 42  ("\\0CAB"); a JSON message never starts with a NUL byte
    hlen     4 bytes   unsigned, big-endian: the length of the header
    header   hlen bytes, a UTF-8 JSON object: the message, with a "blobs" member
             [[name, length], ...] naming the binary parts in the order they follow
    payload  the binary parts, back to back; their lengths add up to the rest of the frame

This module only packs and unpacks the envelope. Which fields of which message travel as blobs is
the codec's business; this module imports nothing heavy, so the blocking client can use it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

MAGIC = b"\x00CAB"
BLOBS = "blobs"
_LENGTH = struct.Struct(">I")
_PREFIX = len(MAGIC) + _LENGTH.size

Blob = bytes | bytearray | memoryview


class FrameError(ValueError):
    """A message that starts like a binary frame but does not hold together."""


def is_frame(data: Blob) -> bool:
    return bytes(data[: len(MAGIC)]) == MAGIC


def pack_frame(header: Mapping[str, Any], blobs: Sequence[tuple[str, Blob]]) -> bytes:
    """One copy of every blob, into the frame; ``header`` must not name a ``blobs`` member itself."""
    encoded = _encoded_header(header, [(name, len(blob)) for name, blob in blobs])
    return b"".join([MAGIC, _LENGTH.pack(len(encoded)), encoded, *(blob for _, blob in blobs)])


def frame_head(header: Mapping[str, Any], sizes: Sequence[tuple[str, int]]) -> bytes:
    """The frame up to its first blob, for blobs of these names and lengths, in this order.

    A sender that knows its blobs' lengths before it has their bytes (a log read by offset)
    writes this, then reads each blob straight into place after it (``os.preadv`` into the
    message's own buffer), where ``pack_frame`` would copy every blob once more.
    """
    encoded = _encoded_header(header, sizes)
    return b"".join([MAGIC, _LENGTH.pack(len(encoded)), encoded])


def _encoded_header(header: Mapping[str, Any], sizes: Sequence[tuple[str, int]]) -> bytes:
    if BLOBS in header:
        raise FrameError(f"the header's {BLOBS!r} member is the frame's own")
    names = [name for name, _ in sizes]
    if len(set(names)) != len(names):
        raise FrameError(f"blob names repeat: {names}")
    listed = dict(header)
    listed[BLOBS] = [[name, size] for name, size in sizes]
    return json.dumps(listed, separators=(",", ":")).encode()


def unpack_frame(data: Blob) -> tuple[dict[str, Any], dict[str, memoryview]]:
    """The header (without ``blobs``) and each blob as a view into ``data``: nothing is copied."""
    view = memoryview(data)
    if len(view) < _PREFIX or bytes(view[: len(MAGIC)]) != MAGIC:
        raise FrameError("not a binary frame (no magic)")
    (header_length,) = _LENGTH.unpack_from(view, len(MAGIC))
    header_end = _PREFIX + header_length
    if header_end > len(view):
        raise FrameError(f"header length {header_length} runs past the frame's {len(view)} bytes")
    try:
        header = json.loads(bytes(view[_PREFIX:header_end]))
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError(f"header must be a JSON object, got {type(header).__name__}")
    listed = header.pop(BLOBS, [])
    blobs = _slice_blobs(listed, view[header_end:])
    return header, blobs


def _slice_blobs(listed: object, payload: memoryview) -> dict[str, memoryview]:
    if not isinstance(listed, list):
        raise FrameError(f"{BLOBS!r} must be a list of [name, length] pairs")
    blobs: dict[str, memoryview] = {}
    offset = 0
    for entry in listed:
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and type(entry[1]) is int
            and entry[1] >= 0
        ):
            raise FrameError(f"a {BLOBS!r} entry must be [name, length >= 0], got {entry!r}")
        name, length = entry
        if name in blobs:
            raise FrameError(f"blob {name!r} is listed twice")
        blobs[name] = payload[offset : offset + length]
        offset += length
    if offset != len(payload):
        raise FrameError(f"blobs list {offset} bytes, the payload holds {len(payload)}")
    return blobs
