"""Steps of an exec that run on every AddProcess: the spec built from the container's, and the
removal of a recycled pid's old files before its logs are made."""

from __future__ import annotations

import copy
from pathlib import Path

from containerd_actors.daemon.container.exec_files import ExecFilePids
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


def test_only_owned_pids_and_pids_with_files_when_first_listed_may_have_files(tmp_path: Path) -> None:
    """What lets an exec skip the seven unlinks for a new pid (``container.exec_files``)."""
    prepare_state_dir(tmp_path)
    paths = container_paths(tmp_path, "c1")
    paths.create()
    for name in ("exec-42.stdout.log.1", "exec-43.exited.json", "stdout.log", "exec-x.log", "exited.json"):
        (paths.logs / name).write_text("x")
    pids = ExecFilePids(paths)
    owned = {7}
    assert pids.may_exist(42, owned) and pids.may_exist(43, owned)  # an earlier server's leftovers
    assert not pids.may_exist(44, owned)
    (paths.logs / "exec-45.stdout.log").write_text("x")  # made after the listing: by an owned process
    owned.add(45)
    assert pids.may_exist(45, owned) and pids.may_exist(7, owned)
    forget_exec_files(paths, 42)
    pids.removed(42)
    assert not pids.may_exist(42, owned)
    assert paths.exec_file_pids() == {43, 45}


def test_without_a_listing_every_pid_may_have_files(tmp_path: Path) -> None:
    prepare_state_dir(tmp_path)
    paths = container_paths(tmp_path, "c1")
    assert paths.exec_file_pids() == set()  # no logs directory: no files
    paths.logs.write_text("not a directory")  # a listing that fails (root lists any directory)
    assert ExecFilePids(paths).may_exist(44, ())
