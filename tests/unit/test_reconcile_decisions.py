"""The start-up reconcile's rules (``daemon.state.recovery``): records and intents against runc.

The rule that matters most is that nothing runc runs under the daemon's root is left unlisted:
every container runc reports as running or paused is adopted, whatever the state directory holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from containerd_actors.daemon.state.layout import (
    ContainerRecord,
    Intent,
    IntentOp,
    complete_intent,
    container_paths,
    read_intent,
)
from containerd_actors.daemon.state.recovery import (
    FoundContainer,
    FoundExec,
    decide,
    decide_all,
    decide_execs,
    scan_containers,
)
from containerd_actors.runc.driver import ListedContainer

NOW = 1000.0
RECORD = ContainerRecord("c1", "/bundles/b", 4242, 77, 10.0, request_id="req-1")
START = Intent(IntentOp.START, "c1", "/bundles/b", "req-9", kept_key="c1", created=5.0)


def listed(status: str, pid: int = 4242, id: str = "c1") -> ListedContainer:
    return ListedContainer(id, status, pid, "/runc/said/bundle")


# ---------------------------------------------------------------------------- containers with a record


@pytest.mark.parametrize("status", ["running", "paused"])
def test_a_live_container_with_a_record_is_adopted_from_it_in_runcs_status(status: str) -> None:
    decision = decide(FoundContainer("c1", RECORD), listed(status), NOW)
    assert (decision.record, decision.new_record, decision.status) == (RECORD, False, status)
    assert not (decision.delete_from_runc or decision.forget or decision.find_execs)


@pytest.mark.parametrize("status", ["stopped", "absent"])
def test_a_record_whose_container_is_gone_is_adopted_so_that_its_exit_is_published(status: str) -> None:
    runc = None if status == "absent" else listed(status, pid=0)
    decision = decide(FoundContainer("c1", RECORD), runc, NOW)
    assert decision.record == RECORD and decision.status == status
    assert not (decision.delete_from_runc or decision.forget)
    assert "exit is published" in decision.why


def test_a_recorded_container_left_in_created_is_deleted_and_its_exit_published() -> None:
    decision = decide(FoundContainer("c1", RECORD), listed("created"), NOW)
    assert decision.delete_from_runc and decision.record == RECORD and decision.status == "absent"


def test_an_exec_in_flight_makes_the_reconcile_look_at_runc_ps() -> None:
    exec_intent = Intent(IntentOp.EXEC, "c1", "/bundles/b", "req-2", number=3, kept_key="c1/exec-3")
    decision = decide(FoundContainer("c1", RECORD, (exec_intent,)), listed("running"), NOW)
    assert decision.find_execs and decision.record == RECORD


# ---------------------------------------------------------------------------- starts that recorded nothing


@pytest.mark.parametrize("status", ["running", "paused"])
def test_a_start_killed_after_runc_made_the_container_is_adopted_with_its_request_id(status: str) -> None:
    decision = decide(FoundContainer("c1", None, (START,)), listed(status, pid=555), NOW)
    assert decision.new_record and decision.status == status and decision.find_execs
    assert decision.record == ContainerRecord("c1", "/bundles/b", 555, None, NOW, request_id="req-9")


def test_a_start_whose_container_already_stopped_is_adopted_by_runcs_pid_file() -> None:
    decision = decide(FoundContainer("c1", None, (START,), init_pid=556), listed("stopped", pid=0), NOW)
    assert decision.new_record and decision.record is not None
    assert (decision.record.pid, decision.status) == (556, "stopped")


@pytest.mark.parametrize(
    ("runc", "deleted"),
    [(listed("created"), True), (listed("stopped", pid=0), True), (None, False)],
    ids=["created", "stopped-without-pid", "absent"],
)
def test_a_start_that_made_nothing_running_is_deleted_and_forgotten(
    runc: ListedContainer | None, deleted: bool
) -> None:
    decision = decide(FoundContainer("c1", None, (START,)), runc, NOW)
    assert decision.record is None and decision.forget and decision.delete_from_runc == deleted


# ---------------------------------------------------------------------------- what only runc knows


@pytest.mark.parametrize("status", ["running", "paused"])
def test_a_live_container_nobody_recorded_is_adopted_from_runcs_state(status: str) -> None:
    decision = decide(None, listed(status, pid=777), NOW)
    assert decision.new_record and decision.status == status
    assert decision.record == ContainerRecord("c1", "/runc/said/bundle", 777, None, NOW)


@pytest.mark.parametrize("status", ["created", "stopped"])
def test_a_dead_container_nobody_recorded_is_deleted(status: str) -> None:
    decision = decide(None, listed(status, pid=0), NOW)
    assert decision.delete_from_runc and decision.record is None and not decision.forget


STATUSES = st.sampled_from(["running", "paused", "created", "stopped", None])
DIRS = st.sampled_from(["record", "start", "start-with-pid", None])


@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.tuples(DIRS, STATUSES), max_size=4))
def test_nothing_runc_runs_is_left_unlisted_and_nothing_recorded_is_dropped(
    world: dict[str, tuple[str | None, str | None]],
) -> None:
    found: dict[str, FoundContainer] = {}
    runc: list[ListedContainer] = []
    for id, (directory, status) in world.items():
        if directory == "record":
            found[id] = FoundContainer(id, attrs.evolve(RECORD, id=id))
        elif directory is not None:
            init_pid = 900 if directory == "start-with-pid" else None
            found[id] = FoundContainer(id, None, (attrs.evolve(START, id=id),), init_pid)
        if status is not None:
            runc.append(listed(status, id=id))
    decisions = {decision.id: decision for decision in decide_all(found, runc)}
    assert set(decisions) == {id for id, (directory, status) in world.items() if directory or status}
    for container in runc:
        decision = decisions[container.id]
        if container.status in ("running", "paused"):
            assert decision.record is not None and decision.status == container.status, decision
        else:  # created or stopped: deleted from runc, or adopted so that the actor deletes it
            assert decision.delete_from_runc or decision.record is not None, decision
    for id, container in found.items():
        if container.record is not None:
            assert decisions[id].record == container.record  # its exit, at least, is published


# ---------------------------------------------------------------------------- exec'd processes


def exec_intent(number: int) -> Intent:
    return Intent(IntentOp.EXEC, "c1", "/bundles/b", f"req-{number}", number=number, created=1.0)


def test_execs_are_found_by_their_intent_and_by_runc_ps() -> None:
    init = 100
    ps = {init: 1, 101: 50, 102: init, 103: 50, 104: 50, 105: 103}
    recorded = {101}
    intents = [(exec_intent(1), 101), (exec_intent(2), 103), (exec_intent(3), None), (exec_intent(4), 99)]
    found = decide_execs(init, recorded, intents, ps)
    assert found == [
        FoundExec(99, intents[3][0], alive=False),  # runc started it, it has exited: its exit is published
        FoundExec(103, intents[1][0], alive=True),
        FoundExec(104, None, alive=True),  # orphaned to the subreaper by runc exec -d, no intent left
    ]
    # 101 is recorded, 102 and 105 are children of container processes, exec 3 never got a pid.


def test_without_runc_ps_only_intents_with_a_pid_are_found() -> None:
    found = decide_execs(100, set(), [(exec_intent(1), 200), (exec_intent(2), None)], None)
    assert found == [FoundExec(200, exec_intent(1), alive=False)]


# ---------------------------------------------------------------------------- the records on disk


def test_intents_round_trip_and_bad_ones_are_refused(tmp_path: Path) -> None:
    paths = container_paths(tmp_path, "c1")
    paths.directory.mkdir(parents=True)
    written = exec_intent(7)
    path = written.write(paths)
    assert path == paths.intent(IntentOp.EXEC, 7) and read_intent(path) == written
    complete_intent(path)
    assert not path.exists()
    for raw in (
        {"op": "explode", "id": "c1", "bundle": "/b", "created": 1.0},
        {"op": "exec", "id": "c1", "bundle": "/b", "created": 1.0},
        {"op": "start", "id": "c1", "bundle": "/b", "number": 1, "created": 1.0},
        {"op": "start", "id": "c1"},
        [],
    ):
        path.write_text(json.dumps(raw))
        with pytest.raises(ValueError):
            read_intent(path)


def test_a_record_without_request_id_from_an_older_daemon_still_loads() -> None:
    raw = {"id": "c1", "bundle": "/b", "pid": 42, "pid_start_time": None, "created": 1.0}
    assert ContainerRecord.parse(raw).request_id is None
    assert ContainerRecord.parse({**raw, "request_id": "r"}).request_id == "r"


def test_an_interrupted_start_is_found_and_a_directory_with_nothing_is_quarantined(tmp_path: Path) -> None:
    containers, quarantine = tmp_path / "containers", tmp_path / "quarantine"
    starting = container_paths(tmp_path, "starting")
    starting.directory.mkdir(parents=True)
    start_of = attrs.evolve(START, id="starting")
    start_of.write(starting)
    starting.pid_file.write_text("321\n")
    (starting.directory / "intent-exec-1.json").write_text("{torn")
    recorded = container_paths(tmp_path, "recorded")
    recorded.directory.mkdir()
    attrs.evolve(RECORD, id="recorded").write(recorded)
    (containers / "empty").mkdir()
    found = scan_containers(containers, quarantine)
    assert found == {
        "starting": FoundContainer("starting", None, (start_of,), init_pid=321),
        "recorded": FoundContainer("recorded", attrs.evolve(RECORD, id="recorded")),
    }
    assert not (starting.directory / "intent-exec-1.json").exists()  # unreadable: dropped
    assert [p.name.split(".")[0] for p in quarantine.iterdir()] == ["empty"]
