"""Steps of an exec that run on every AddProcess: the spec built from the container's, and the
removal of a recycled pid's old files before its logs are made."""

from __future__ import annotations

import copy
from pathlib import Path

from containerd_actors.daemon.container.exits import forget_exec_files
from containerd_actors.daemon.state.layout import container_paths, prepare_state_dir
from containerd_actors.protocol import AddProcess, ProcessInfo, User
from containerd_actors.runc.process_spec import exec_spec

TEMPLATE = {
    "args": ["sh"],
    "env": ["PATH=/bin", "A=1"],
    "cwd": "/",
    "user": {"uid": 0, "gid": 0},
    "terminal": False,
    "consoleSize": {"height": 10, "width": 20},
    "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
}
INIT = ProcessInfo(pid=7, args=["sh"], env=["PATH=/bin", "A=1"], cwd="/", user=User(0, 0))


def test_the_exec_spec_leaves_the_containers_spec_as_it_was() -> None:
    """The spec is a shallow copy: every key it changes is replaced, never changed in place."""
    template = copy.deepcopy(TEMPLATE)
    request = AddProcess(
        "r1", "c1", ["top"], env=["A=2"], cwd="/tmp", user=User(5, 6, [7]), terminal=True, rows=3, cols=4
    )
    spec = exec_spec(template, INIT, request)
    assert template == TEMPLATE
    assert spec["args"] == ["top"] and spec["env"] == ["PATH=/bin", "A=2"] and spec["cwd"] == "/tmp"
    assert spec["user"] == {"uid": 5, "gid": 6, "additionalGids": [7]}
    assert spec["terminal"] is True and spec["consoleSize"] == {"height": 3, "width": 4}
    assert spec["capabilities"] == TEMPLATE["capabilities"] and spec["rlimits"] == TEMPLATE["rlimits"]
    plain = exec_spec(template, INIT, AddProcess("r2", "c1", ["true"]))
    assert "consoleSize" not in plain and plain["user"] == {"uid": 0, "gid": 0}
    assert template == TEMPLATE


def test_forgetting_an_execs_files_removes_both_logs_their_rotations_and_its_exit(tmp_path: Path) -> None:
    prepare_state_dir(tmp_path)
    paths = container_paths(tmp_path, "c1")
    paths.create()
    names = [
        f"exec-42.{stream}.log{suffix}" for stream in ("stdout", "stderr") for suffix in ("", ".1", ".base")
    ]
    for name in [*names, "exec-42.exited.json", "exec-43.stdout.log", "stdout.log"]:
        (paths.logs / name).write_text("x")
    forget_exec_files(paths, 42)
    assert sorted(path.name for path in paths.logs.iterdir()) == ["exec-43.stdout.log", "stdout.log"]
    forget_exec_files(paths, 42)  # nothing there: nothing to do, no error
    forget_exec_files(paths, 44)
