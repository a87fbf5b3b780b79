"""The client's plain codec (``protocol.plain_codec``) against the cattrs converter it copies.

It must write every request and read every reply exactly as ``codec`` does, without falling back
on the samples (else it saves nothing), and on anything broken it must give ``codec``'s own error
(it hands the message over). Its generated module must be what ``plain_gen`` writes today.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.wire_samples import wire_samples

import containerd_actors.protocol as wire
from containerd_actors.protocol import codec, plain_codec, plain_gen

REPO = Path(__file__).resolve().parents[2]
PROTOCOL = REPO / "containerd_actors" / "protocol"


def _samples(kinds: tuple[type, ...]) -> list[Any]:
    return [sample for cls, samples in wire_samples().items() if cls in kinds for sample in samples]


@pytest.fixture
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The plain codec may not hand these to the converter: it is meant to be sure of them."""

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the plain codec fell back to cattrs")

    monkeypatch.setattr(codec, "encode_request", refuse)
    monkeypatch.setattr(codec, "decode_reply", refuse)
    yield


def test_the_generated_module_is_what_the_generator_writes_today() -> None:
    assert (PROTOCOL / "plain_generated.py").read_text() == plain_gen.render(), (
        "run scripts/gen_plain_codec.py"
    )
    wanted = plain_gen.render_requests()
    assert (PROTOCOL / "plain_requests_generated.py").read_text() == wanted, "run scripts/gen_plain_codec.py"
    check = subprocess.run([sys.executable, "scripts/gen_plain_codec.py", "--check"], cwd=REPO, check=False)
    assert check.returncode == 0


def test_its_tables_are_the_codecs() -> None:
    assert plain_codec.BLOB_FIELDS == codec.BLOB_FIELDS
    from containerd_actors.protocol.plain_generated import REPLIES
    from containerd_actors.protocol.plain_requests_generated import LATER_FIELDS, REQUESTS

    assert {cls.__name__: fields for cls, fields in codec._LATER_FIELDS.items() if fields} == LATER_FIELDS
    assert set(REPLIES) == {cls.__name__ for cls in wire.REPLY_TYPES}
    assert set(REQUESTS) == {cls.__name__ for cls in wire.REQUEST_TYPES}


@pytest.mark.parametrize("framed", [False, True])
def test_every_request_sample_is_written_as_the_converter_writes_it(framed: bool) -> None:
    requests = _samples(wire.REQUEST_TYPES)
    expected = [codec.encode_request(request, framed=framed) for request in requests]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "encode_request", lambda *a, **k: pytest.fail("fell back to cattrs"))
        written = [plain_codec.encode_request(request, framed=framed) for request in requests]
    assert written == expected
    assert {type(request) for request in requests} == set(wire.REQUEST_TYPES)


