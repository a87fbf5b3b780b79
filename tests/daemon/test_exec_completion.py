"""An exec's intent, process spec, pid file and pending reaper key go once its record stands for
it: after the AddProcess reply (off the client's wait), but before the actor serves anything else."""

from __future__ import annotations

import signal
from pathlib import Path

from support.actors import Harness, running, write_bundle

from containerd_actors import protocol as wire
from containerd_actors.daemon.container.process import reaper_key
from containerd_actors.daemon.state.layout import container_paths


async def test_an_execs_intent_and_files_are_gone_before_the_next_request_is_served(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    async with running(Harness(state_dir)) as harness:
        bundle = write_bundle(tmp_path / "b", "cat")
        await harness.ask(wire.CreateContainer(request_id="r", id="c1", bundle=str(bundle)))
        await harness.next_event()
        first = await harness.ask(wire.AddProcess(request_id="r", id="c1", args=["cat"]))
        # The same actor's next request is served after the first exec's completion.
        second = await harness.ask(wire.AddProcess(request_id="r", id="c1", args=["cat"]))
        await harness.ask(wire.Signal(request_id="r", id="c1", pid=second, signal=signal.SIGCONT))
        paths = container_paths(state_dir, "c1")
        left = sorted(path.name for path in paths.directory.iterdir())
        assert not [name for name in left if name.startswith("intent-")]
        assert not [name for name in left if name.startswith("exec-") and not name.endswith(".process.json")]
        assert paths.exec_record(first).exists() and paths.exec_record(second).exists()
        calls = harness.reaper.calls
        for number, pid in ((1, first), (2, second)):
            pending = f"c1/exec-{number}"
            kept_under_pid = calls.index(("keep", reaper_key("c1", pid), 3))
            assert calls.index(("keep", pending, 3)) < kept_under_pid < calls.index(("drop", pending, 0))


async def test_the_addprocess_answer_is_taken_before_the_exec_is_completed(tmp_path: Path) -> None:
    """The completion waits until the requester has had its turn: the answer is not held back
    behind the unlinks and reaper messages (whichever way trio orders the runnable tasks)."""
    state_dir = tmp_path / "state"
    async with running(Harness(state_dir)) as harness:
        bundle = write_bundle(tmp_path / "b", "cat")
        await harness.ask(wire.CreateContainer(request_id="r", id="c1", bundle=str(bundle)))
        await harness.next_event()
        for number in range(1, 21):
            await harness.ask(wire.AddProcess(request_id="r", id="c1", args=["cat"]))
            pending = f"c1/exec-{number}"
            assert ("drop", pending, 0) not in harness.reaper.calls
            assert container_paths(state_dir, "c1").intent("exec", number).exists()
