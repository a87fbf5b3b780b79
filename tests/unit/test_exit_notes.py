"""Exit notes (``daemon/state/exit_notes.py``): what a new server trusts in them, without a daemon.

The end-to-end case (a note whose exit the journal lacks is published once) is in
tests/e2e/test_crash_consistency.py; here are the decisions made from the files alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from containerd_actors.daemon.state.exit_notes import (
    ExitNote,
    note_path,
    read_notes,
    record_remains,
    remove_note,
    write_note,
)
from containerd_actors.daemon.state.layout import container_paths, prepare_state_dir


def test_a_written_note_reads_back_and_goes_away(tmp_path: Path) -> None:
    prepare_state_dir(tmp_path)
    path = write_note(tmp_path, "web", 4321, 137, None, exec=False)
    assert path == note_path(tmp_path, "web", 4321)
    [(found, note)] = read_notes(tmp_path)
    assert found == path
    assert (note.id, note.pid, note.status, note.reason, note.exec) == ("web", 4321, 137, None, False)
    remove_note(path)
    assert read_notes(tmp_path) == []


def test_an_unreadable_note_is_removed_not_trusted(tmp_path: Path) -> None:
    prepare_state_dir(tmp_path)
    good = write_note(tmp_path, "web", 1, None, "unseen", exec=True)
    (tmp_path / "exits" / "torn.json").write_text('{"id": "web", "pid": "not a pid"')
    (tmp_path / "exits" / "wrong.json").write_text(json.dumps({"id": "x", "pid": "2"}))
    assert [path for path, _note in read_notes(tmp_path)] == [good]
    assert sorted(p.name for p in (tmp_path / "exits").iterdir()) == [good.name]


def test_a_note_whose_record_remains_is_left_to_the_adoption(tmp_path: Path) -> None:
    prepare_state_dir(tmp_path)
    paths = container_paths(tmp_path, "web")
    paths.directory.mkdir()
    paths.record.write_text(json.dumps({"id": "web", "pid": 10}))
    paths.exec_record(11).write_text("{}")

    def note(pid: int, exec: bool) -> ExitNote:
        return ExitNote("web", pid, 0, None, 0.0, exec)

    assert record_remains(tmp_path, note(10, exec=False))
    assert not record_remains(tmp_path, note(12, exec=False))  # the id was reused by another init
    assert record_remains(tmp_path, note(11, exec=True))
    assert not record_remains(tmp_path, note(13, exec=True))
    paths.remove()
    assert not record_remains(tmp_path, note(10, exec=False))


def test_a_missing_notes_directory_is_made_by_the_note_that_finds_it_missing(tmp_path: Path) -> None:
    prepare_state_dir(tmp_path)
    exits = note_path(tmp_path, "web", 1).parent
    if exits.exists():
        exits.rmdir()
    first = write_note(tmp_path, "web", 1, 0, None, exec=True)
    second = write_note(tmp_path, "web", 2, 0, None, exec=True)
    assert first is not None and second is not None and first.exists() and second.exists()
    assert oct(exits.stat().st_mode & 0o777) == oct(0o700)
    # Any other failure is no note (the exit is published all the same).
    (tmp_path / "state-file").write_text("")
    assert write_note(tmp_path / "state-file", "web", 3, 0, None, exec=True) is None
