"""The one request that travels as a binary frame: ``MigrationChunk``, whose bytes are its blob.

The frame's header is the request's JSON object (tag included) and its one blob, ``data``, holds
the chunk's bytes, so a chunk of checkpoint images costs no base64 and no copy on arrival. Decoding
checks the header like any request (``codec``), then the blob against the header's sha256.
"""

from __future__ import annotations

import json

from containerd_actors.protocol.codec import TAG, ProtocolError, converter, decode_request
from containerd_actors.protocol.frames import Blob, FrameError, is_frame, pack_frame, unpack_frame
from containerd_actors.protocol.migration import CHUNK_BLOB, MigrationChunk
from containerd_actors.protocol.replies import ErrorCode
from containerd_actors.protocol.requests import Request

#: Request types that may (and must) come as a frame.
FRAMED_REQUESTS: tuple[type, ...] = (MigrationChunk,)


def is_migration_chunk(message: Blob) -> bool:
    """Whether ``message`` is a binary frame holding a ``MigrationChunk`` (other framed requests,
    such as ``WriteInput``, are the codec's)."""
    if not is_frame(message):
        return False
    try:
        header, _ = unpack_frame(message)
    except FrameError:
        return False
    return header.get(TAG) == MigrationChunk.__name__


def encode_framed_request(chunk: MigrationChunk, data: Blob) -> bytes:
    header = converter.unstructure(chunk, unstructure_as=Request)
    return pack_frame(header, [(CHUNK_BLOB, data)])


def decode_framed_request(message: Blob) -> tuple[MigrationChunk, memoryview]:
    """The chunk and a view of its bytes; ``ProtocolError`` if the frame, the header or the
    checksum is wrong (the bytes are hashed here, so a handler never sees a corrupt chunk)."""
    try:
        header, blobs = unpack_frame(message)
    except FrameError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"bad binary frame: {exc}") from None
    request_id = header.get("request_id") if isinstance(header.get("request_id"), str) else None
    if header.get(TAG) not in {cls.__name__ for cls in FRAMED_REQUESTS}:
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST,
            f"a binary frame carries only {', '.join(c.__name__ for c in FRAMED_REQUESTS)}, "
            f"not {header.get(TAG)!r}",
            request_id=request_id,
        )
    request = decode_request(json.dumps(header).encode())
    assert isinstance(request, MigrationChunk)
    if set(blobs) != {CHUNK_BLOB}:
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST,
            f"a MigrationChunk frame has one blob, {CHUNK_BLOB!r}; got {sorted(blobs)}",
            request_id=request_id,
        )
    data = blobs[CHUNK_BLOB]
    # Here, not at the top: the API server asks ``is_migration_chunk`` of every request, and hashlib
    # maps OpenSSL's libcrypto (~3.5 MiB of RSS) that a server no migration reaches never needs.
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    if digest != request.sha256:
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST,
            f"chunk {request.seq} of {request.name!r}: sha256 {digest} does not match {request.sha256}",
            request_id=request_id,
        )
    return request, data
