"""The event codec: a frame is ``topic + b" " + json``, a batch its JSON columns alone; every bad
frame or batch is a ProtocolError that names the place, and batches read the same with or without
orjson."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from containerd_actors.protocol import (
    EVENT_TOPIC_PREFIX,
    TOPIC_SEPARATOR,
    ErrorCode,
    Event,
    EventBatch,
    EventType,
    ProtocolError,
    codec,
    decode_event,
    decode_event_batch,
    encode_event,
    encode_event_batch,
)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# --------------------------------------------------------------------------- events


@pytest.mark.parametrize("payload", [b"[1]", b"null", b"[" * 100_000])
def test_bad_event_payload_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_event(b"/containers/exit " + payload)


def test_an_event_kind_that_would_break_framing_is_refused() -> None:
    with pytest.raises(ValueError, match="must match"):
        Event(seq=1, timestamp=0.0, type="a b", id="web", pid=1)


def test_event_frame_is_topic_space_json() -> None:
    event = Event(seq=3, timestamp=1.5, type=EventType.EXIT, id="web", pid=42, status=137)
    frame = encode_event(event)
    topic, sep, payload = frame.partition(TOPIC_SEPARATOR)
    assert topic == (EVENT_TOPIC_PREFIX + EventType.EXIT).encode()
    assert sep == b" "
    assert json.loads(payload) == {
        "seq": 3,
        "timestamp": 1.5,
        "type": "exit",
        "id": "web",
        "pid": 42,
        "status": 137,
        "reason": None,
    }
    assert decode_event(frame) == event


def test_a_newer_daemons_fields_are_ignored_by_readers() -> None:
    """Readers are tolerant: an event or batch with a field this reader does not know still reads."""
    frame = b'/containers/exit {"seq":1,"timestamp":1,"type":"exit","id":"a","pid":1,"extra":2}'
    assert decode_event(frame) == Event(1, 1.0, "exit", "a", 1, None, None)
    batch = decode_event_batch(_batch(surprise=1, hosts=["h1", "h2"]))
    assert batch.events() == decode_event_batch(_batch()).events()


@pytest.mark.parametrize(
    "frame",
    [
        b"/containers/exit not-json",
        b"/containers/exit {}",
        b'/containers/exit {"seq": 1}',
        b"no-separator",
    ],
)
def test_bad_event_frames(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_event(frame)
    assert info.value.code == ErrorCode.MALFORMED
    assert "bad event frame" in info.value.message


# --------------------------------------------------------------------------- event batches


def _batch(**fields: Any) -> bytes:
    good = {
        "first_seq": 7,
        "timestamps": [1.5, 2.0],
        "types": ["start-container", "exit"],
        "ids": ["web", "web"],
        "pids": [42, 42],
        "statuses": [None, 137],
        "reasons": [None, None],
    }
    return _dumps({**good, **fields})


def test_a_batch_holds_consecutive_events_column_by_column() -> None:
    batch = decode_event_batch(_batch())
    assert (batch.first_seq, batch.count, batch.last_seq) == (7, 2, 8)
    expected = [
        Event(seq=7, timestamp=1.5, type=EventType.START_CONTAINER, id="web", pid=42),
        Event(seq=8, timestamp=2.0, type=EventType.EXIT, id="web", pid=42, status=137),
    ]
    assert batch.events() == expected
    assert batch.events(1) == expected[1:]
    assert batch.events(0, 1) == expected[:1]
    assert batch.events(2) == []
    assert EventBatch.of(expected) == batch
    # Events built without their validators behave like any other: equal, hashable, frozen.
    assert hash(batch.events()[0]) == hash(expected[0])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        batch.events()[0].pid = 1  # type: ignore[misc]


def test_a_batch_frame_is_its_json_object_alone() -> None:
    batch = decode_event_batch(_batch())
    assert json.loads(encode_event_batch(batch)) == json.loads(_batch())


def test_integer_timestamps_in_a_batch_become_floats() -> None:
    [event] = decode_event_batch(
        _batch(timestamps=[1700000000], types=["exit"], ids=["a"], pids=[1], statuses=[0], reasons=[None])
    ).events()
    assert event.timestamp == 1700000000.0 and type(event.timestamp) is float


def test_events_of_a_batch_must_be_consecutive() -> None:
    with pytest.raises(ValueError, match="does not follow"):
        EventBatch.of([Event(1, 0.0, "exit", "a", 1), Event(3, 0.0, "exit", "a", 1)])


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"not json", "bad event batch: message is not valid JSON"),
        (b"[1]", "bad event batch: message must be a JSON object, got list"),
        (_batch(pids=[42, "42"]), "expected an integer, got str @ $.pids[1]"),
        (_batch(pids=[42, True]), "expected an integer, got bool @ $.pids[1]"),
        (_batch(timestamps=[1.5, None]), "expected a number, got null @ $.timestamps[1]"),
        (_batch(ids=["web", 7]), "expected a string, got int @ $.ids[1]"),
        (_batch(statuses=[None, "0"]), "expected an integer or null, got str @ $.statuses[1]"),
        (_batch(reasons=[None, 1]), "expected a string or null, got int @ $.reasons[1]"),
        (_batch(first_seq="7"), "expected an integer, got str @ $.first_seq"),
        (_batch(first_seq=-1), "first_seq must be >= 0, got -1"),
        (_batch(types="exit"), "expected a list, got str @ $.types"),
        (_batch(types=["exit", "a b"]), "types holds 'a b', which must match"),
        (_batch(pids=[42]), "must be equally long, got timestamps 2, types 2, ids 2, pids 1"),
        (
            _dumps({k: v for k, v in json.loads(_batch()).items() if k != "reasons"}),
            "required field missing @ $.reasons",
        ),
    ],
    ids=["not-json", "not-object", "str-pid", "bool-pid", "null-timestamp", "int-id", "str-status",
         "int-reason", "str-first_seq", "negative-first_seq", "column-not-list", "bad-kind", "short-column",
         "missing-field"],
)  # fmt: skip
def test_bad_batches_are_refused_with_the_place_named(data: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_event_batch(data)
    assert info.value.code == ErrorCode.MALFORMED
    assert info.value.message.startswith("bad event batch: ")
    assert words in info.value.message


@pytest.mark.parametrize(
    "data",
    [
        _batch(),
        _batch(timestamps=[float("nan"), 1e300]),  # orjson refuses NaN: json must take over
        _batch(pids=[2**70, 1]),  # beyond orjson's 64 bits
        _batch(ids=["\ud800", "web"]),  # a lone surrogate
        _batch(pids=[1, "1"]),
        b'{"first_seq": 1, "timestamps": [1e400]}',
        b"\xff{}",
    ],
    ids=["good", "nan", "huge-int", "lone-surrogate", "bad-type", "overflow", "not-utf8"],
)
def test_a_batch_reads_the_same_with_or_without_orjson(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def outcome() -> Any:
        try:
            return repr(decode_event_batch(data).events())  # repr: NaN != NaN
        except ProtocolError as exc:
            return exc.code, exc.message

    with_orjson = outcome()
    monkeypatch.setattr(codec, "orjson", None)
    assert outcome() == with_orjson


def test_every_problem_of_a_batch_is_listed() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_event_batch(_batch(pids=["x", 1], ids=[1, "a"], first_seq="1"))
    assert len(info.value.details) == 3