def test_a_framed_request_never_base64s_its_blobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bytes of a framed WriteInput go into the frame as they are: base64 of a MiB of stdin,
    only to be dropped, once cost the client a quarter of its CPU per MiB."""

    request = wire.WriteInput("r-1", id="c", pid=3, data=memoryview(b"x" * 4096), close=True)
    expected = codec.encode_request(request, framed=True)
    real_b64encode = base64.b64encode

    def b64encode(value: bytes) -> bytes:
        assert not value, "base64 of a blob"
        return real_b64encode(value)

    monkeypatch.setattr(base64, "b64encode", b64encode)
    monkeypatch.setattr(codec, "encode_request", lambda *_a, **_k: pytest.fail("fell back to cattrs"))
    assert plain_codec.encode_request(request, framed=True) == expected


@pytest.mark.parametrize("framed", [False, True])
def test_every_reply_sample_is_read_as_the_converter_reads_it(framed: bool) -> None:
    replies = _samples(wire.REPLY_TYPES)
    encoded = [codec.encode_reply(reply, framed=framed) for reply in replies]
    expected = [codec.decode_reply(data) for data in encoded]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "decode_reply", lambda *a, **k: pytest.fail("fell back to cattrs"))
        read = [plain_codec.decode_reply(data) for data in encoded]
    assert read == expected == replies
    assert [type(reply) for reply in read] == [type(reply) for reply in expected]


def test_a_reply_of_a_newer_daemon_is_read_tolerantly_without_cattrs(no_fallback: None) -> None:
    """Unknown keys ignored, fields it left out (older daemon) at their defaults."""
    obj = json.loads(codec.encode_reply(wire.PingReply("1", "d", "0", "ipc:///e", 0, 0)))
    obj["added_in_revision_99"] = {"x": [1]}
    del obj["protocol_version"], obj["journal_id"]

    assert plain_codec.decode_reply(json.dumps(obj).encode()) == wire.PingReply(
        "1", "d", "0", "ipc:///e", 0, 0
    )


def _broken_replies() -> Iterator[tuple[str, bytes]]:
    """Every reply sample's JSON object broken in each way a field can be, and broken frames."""
    yield "not json", b"{nope"
    yield "not an object", b"[1, 2]"
    yield "no tag", b'{"request_id": "1"}'
    yield "unknown tag", b'{"type": "Nope", "request_id": "1"}'
    yield "tag of a request", b'{"type": "Ping", "request_id": "1"}'
    wrong = {str: 7, int: "7", float: "7.0", bool: 1, list: {"a": 1}, dict: [1], type(None): 0}
    for reply in _samples(wire.REPLY_TYPES):
        obj = json.loads(codec.encode_reply(reply))
        tag = obj["type"]
        for name, value in obj.items():
            if name == "type":
                continue
            yield f"{tag}.{name} missing", json.dumps({k: v for k, v in obj.items() if k != name}).encode()
            yield f"{tag}.{name} null", json.dumps({**obj, name: None}).encode()
            yield f"{tag}.{name} bool", json.dumps({**obj, name: True}).encode()
            yield f"{tag}.{name} wrong type", json.dumps({**obj, name: wrong[type(value)]}).encode()
            if isinstance(value, list) and value:
                yield f"{tag}.{name}[0] wrong", json.dumps({**obj, name: [[], *value[1:]]}).encode()
            if isinstance(value, dict):
                for inner in value:
                    broken = {**obj, name: {**value, inner: "?" if value[inner] != "?" else 0}}
                    yield f"{tag}.{name}.{inner} wrong", json.dumps(broken).encode()
        if tag == "ReadOutputReply":
            yield "bad base64", json.dumps({**obj, "stdout": "!!!"}).encode()
            yield (
                "unpadded base64",
                json.dumps({**obj, "stdout": base64.b64encode(b"ab").decode()[:-1]}).encode(),
            )
            yield "negative offset", json.dumps({**obj, "stdout_offset": -1}).encode()
    framed = codec.encode_reply(_samples((wire.ReadOutputReply,))[0], framed=True)
    yield "truncated frame", framed[:-3]
    yield "frame with its header cut", framed[:9]


def _outcome(decode: Any, data: bytes) -> Any:
    try:
        return decode(data)
    except wire.ProtocolError as exc:
        return (exc.code, exc.message, exc.details, exc.request_id)


def test_a_broken_reply_gives_the_converters_value_or_error() -> None:
    """One test over all cases: the samples are built when it runs, not at collection."""
    cases = list(_broken_replies())
    differ = [
        label
        for label, data in cases
        if _outcome(plain_codec.decode_reply, data) != _outcome(codec.decode_reply, data)
    ]
    assert differ == []
    assert len(cases) > 300


def test_a_request_it_is_not_sure_of_is_written_by_the_converter() -> None:
    """A bytearray where bytes are declared, a tuple for a list: attrs lets them through; whatever
    the converter makes of them, the plain codec makes the same (by handing them over)."""
    odd = [
        wire.AddProcess("1", "web", ("sh", "-c"), env=("A=1",)),  # type: ignore[arg-type]
        wire.WriteInput("2", "web", 0, bytearray(b"abc")),  # type: ignore[arg-type]
        wire.CreateContainer("3", "web", "/b", terminal=True),
    ]
    for request in odd:
        for framed in (False, True):
            assert plain_codec.encode_request(request, framed=framed) == codec.encode_request(
                request, framed=framed
            )
