"""The codec: every bad request becomes a ProtocolError with the right code and a useful message,
and every wire class survives an encode/decode round trip (event frames and batches in detail:
test_event_codec.py)."""

from __future__ import annotations

import json
import logging
import types
import typing
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.wire_samples import WIRE_CLASSES, decode, encode, wire_samples

from containerd_actors.protocol import (
    ID_PATTERN,
    PROTOCOL_VERSION,
    REPLY_TYPES,
    REQUEST_TYPES,
    CreateContainer,
    ErrorCode,
    ErrorReply,
    Event,
    EventBatch,
    Events,
    EventType,
    ListCheckpoints,
    Ping,
    ProtocolError,
    Signal,
    SignalReply,
    StateReply,
    decode_event_batch,
    decode_event_payload,
    decode_reply,
    decode_request,
    encode_event_batch,
    encode_event_payload,
    encode_reply,
    encode_request,
    migration,
    validators,
)

KNOWN_REQUEST_TAGS = sorted(cls.__name__ for cls in REQUEST_TYPES)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _signal(**fields: Any) -> bytes:
    return _dumps({"type": "Signal", "request_id": "r-1", "id": "web", **fields})


def _error(data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_request(data)
    return info.value


# --------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'{"type": "Ping", ', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"{'type': 'Ping'}", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b'{"a":' * 100_000, "not valid JSON"),
        (b'{"n": 1' + b"0" * 5000 + b"}", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"Ping"', "must be a JSON object, got str"),
        (b"null", "must be a JSON object, got NoneType"),
        (b"42", "must be a JSON object, got int"),
    ],
    ids=["truncated", "empty", "not-utf8", "single-quotes", "deep-array", "deep-object", "huge-int",
         "array", "string", "null", "number"],
)  # fmt: skip
def test_malformed_messages(data: bytes, words: str) -> None:
    error = _error(data)
    assert error.code == ErrorCode.MALFORMED
    assert words in error.message
    assert error.request_id is None
    reply = error.to_reply()
    assert decode_reply(encode_reply(reply)) == reply


# --------------------------------------------------------------------------- the type tag


def test_missing_type_names_the_known_types_and_echoes_request_id() -> None:
    error = _error(_dumps({"request_id": "r-9"}))
    assert error.code == ErrorCode.UNKNOWN_TYPE
    assert "missing" in error.message
    for tag in KNOWN_REQUEST_TAGS:
        assert tag in error.message
    assert error.request_id == "r-9"
    assert error.to_reply().request_id == "r-9"


@pytest.mark.parametrize("tag", ["Nope", "ping", "PingReply", "ErrorReply", "", 1, True])
def test_unknown_type_is_named_and_request_id_echoed(tag: Any) -> None:
    error = _error(_dumps({"type": tag, "request_id": "r-7"}))
    assert error.code == ErrorCode.UNKNOWN_TYPE
    assert f"unknown ({tag!r})" in error.message
    assert "expected one of: " + ", ".join(KNOWN_REQUEST_TAGS) in error.message
    assert error.request_id == "r-7"


@pytest.mark.parametrize("request_id", [None, 7, ["r"], {"r": 1}])
def test_a_non_string_request_id_is_not_echoed(request_id: Any) -> None:
    error = _error(_dumps({"type": "Nope", "request_id": request_id}))
    assert error.code == ErrorCode.UNKNOWN_TYPE
    assert error.request_id is None


def test_a_reply_tag_is_not_a_request_and_vice_versa() -> None:
    assert _error(encode_reply(ErrorReply("r", ErrorCode.INTERNAL, "x"))).code == ErrorCode.UNKNOWN_TYPE
    with pytest.raises(ProtocolError) as info:
        decode_reply(encode_request(Ping("r")))
    assert info.value.code == ErrorCode.UNKNOWN_TYPE
    assert "reply type is unknown ('Ping')" in info.value.message


# --------------------------------------------------------------------------- fields


def test_missing_field_is_named() -> None:
    error = _error(_dumps({"type": "CreateContainer", "request_id": "r-1", "id": "web"}))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert error.message.startswith("invalid CreateContainer: ")
    assert "required field missing @ $.bundle" in error.message
    assert error.details == ["required field missing @ $.bundle"]
    assert error.request_id == "r-1"


