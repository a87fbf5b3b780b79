"""The generated structure functions on State replies as big and as odd as daemons send them.

``test_plain_codec`` holds the plain codec to the converter on one sample of each reply. A State
of every container is the reply that grows (1,000 containers: 1,000 ``ContainerInfo``, as many
``ProcessInfo`` and ``User``), so its decoding checks each field's type inline and builds each
instance positionally (``plain_gen._structure_function``). These tests hold that to the converter
on generated replies: many containers, every status, exec'd processes, terminals, unicode and
odd text, fields an older daemon leaves out, and every nested field broken in turn.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

import containerd_actors.protocol as wire
from containerd_actors.protocol import codec, plain_codec, plain_gen

STATUSES = ("running", "paused", "stopped", "created")
#: Text that JSON escapes or that is not ASCII: quotes, backslashes, controls, NUL, accents, CJK,
#: an emoji (a surrogate pair in ``\\u`` escapes), a lone combining mark, right-to-left text.
ODD_TEXT = ('"', "\\", "\n\t", "\x00", "é", "容器", "🐳", "\u0301", "مرحبا", "", " ")


def _text(rng: random.Random, prefix: str) -> str:
    return prefix + "".join(rng.choice(ODD_TEXT) for _ in range(rng.randrange(3)))


def _process(rng: random.Random, pid: int) -> wire.ProcessInfo:
    user = wire.User(
        uid=rng.choice((0, 1000, 65534, 2**32 - 1)),
        gid=rng.choice((0, 100, 2**31)),
        additional_gids=[rng.randrange(70000) for _ in range(rng.randrange(4))],
    )
    return wire.ProcessInfo(
        pid=pid,
        args=[_text(rng, "sleep"), *(_text(rng, "") for _ in range(rng.randrange(3)))],
        env=[f"K{i}={_text(rng, 'v')}" for i in range(rng.randrange(4))],
        cwd=rng.choice(("/", "", "/srv/é", _text(rng, "/w"))),
        user=user,
        terminal=rng.random() < 0.3,
    )


def random_state(seed: int, containers: int) -> wire.StateReply:
    """A State as a daemon could send it: inits and exec'd processes, every status (a stopped
    container's pid is 0, and it has no processes), unicode ids and bundles."""
    rng = random.Random(seed)
    listed = []
    for index in range(containers):
        status = rng.choice(STATUSES)
        pid = 0 if status == "stopped" else 1000 + index
        processes = [] if status == "stopped" else [_process(rng, pid)]
        processes += [_process(rng, 50000 + index * 8 + n) for n in range(rng.choice((0, 0, 1, 3)))]
        listed.append(
            wire.ContainerInfo(
                id=_text(rng, rng.choice(("web-", "容器-", "c"))) + str(index),
                bundle=_text(rng, "/srv/bundles/"),
                status=status,
                pid=pid,
                processes=processes,
            )
        )
    return wire.StateReply(f"r-{seed}", listed, wire.MachineInfo(_text(rng, "host"), 2, 1 << 33))


