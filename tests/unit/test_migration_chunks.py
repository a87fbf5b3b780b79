"""Cutting a migration's files into chunks, checking each, and checking the whole (no daemon)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from containerd_actors.daemon.migration.chunks import SourceFile, digest_of_digests, image_files, plan_chunks
from containerd_actors.protocol import (
    ErrorCode,
    MigrationChunk,
    ProtocolError,
    decode_framed_request,
    encode_framed_request,
    encode_request,
)
from containerd_actors.protocol.frames import pack_frame


def chunk_of(data: bytes, seq: int = 0) -> MigrationChunk:
    return MigrationChunk("r-1", "m01", seq, "image", "pages-1.img", 0, hashlib.sha256(data).hexdigest())


def test_files_are_cut_in_order_and_an_empty_file_still_gets_a_chunk(tmp_path: Path) -> None:
    (tmp_path / "b.img").write_bytes(b"x" * 25)
    (tmp_path / "a.img").write_bytes(b"")
    files = image_files(tmp_path)
    assert [f.name for f in files] == ["a.img", "b.img"]
    plans = plan_chunks(files, chunk_bytes=10)
    assert [(p.seq, p.file.name, p.offset, p.length) for p in plans] == [
        (0, "a.img", 0, 0),
        (1, "b.img", 0, 10),
        (2, "b.img", 10, 10),
        (3, "b.img", 20, 5),
    ]
    config = SourceFile("config", "config.json", tmp_path / "b.img")
    assert plan_chunks([config], chunk_bytes=100)[0].length == 25


def test_the_whole_is_the_digest_of_the_chunk_digests_in_order() -> None:
    digests = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    whole = digest_of_digests(digests)
    assert whole == hashlib.sha256("".join(digests).encode()).hexdigest()
    assert whole != digest_of_digests(list(reversed(digests)))


def test_a_chunk_travels_as_a_frame_and_its_bytes_are_checked() -> None:
    data = b"\x00\x01 pages"
    chunk, blob = decode_framed_request(encode_framed_request(chunk_of(data), data))
    assert chunk == chunk_of(data) and bytes(blob) == data
    with pytest.raises(ProtocolError) as wrong:
        decode_framed_request(encode_framed_request(chunk_of(data), data[:-1] + b"?"))
    assert wrong.value.code == ErrorCode.INVALID_REQUEST and "does not match" in wrong.value.message


def test_only_a_chunk_may_be_framed_and_it_has_one_blob() -> None:
    with pytest.raises(ProtocolError) as other:
        decode_framed_request(pack_frame({"type": "Ping", "request_id": "r-2"}, [("data", b"")]))
    assert "only MigrationChunk" in other.value.message and other.value.request_id == "r-2"
    header = {"type": "MigrationChunk", **_fields(chunk_of(b""))}
    with pytest.raises(ProtocolError) as extra:
        decode_framed_request(pack_frame(header, [("data", b""), ("more", b"")]))
    assert "one blob" in extra.value.message


def test_a_chunk_names_a_plain_file() -> None:
    with pytest.raises(ValueError):
        MigrationChunk("r", "m01", 0, "image", "../../etc/passwd", 0, "0" * 64)
    with pytest.raises(ValueError):
        MigrationChunk("r", "m01", 0, "image", "/etc/passwd", 0, "0" * 64)
    with pytest.raises(ValueError):
        MigrationChunk("r", "m01", 0, "image", "..", 0, "0" * 64)


def _fields(chunk: MigrationChunk) -> dict[str, object]:
    import json

    obj = json.loads(encode_request(chunk))
    del obj["type"]
    return obj