def test_missing_request_id_is_named() -> None:
    error = _error(_dumps({"type": "Ping"}))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert "$.request_id" in error.message
    assert error.request_id is None


def test_extra_field_is_named() -> None:
    error = _error(_dumps({"type": "Ping", "request_id": "r-1", "surprise": 1}))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert "extra fields found (surprise)" in error.message
    assert error.request_id == "r-1"


@pytest.mark.parametrize("value", ["x", "", [15], {"n": 15}, None, 1e400, float("-inf")])
def test_wrong_type_for_an_int_field_is_named(value: Any) -> None:
    error = _error(_signal(signal=value))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert "$.signal" in error.message
    assert error.request_id == "r-1"


def test_wrong_type_deep_in_a_reply_is_located() -> None:
    good = json.loads(encode_reply(wire_samples()[StateReply][1]))  # records nested three deep
    good["containers"][0]["processes"][0]["user"]["uid"] = "root"
    with pytest.raises(ProtocolError) as info:
        decode_reply(_dumps(good))
    assert info.value.code == ErrorCode.INVALID_REQUEST
    assert "$.containers[0].processes[0].user.uid" in info.value.message


def test_several_problems_are_all_listed() -> None:
    error = _error(_dumps({"type": "Signal", "request_id": "r-1", "pid": "x", "extra": 1}))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert len(error.details) >= 2
    assert "$.id" in error.message


@pytest.mark.parametrize(
    "bad_id",
    ["../x", "a/b", "/abs", "", "a" * 129, ".hidden", "-x", "_x", "a b", "a\n", "a\x00b", "é", ".."],
)
def test_ids_with_path_tricks_are_refused(bad_id: str) -> None:
    for data in (
        _signal(id=bad_id),
        _dumps({"type": "CreateContainer", "request_id": "r-1", "id": bad_id, "bundle": "/b"}),
    ):
        error = _error(data)
        assert error.code == ErrorCode.INVALID_REQUEST
        assert f"id {bad_id!r} must match {ID_PATTERN}" in error.message
        assert error.details and error.request_id == "r-1"


@pytest.mark.parametrize("good_id", ["a", "A9", "web.1", "a_b-c.d", "0" * 128])
def test_ids_at_the_edges_of_the_pattern_are_accepted(good_id: str) -> None:
    assert decode_request(_signal(id=good_id)) == Signal("r-1", good_id)


@pytest.mark.parametrize("number", [0, -1, 65, 1000, 10**30])
def test_signal_out_of_range_is_refused(number: int) -> None:
    error = _error(_signal(signal=number))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert f"signal must be between 1 and 64, got {number}" in error.message


@pytest.mark.parametrize("number", [1, 9, 64])
def test_signal_in_range_is_accepted(number: int) -> None:
    assert decode_request(_signal(signal=number)).signal == number


def test_negative_pid_is_refused() -> None:
    error = _error(_signal(pid=-1))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert "pid must be >= 0, got -1" in error.message


def test_defaults_fill_omitted_fields() -> None:
    assert decode_request(_signal()) == Signal("r-1", "web", pid=0, signal=15)


def test_events_defaults_read_the_first_page_of_the_journal() -> None:
    assert decode_request(_dumps({"type": "Events", "request_id": "r-1"})) == Events("r-1", 0, None, 1000)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"limit": 0}, "limit must be between 1 and 1000, got 0"),
        ({"limit": 1001}, "limit must be between 1 and 1000, got 1001"),
        ({"from_seq": -1}, "from_seq must be >= 0, got -1"),
        ({"since": "yesterday"}, "$.since"),
    ],
)
def test_bad_events_requests_are_refused(fields: dict[str, Any], words: str) -> None:
    error = _error(_dumps({"type": "Events", "request_id": "r-1", **fields}))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert words in error.message


# --------------------------------------------------------------------------- strict types
# cattrs' JSON converter would coerce ("9" -> 9, true -> 1, null -> "None"); the codec checks instead.