@pytest.fixture
def converter_decode(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``codec.decode_reply`` for the test to compare with; the plain codec may not fall back to it."""
    real = codec.decode_reply
    monkeypatch.setattr(codec, "decode_reply", lambda *_a, **_k: pytest.fail("fell back to cattrs"))
    return real


def _outcome(decode: Any, data: bytes) -> Any:
    try:
        return decode(data)
    except wire.ProtocolError as exc:
        return (exc.code, exc.message, exc.details, exc.request_id)


def _types(value: Any) -> Any:
    """``value`` with every attrs instance, list and primitive replaced by its type, recursively:
    equal values of other types (``1`` and ``1.0``, ``True`` and ``1``) compare unequal here."""
    if attrs.has(type(value)):
        return (type(value), [_types(getattr(value, a.name)) for a in attrs.fields(type(value))])
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value)


@pytest.mark.parametrize(("seed", "containers"), [(1, 0), (2, 1), (3, 40), (4, 1000)])
def test_a_state_is_read_as_the_converter_reads_it(seed: int, containers: int) -> None:
    state = random_state(seed, containers)
    data = codec.encode_reply(state)
    expected = codec.decode_reply(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "decode_reply", lambda *_a, **_k: pytest.fail("fell back to cattrs"))
        read = plain_codec.decode_reply(data)
    assert read == expected == state
    assert _types(read) == _types(expected)


def test_what_an_older_daemon_leaves_out_takes_the_default(converter_decode: Any) -> None:
    """Fields with defaults (a process's ``terminal``, its user's ids, a container's processes)
    may be missing; unknown keys are ignored, at every depth."""
    obj = json.loads(codec.encode_reply(random_state(5, 6)))
    for index, container in enumerate(obj["containers"]):
        container["added_later"] = {"x": [index]}
        if index % 3 == 0:
            del container["processes"]
            continue
        for process in container["processes"]:
            del process["terminal"]
            process["user"] = {} if index % 2 else {"uid": 7, "added": None}
    data = json.dumps(obj).encode()
    read = plain_codec.decode_reply(data)
    assert read == converter_decode(data)
    assert _types(read) == _types(converter_decode(data))
    assert read.containers[0].processes == []
    assert read.containers[1].processes[0].user == wire.User()
    assert read.containers[1].processes[0].terminal is False


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) inside a JSON value, containers and leaves."""
    yield path, value
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, (*path, index))


def _replaced(obj: Any, path: tuple[Any, ...], new: Any) -> Any:
    copy = json.loads(json.dumps(obj))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return copy


def _removed(obj: Any, path: tuple[Any, ...]) -> Any:
    copy = json.loads(json.dumps(obj))
    target = copy
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return copy


#: What each kind of JSON value is broken into: another type that the converter refuses or
#: converts (a bool for an int, an int for a float, a float for an int), null, a container.
WRONG = {
    str: (7, None, ["x"]),
    int: ("7", True, 7.0, None),
    float: ("7.0", None),
    bool: (1, "true", None),
    list: ({"a": 1}, "x", None, [[]]),
    dict: ([1], "x", None),
}


def _broken_states() -> Iterator[tuple[str, bytes]]:
    state = random_state(6, 3)
    state = attrs.evolve(
        state,
        containers=[
            *state.containers,
            wire.ContainerInfo("p", "/b", "paused", 9, [_process(random.Random(0), 9) for _ in range(2)]),
        ],
    )
    obj = json.loads(codec.encode_reply(state))
    for path, value in _paths(obj):
        if not path or path == ("type",):
            continue
        label = ".".join(map(str, path))
        for new in WRONG.get(type(value), ()):
            yield f"{label} = {new!r}", json.dumps(_replaced(obj, path, new)).encode()
        if isinstance(path[-1], str):
            yield f"{label} missing", json.dumps(_removed(obj, path)).encode()


def test_every_nested_field_broken_gives_the_converters_value_or_error() -> None:
    """Inside the list too: a user's uid as text, a bool among the gids, a process without pid."""
    cases = list(_broken_states())
    differ = [
        label
        for label, data in cases
        if _outcome(plain_codec.decode_reply, data) != _outcome(codec.decode_reply, data)
        or _types(_outcome(plain_codec.decode_reply, data)) != _types(_outcome(codec.decode_reply, data))
    ]
    assert differ == []
    assert len(cases) > 300


def test_exited_processes_and_events_with_statuses_are_read_as_the_converter_reads_them(
    converter_decode: Any,
) -> None:
    """The other replies the same generator writes: an exited process's output with its status
    (and without), events with and without a status."""
    replies = [
        wire.ReadOutputReply("r-1", b"out\x00", "é".encode(), 0, 4, 0, 2, exited=True, status=137),
        wire.ReadOutputReply("r-2", b"", b"", 0, 0, 0, 0, exited=True, status=None),
        wire.ReadOutputReply("r-3", b"x", b"", 5, 6, 0, 0),
        wire.EventsReply(
            "r-4",
            [
                wire.Event(1, 1.5, "exit", "容器", 42, status=0),
                wire.Event(2, 2, "exit", "web", 43, status=255, reason="oom"),
                wire.Event(3, 3.25, "start-container", "web", 44),
            ],
            next_seq=4,
            last_seq=3,
            first_available_seq=1,
        ),
    ]
    for reply in replies:
        data = codec.encode_reply(reply)
        read = plain_codec.decode_reply(data)
        assert read == converter_decode(data) == reply
        assert _types(read) == _types(converter_decode(data))


def test_the_generator_refuses_a_default_it_cannot_copy() -> None:
    """A factory that takes self, or one that is neither a builtin list/dict nor a wire class,
    makes the generator fail rather than guess."""

    @attrs.frozen
    class TakesSelf:
        a: int
        b: list[int] = attrs.field(default=attrs.Factory(lambda self: [self.a], takes_self=True))

    @attrs.frozen
    class OtherFactory:
        c: list[int] = attrs.field(factory=lambda: [1])

    for cls in (TakesSelf, OtherFactory):
        with pytest.raises(TypeError, match="plain codec"):
            plain_gen._structure_function(cls)
