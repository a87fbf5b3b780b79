"""A container's paths (state/layout.py): made without re-parsing, and ``create`` on a new or reused id."""

from __future__ import annotations

from pathlib import Path

import pytest

from containerd_actors.daemon.state.layout import container_paths, prepare_state_dir


def test_the_paths_are_the_same_as_joined_ones(tmp_path: Path) -> None:
    paths = container_paths(tmp_path, "web-1")
    assert paths.directory == tmp_path / "containers" / "web-1"
    assert paths.logs == tmp_path / "logs" / "web-1"
    assert str(paths.record) == str(tmp_path / "containers" / "web-1" / "container.json")
    assert str(paths.stdout_log) == str(tmp_path / "logs" / "web-1" / "stdout.log")
    assert paths.pid_file.parent == paths.directory and paths.pid_file.name == "init.pid"


def test_create_makes_both_directories_and_empties_the_logs_of_a_reused_id(tmp_path: Path) -> None:
    prepare_state_dir(tmp_path)
    fresh = container_paths(tmp_path, "new")
    fresh.create()
    assert fresh.directory.is_dir() and fresh.logs.is_dir() and not list(fresh.logs.iterdir())
    reused = container_paths(tmp_path, "old")
    reused.logs.mkdir()
    (reused.logs / "stdout.log").write_text("the earlier container's output")
    reused.create()
    assert reused.directory.is_dir() and reused.logs.is_dir() and not list(reused.logs.iterdir())
    with pytest.raises(FileExistsError):  # the id is taken: its directory exists
        reused.create()