@pytest.mark.parametrize(
    "data",
    [
        _dumps({"type": "Ping", "request_id": 1}),
        _dumps({"type": "State", "request_id": {"a": 1}}),
        _signal(id=None),
        _signal(id=7),
        _dumps({"type": "CreateContainer", "request_id": "r-1", "id": "web", "bundle": ["/b"]}),
        _signal(signal=True),
        _signal(signal=1.5),
        _signal(signal="9"),
        _signal(pid=False),
    ],
    ids=["int-request_id", "object-request_id", "null-id", "int-id", "list-bundle", "bool-signal",
         "float-signal", "string-signal", "bool-pid"],
)  # fmt: skip
def test_wrong_json_type_is_refused(data: bytes) -> None:
    error = _error(data)
    assert error.code == ErrorCode.INVALID_REQUEST
    assert "expected" in error.message


@pytest.mark.parametrize("tag", [["Ping"], {"Ping": 1}])
def test_unhashable_type_tag_is_unknown_type(tag: Any) -> None:
    assert _error(_dumps({"type": tag, "request_id": "r-1"})).code == ErrorCode.UNKNOWN_TYPE


# --------------------------------------------------------------------------- round trips


def _examples() -> list[Any]:
    return [message for messages in wire_samples().values() for message in messages]


def _round_trip(message: Any) -> Any:
    data = encode(message)
    if isinstance(message, (*REQUEST_TYPES, *REPLY_TYPES)):
        assert json.loads(data)["type"] == type(message).__name__
    return decode(type(message), data)


@pytest.mark.parametrize("cls", WIRE_CLASSES, ids=lambda c: c.__name__)
def test_examples_round_trip(cls: type) -> None:
    examples = [m for m in _examples() if type(m) is cls]
    assert examples, f"add a {cls.__name__} to wire_samples() in tests/support/wire_samples.py"
    for message in examples:
        assert _round_trip(message) == message


# Strategies for every wire class, derived from the same type hints and validators as the
# schema generator; a new validator must be taught here (the test says so) before it passes.
_VALIDATOR_STRATEGIES: dict[Any, st.SearchStrategy[Any]] = {
    validators.valid_id: st.from_regex(ID_PATTERN, fullmatch=True),
    validators.non_negative: st.integers(min_value=0, max_value=2**63),
    validators.signal_number: st.integers(min_value=1, max_value=64),
    validators.valid_optional_name: st.none() | st.from_regex(ID_PATTERN, fullmatch=True),
    validators.valid_id_or_empty: st.just("") | st.from_regex(ID_PATTERN, fullmatch=True),
    validators.pause_or_run: st.sampled_from(["paused", "running"]),
    validators.non_empty_args: st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=3),
    validators.absolute_or_empty: st.just("") | st.from_regex(r"/[a-z/]{0,10}", fullmatch=True),
    validators.env_entries: st.lists(st.from_regex(r"[A-Z_]{1,5}=[a-z]{0,5}", fullmatch=True), max_size=3),
    validators.uint16: st.integers(min_value=0, max_value=0xFFFF),
    validators.tail_lines: st.integers(min_value=-1, max_value=10**6),
    validators.stream_offset: st.integers(min_value=-1, max_value=2**62),
    validators.wait_seconds: st.floats(min_value=0, max_value=validators.MAX_WAIT_S),
    validators.read_size: st.integers(min_value=1, max_value=validators.MAX_READ_BYTES),
    validators.page_limit: st.integers(min_value=1, max_value=validators.MAX_EVENTS_PER_PAGE),
    migration.file_kind: st.sampled_from(migration.FILE_KINDS),
    migration.file_name: st.from_regex(r"[a-z0-9-]{1,8}(\.img)?", fullmatch=True),
    migration.hex_sha256: st.binary(min_size=32, max_size=32).map(bytes.hex),
}


#: Fields whose domain is narrower than their type: generate values their validators accept.
_FIELD_STRATEGIES: dict[tuple[type, str], st.SearchStrategy[Any]] = {
    # An event kind becomes the topic, so it is validated to a small alphabet.
    (Event, "type"): st.sampled_from(
        [v for k, v in vars(EventType).items() if not k.startswith("_") and isinstance(v, str)]
    ),
}


