"""proto_schemas/ is generated from the message classes and agrees with what the codec sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from support.wire_samples import WIRE_CLASSES, decode, json_object, wire_samples

from containerd_actors.protocol import (
    ID_PATTERN,
    MAX_MESSAGE_BYTES,
    REPLY_TYPES,
    REQUEST_TYPES,
    ErrorCode,
    ErrorReply,
    Event,
    EventBatch,
    EventType,
    ProtocolError,
    Signal,
    StateReply,
    decode_reply,
    decode_request,
    event_topic,
)
from containerd_actors.protocol.schema import (
    EVENT_BATCH_FILE,
    EVENT_FILE,
    EVENT_TYPES,
    REPLY_FILE,
    REQUEST_FILE,
    SCHEMA_SUFFIX,
    SchemaError,
    class_schema,
    generate_schemas,
    render_schemas,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "proto_schemas"
REGENERATE = "run `python scripts/gen_schemas.py` and commit proto_schemas/"


def _samples() -> dict[type, list[Any]]:
    return wire_samples()


def _file_of(cls: type) -> str:
    if cls is EventBatch:
        return EVENT_BATCH_FILE
    return EVENT_FILE if cls in EVENT_TYPES else cls.__name__ + SCHEMA_SUFFIX


def _union_file_of(cls: type) -> str:
    if cls in REQUEST_TYPES:
        return REQUEST_FILE
    if cls in REPLY_TYPES:
        return REPLY_FILE
    return _file_of(cls)


# --------------------------------------------------------------------------- (a) no drift


def test_committed_schemas_match_the_message_classes() -> None:
    wanted = render_schemas()
    have = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob("*" + SCHEMA_SUFFIX)}
    missing = sorted(wanted.keys() - have.keys())
    extra = sorted(have.keys() - wanted.keys())
    drifted = sorted(name for name in wanted.keys() & have.keys() if wanted[name] != have[name])
    assert not (missing or extra or drifted), (
        f"proto_schemas/ is stale (missing {missing}, extra {extra}, drifted {drifted}); {REGENERATE}"
    )


def test_generation_is_deterministic() -> None:
    assert render_schemas() == render_schemas()
    for name, text in render_schemas().items():
        assert text.endswith("}\n"), name
        assert json.loads(text) == generate_schemas()[name]


def test_one_file_per_request_and_reply_plus_the_unions() -> None:
    names = set(generate_schemas())
    expected = {cls.__name__ + SCHEMA_SUFFIX for cls in (*REQUEST_TYPES, *REPLY_TYPES)}
    assert names == expected | {REQUEST_FILE, REPLY_FILE, EVENT_FILE, EVENT_BATCH_FILE}
    assert len({name.casefold() for name in names}) == len(names), "names must differ beyond case"


def test_the_check_script_passes_on_the_committed_files() -> None:
    import runpy

    module = runpy.run_path(str(SCHEMA_DIR.parent / "scripts" / "gen_schemas.py"), run_name="gen_schemas")
    assert module["main"](["--check"]) == 0, REGENERATE


def test_the_check_script_reports_drift_missing_and_extra(tmp_path: Path) -> None:
    import runpy

    module = runpy.run_path(str(SCHEMA_DIR.parent / "scripts" / "gen_schemas.py"), run_name="gen_schemas")
    assert module["main"](["--out", str(tmp_path)]) == 0
    assert module["check"](tmp_path) == []
    (tmp_path / "Ping.schema.json").write_text("{}\n")
    (tmp_path / "State.schema.json").unlink()
    (tmp_path / "Gone.schema.json").write_text("{}\n")
    (tmp_path / "README.md").write_text("not a schema\n")
    assert module["check"](tmp_path) == [
        "missing: State.schema.json",
        "extra:   Gone.schema.json",
        "drifted: Ping.schema.json",
    ]
    assert module["main"](["--check", "--out", str(tmp_path)]) == 1
    assert module["main"](["--out", str(tmp_path)]) == 0
    assert module["check"](tmp_path) == []
    assert (tmp_path / "README.md").exists()


def test_the_readme_covers_every_error_code_event_kind_and_the_size_limit() -> None:
    """proto_schemas/README.md is hand-written; this keeps its vocabulary lists complete."""
    readme = (SCHEMA_DIR / "README.md").read_text(encoding="utf-8")
    for vocabulary in (ErrorCode, EventType):
        for name, value in vars(vocabulary).items():
            if not name.startswith("_") and isinstance(value, str):
                assert f"`{value}`" in readme, (
                    f"document {vocabulary.__name__}.{name} in proto_schemas/README.md"
                )
    assert str(MAX_MESSAGE_BYTES) in readme
    assert "scripts/gen_schemas.py" in readme


# --------------------------------------------------------------------------- schema shape


@pytest.mark.parametrize("cls", [*REQUEST_TYPES, *REPLY_TYPES], ids=lambda c: c.__name__)
def test_tagged_classes_require_their_type_const(cls: type) -> None:
    schema = generate_schemas()[_file_of(cls)]
    assert schema["properties"]["type"]["const"] == cls.__name__
    assert "type" in schema["required"]
    # Writers strict, readers tolerant: the daemon refuses unknown request fields; replies may grow.
    assert schema["additionalProperties"] is (cls not in REQUEST_TYPES)


@pytest.mark.parametrize("cls", WIRE_CLASSES, ids=lambda c: c.__name__)
def test_every_field_appears_and_only_defaulted_fields_are_optional(cls: type) -> None:
    """(c) also covers classes and fields without a docstring: they still get a full schema."""
    schema = generate_schemas()[_file_of(cls)]
    fields = attrs.fields(cls)
    assert {f.name for f in fields} <= set(schema["properties"])
    for f in fields:
        required = f.default is attrs.NOTHING
        assert (f.name in schema["required"]) is required, f.name
    if cls.__doc__:
        assert schema["description"]
    else:
        assert "description" not in schema


def test_undocumented_class_gets_a_schema() -> None:
    @attrs.frozen
    class Undocumented:
        a: int
        b: str | None = None
        c: list[str] = attrs.field(factory=list)
        d: dict[str, int] = attrs.field(factory=dict)
        e: float = 0.5
        f: bool = True

    schema = class_schema(Undocumented, tagged=False)
    assert "description" not in schema
    assert schema["required"] == ["a"]
    assert schema["additionalProperties"] is True
    assert class_schema(Undocumented, tagged=False, closed=True)["additionalProperties"] is False
    assert schema["properties"] == {
        "a": {"type": "integer"},
        "b": {"type": ["string", "null"], "default": None},
        "c": {"type": "array", "items": {"type": "string"}, "default": []},
        "d": {"type": "object", "additionalProperties": {"type": "integer"}, "default": {}},
        "e": {"type": "number", "default": 0.5},
        "f": {"type": "boolean", "default": True},
    }


def test_nested_records_are_referenced_from_defs() -> None:
    schema = generate_schemas()["StateReply.schema.json"]
    assert schema["properties"]["machine"] == {"$ref": "#/$defs/MachineInfo"}
    assert schema["properties"]["containers"]["items"] == {"$ref": "#/$defs/ContainerInfo"}
    assert set(schema["$defs"]) == {"ContainerInfo", "ProcessInfo", "User", "MachineInfo"}
    for definition in schema["$defs"].values():
        assert definition["additionalProperties"] is True  # what a reply carries may grow
    request = generate_schemas()["AddProcess.schema.json"]
    assert request["$defs"]["User"]["additionalProperties"] is False  # what the daemon reads may not


def test_validators_become_constraints() -> None:
    props = generate_schemas()["Signal.schema.json"]["properties"]
    assert props["id"]["pattern"] == "^" + ID_PATTERN + "$"
    assert props["pid"]["minimum"] == 0
    assert (props["signal"]["minimum"], props["signal"]["maximum"]) == (1, 64)
    assert props["signal"]["default"] == 15


def test_unsupported_types_are_refused_loudly() -> None:
    @attrs.frozen
    class Odd:
        when: complex

    with pytest.raises(SchemaError, match=r"Odd\.when"):
        class_schema(Odd, tagged=False)


# --------------------------------------------------------------------------- (b) validation


def test_every_class_has_a_sample() -> None:
    assert set(EVENT_TYPES) <= set(WIRE_CLASSES), "teach WIRE_CLASSES in tests/support/wire_samples.py"
    missing = [cls.__name__ for cls in WIRE_CLASSES if not _samples().get(cls)]
    assert not missing, (
        f"add sample instances for {missing} to wire_samples() in tests/support/wire_samples.py"
    )


try:
    import jsonschema
except ImportError:  # the drift tests above still run; install the `test` extra for these
    jsonschema = None

needs_jsonschema = pytest.mark.skipif(jsonschema is None, reason="jsonschema is not installed")


def _validator(filename: str) -> Any:
    return jsonschema.Draft202012Validator(generate_schemas()[filename])


@needs_jsonschema
@pytest.mark.parametrize("filename", sorted(generate_schemas()))
def test_schemas_are_valid_draft_2020_12(filename: str) -> None:
    jsonschema.Draft202012Validator.check_schema(generate_schemas()[filename])


@needs_jsonschema
@pytest.mark.parametrize("cls", WIRE_CLASSES, ids=lambda c: c.__name__)
def test_encoded_samples_validate(cls: type) -> None:
    for message in _samples().get(cls, []):
        payload = json_object(message)
        for filename in {_file_of(cls), _union_file_of(cls)}:
            errors = [e.message for e in _validator(filename).iter_errors(payload)]
            assert not errors, f"{filename} rejects {payload}: {errors}"


@needs_jsonschema
@pytest.mark.parametrize("cls", [*REQUEST_TYPES, *REPLY_TYPES], ids=lambda c: c.__name__)
def test_a_sample_matches_exactly_one_branch_of_its_union(cls: type) -> None:
    payload = json_object(_samples()[cls][0])
    union = generate_schemas()[_union_file_of(cls)]
    matching = [
        branch["$ref"]
        for branch in union["oneOf"]
        if jsonschema.Draft202012Validator({**union, "oneOf": [branch]}).is_valid(payload)
    ]
    assert matching == [f"#/$defs/{cls.__name__}"]


@needs_jsonschema
@pytest.mark.parametrize("cls", WIRE_CLASSES, ids=lambda c: c.__name__)
def test_an_extra_key_is_refused_in_a_request_and_ignored_elsewhere(cls: type) -> None:
    """The schemas say what the codec does: writers strict, readers tolerant."""
    sample = _samples()[cls][0]
    payload = {**json_object(sample), "surprise": 1}
    request = cls in REQUEST_TYPES
    assert _validator(_file_of(cls)).is_valid(payload) is not request
    assert _validator(_union_file_of(cls)).is_valid(payload) is not request
    # The bytes as they travel: an event after its topic, all compact.
    topic = event_topic(sample.type).encode() + b" " if cls is Event else b""
    data = topic + json.dumps(payload, separators=(",", ":")).encode()
    if request:
        with pytest.raises(ProtocolError, match=r"extra fields found \(surprise\)"):
            decode(cls, data)
    else:
        assert decode(cls, data) == sample


@needs_jsonschema
def test_an_extra_key_in_a_nested_record_is_refused_in_a_request_and_ignored_in_a_reply() -> None:
    reply = json_object(_samples()[StateReply][1])
    reply["containers"][0]["processes"][0]["user"]["surprise"] = 1
    assert _validator(REPLY_FILE).is_valid(reply)
    assert decode_reply(json.dumps(reply).encode()) == _samples()[StateReply][1]
    request = {"type": "AddProcess", "request_id": "1", "id": "web", "args": ["true"]}
    request["user"] = {"uid": 0, "gid": 0, "surprise": 1}
    assert not _validator(REQUEST_FILE).is_valid(request)
    with pytest.raises(ProtocolError, match=r"extra fields found \(surprise\)"):
        decode_request(json.dumps(request).encode())


@needs_jsonschema
def test_defaulted_fields_may_be_omitted_as_the_codec_allows() -> None:
    payload = {"type": "Signal", "request_id": "1", "id": "web"}
    assert _validator(REQUEST_FILE).is_valid(payload)
    assert decode_request(json.dumps(payload).encode()) == Signal("1", "web")
    reply = {"type": "ErrorReply", "request_id": None, "code": "internal", "message": "boom"}
    assert _validator(REPLY_FILE).is_valid(reply)
    assert decode_reply(json.dumps(reply).encode()) == ErrorReply(None, "internal", "boom")


@needs_jsonschema
@pytest.mark.parametrize(
    "payload",
    [
        {"request_id": "1"},  # no tag
        {"type": "Nope", "request_id": "1"},  # unknown tag
        {"type": "Ping"},  # missing field
        {"type": "Signal", "request_id": "1", "id": "../x"},
        {"type": "Signal", "request_id": "1", "id": "a/b"},
        {"type": "Signal", "request_id": "1", "id": ""},
        {"type": "Signal", "request_id": "1", "id": "a" * 129},
        {"type": "Signal", "request_id": "1", "id": "web", "signal": 0},
        {"type": "Signal", "request_id": "1", "id": "web", "signal": 65},
        {"type": "Signal", "request_id": "1", "id": "web", "pid": -1},
        {"type": "Signal", "request_id": "1", "id": "web", "signal": "9"},
        {"type": "Signal", "request_id": 1, "id": "web"},
        {"type": "CreateContainer", "request_id": "1", "id": "web", "bundle": None},
        {"type": "Events", "request_id": "1", "limit": 0},
        {"type": "Events", "request_id": "1", "limit": 1001},
        {"type": "Events", "request_id": "1", "from_seq": -1},
    ],
)
def test_the_request_schema_rejects_what_a_client_must_not_send(payload: dict[str, Any]) -> None:
    assert not _validator(REQUEST_FILE).is_valid(payload)


@needs_jsonschema
@pytest.mark.parametrize(
    "payload",
    [
        {"type": "Signal", "request_id": "1", "id": "../x"},
        {"type": "Signal", "request_id": "1", "id": "a" * 129},
        {"type": "Signal", "request_id": "1", "id": "web", "signal": 65},
        {"type": "Signal", "request_id": "1", "id": "web", "pid": -1},
        {"type": "Ping"},
        {"type": "Ping", "request_id": "1", "surprise": True},
    ],
)
def test_what_the_schema_rejects_the_daemon_rejects_too(payload: dict[str, Any]) -> None:
    assert not _validator(REQUEST_FILE).is_valid(payload)
    with pytest.raises(ProtocolError):
        decode_request(json.dumps(payload).encode())