_EVENT_KINDS = st.sampled_from(
    [v for k, v in vars(EventType).items() if not k.startswith("_") and isinstance(v, str)]
)


def _events(first_seq: int, size: int) -> st.SearchStrategy[list[Event]]:
    """``size`` consecutive events from ``first_seq``, each field drawn as for a lone Event."""
    return st.tuples(
        *(
            st.builds(
                Event,
                seq=st.just(first_seq + i),
                timestamp=_type_strategy(float),
                type=_EVENT_KINDS,
                id=_type_strategy(str),
                pid=_type_strategy(int),
                status=_type_strategy(int | None),
                reason=_type_strategy(str | None),
            )
            for i in range(size)
        )
    ).map(list)


#: Classes whose fields depend on one another: a batch's columns must be equally long.
_CLASS_STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    EventBatch: st.tuples(st.integers(min_value=1, max_value=2**62), st.integers(min_value=0, max_value=5))
    .flatmap(lambda first_and_size: _events(*first_and_size))
    .map(EventBatch.of),
}


def _type_strategy(hint: Any) -> st.SearchStrategy[Any]:
    if hint is type(None) or hint is None:
        return st.none()
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(min_value=-(2**63), max_value=2**64)
    if hint is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if hint is str:
        return st.text(max_size=20)
    if hint is bytes:
        return st.binary(max_size=20)
    if attrs.has(hint):
        return _class_strategy(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return st.one_of([_type_strategy(arg) for arg in args])
    if origin is list:
        return st.lists(_type_strategy(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(_type_strategy(args[0]), _type_strategy(args[1]), max_size=3)
    raise AssertionError(f"teach tests/unit/test_codec.py to generate {hint!r}")


def _class_strategy(cls: type) -> st.SearchStrategy[Any]:
    if cls in _CLASS_STRATEGIES:
        return _CLASS_STRATEGIES[cls]
    hints = typing.get_type_hints(cls)
    fields = {}
    for attribute in attrs.fields(cls):
        if not attribute.init:
            continue
        if (cls, attribute.name) in _FIELD_STRATEGIES:
            fields[attribute.name] = _FIELD_STRATEGIES[cls, attribute.name]
        elif attribute.validator is None:
            fields[attribute.name] = _type_strategy(hints[attribute.name])
        elif attribute.validator in _VALIDATOR_STRATEGIES:
            fields[attribute.name] = _VALIDATOR_STRATEGIES[attribute.validator]
        else:
            raise AssertionError(
                f"teach tests/unit/test_codec.py a strategy for {cls.__name__}.{attribute.name}"
            )
    return st.builds(cls, **fields)


def test_every_wire_class_has_an_example() -> None:
    covered = {type(m) for m in _examples()}
    missing = [cls.__name__ for cls in WIRE_CLASSES if cls not in covered]
    assert not missing, f"add {missing} to wire_samples() in tests/support/wire_samples.py"


@pytest.mark.parametrize("cls", WIRE_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_wire_class_round_trips(cls: type, data: st.DataObject) -> None:
    message = data.draw(_class_strategy(cls))
    assert _round_trip(message) == message


# --------------------------------------------------------------------------- robustness


def _decode_request_or_protocol_error(data: bytes) -> None:
    try:
        request = decode_request(data)
    except ProtocolError as exc:
        assert exc.code in {ErrorCode.MALFORMED, ErrorCode.UNKNOWN_TYPE, ErrorCode.INVALID_REQUEST}
        assert exc.message
        assert exc.request_id is None or isinstance(exc.request_id, str)
        encode_reply(exc.to_reply())  # the server can always send the error back
    else:
        assert isinstance(request, REQUEST_TYPES)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_request_or_a_protocol_error(data: bytes) -> None:
    _decode_request_or_protocol_error(data)


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_field_names = sorted({a.name for cls in REQUEST_TYPES for a in attrs.fields(cls)} | {"surprise"})
#: The tag may be any JSON value: lists and objects must be refused as cleanly as unknown names.
_tag = st.sampled_from(KNOWN_REQUEST_TAGS) | _json
_request_like = st.fixed_dictionaries(
    {"type": _tag},
    optional={name: _json for name in _field_names}
    | {"id": st.sampled_from(["web", "../x", ""]) | _json, "signal": st.integers(-5, 70) | _json},
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_json, _request_like))
def test_arbitrary_json_gives_a_request_or_a_protocol_error(value: Any) -> None:
    _decode_request_or_protocol_error(json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(st.one_of(_json, st.fixed_dictionaries({name: _json for name in attrs.fields_dict(EventBatch)})))
def test_arbitrary_json_gives_a_batch_or_a_protocol_error(value: Any) -> None:
    try:
        batch = decode_event_batch(json.dumps(value).encode())
    except ProtocolError as exc:
        assert exc.code == ErrorCode.MALFORMED and exc.message.startswith("bad event batch: ")
    else:
        assert all(isinstance(event, Event) for event in batch.events())


def test_a_tolerant_reader_says_at_debug_level_what_it_ignored(caplog: pytest.LogCaptureFixture) -> None:
    reply = {"type": "SignalReply", "request_id": "r-1", "by": "admin", "zone": 2}
    with caplog.at_level(logging.DEBUG, logger="containerd_actors.protocol.codec"):
        assert decode_reply(_dumps(reply)) == SignalReply("r-1")
    assert "SignalReply carries fields this reader does not know, ignored: ['by', 'zone']" in caplog.text


def test_ping_reply_announces_the_protocol_revision() -> None:
    """A client tells a daemon that predates the field (0) from one that speaks a revision."""
    old_daemon = {"type": "PingReply", "request_id": "r", "daemon_id": "d", "version": "0.1.0",
                  "events_address": "ipc:///e", "events_subscribers": 0, "last_event_seq": 0}  # fmt: skip
    assert decode_reply(_dumps(old_daemon)).protocol_version == 0
    assert PROTOCOL_VERSION >= 1


def test_a_later_request_field_is_sent_only_when_it_is_used() -> None:
    """An older daemon refuses fields it does not know; a request that does not use a field added
    after revision 1 must not carry it, or every new client would break on every older daemon."""
    plain = json.loads(encode_request(CreateContainer(request_id="1", id="a", bundle="/b")))
    assert "terminal" not in plain
    assert decode_request(json.dumps(plain).encode()).terminal is None
    used = json.loads(encode_request(CreateContainer(request_id="1", id="a", bundle="/b", terminal=False)))
    assert used["terminal"] is False
    by_id = json.loads(encode_request(ListCheckpoints(request_id="1", id="a")))
    assert set(by_id) == {"type", "request_id", "id"}
    by_bundle = json.loads(encode_request(ListCheckpoints(request_id="1", bundle="/srv/b")))
    assert by_bundle["bundle"] == "/srv/b"


def test_by_is_absent_for_local_clients_and_carried_for_tls_ones() -> None:
    local = Event(1, 1.0, "start-container", "a", 10)
    remote = Event(2, 2.0, "start-container", "b", 11, by="admin")
    assert b'"by"' not in encode_event_payload(local)  # absent, not null: local events did not change
    assert decode_event_payload(encode_event_payload(remote)).by == "admin"
    assert b'"bys"' not in encode_event_batch(EventBatch.of([local]))
    mixed = decode_event_batch(encode_event_batch(EventBatch.of([local, remote])))
    assert [e.by for e in mixed.events()] == [None, "admin"]
    assert [e.by for e in EventBatch.of([local, remote]).events(1)] == ["admin"]


@pytest.mark.parametrize(
    ("bys", "words"),
    [([1], "expected a string or null, got int @ $.bys[0]"), (["x", "y"], "bys 2")],
)
def test_a_bad_by_column_is_malformed(bys: Any, words: str) -> None:
    obj = json.loads(encode_event_batch(EventBatch.of([Event(1, 1.0, "exit", "a", 10)])))
    obj["bys"] = bys
    with pytest.raises(ProtocolError) as bad:
        decode_event_batch(json.dumps(obj).encode())
    assert words in bad.value.message
