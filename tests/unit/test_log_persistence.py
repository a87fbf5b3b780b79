"""What a log and an exited container leave on disk is enough for a restarted server: the rotation
base, and the exited record (ranges, statuses, bundle), read back without a daemon."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.logs import read_to_end

from containerd_actors.daemon.container.exited import outputs_of, record_exit
from containerd_actors.daemon.container.logs import RotatingLog
from containerd_actors.daemon.container.stdio import ProcessOutput
from containerd_actors.daemon.state.layout import (
    ExitedRecord,
    LogRange,
    container_paths,
    log_rotation_record,
    read_exited_records,
    write_json_atomically,
)


def lines(first: int, last: int) -> bytes:
    return b"".join(f"line {n:04}\n".encode() for n in range(first, last))  # 10 bytes each


def test_a_log_opened_again_counts_on_from_its_rotation_base(tmp_path: Path) -> None:
    path = tmp_path / "stdout.log"
    log = RotatingLog(path, rotate_bytes=100)
    written = lines(0, 55)  # 550 bytes: five rotations
    for n in range(0, len(written), 10):
        log.write(written[n : n + 10])  # a log rotates between writes, never within one
    before = (log.start, log.base, log.end, read_to_end(log))
    assert log.start > 0
    log.close()  # the server goes away

    again = RotatingLog(path, rotate_bytes=100)
    assert (again.start, again.base, again.end, read_to_end(again)) == before
    again.write(lines(55, 60))  # and appends where it was, rotating on from the same count
    assert again.end == len(written) + 50
    assert read_to_end(again)[1].endswith(lines(55, 60))


def test_a_server_killed_between_the_rotation_record_and_the_rename_keeps_the_base(tmp_path: Path) -> None:
    path = tmp_path / "stdout.log"
    log = RotatingLog(path, rotate_bytes=100)
    for n in range(25):
        log.write(lines(n, n + 1))  # two rotations: base 200, current file 50 bytes
    base, end = log.base, log.end
    log.close()
    # What _rotate writes first, for the current file, before a rename that never happened.
    write_json_atomically(
        log_rotation_record(path), {"rotated_inode": os.stat(path).st_ino, "rotated_base": base}
    )
    again = RotatingLog(path, rotate_bytes=100)
    assert (again.base, again.end) == (base, end)


def test_without_a_rotation_record_a_log_starts_at_zero(tmp_path: Path) -> None:
    path = tmp_path / "stdout.log"
    path.write_bytes(b"abc\n")
    log = RotatingLog(path)
    assert (log.start, log.base, log.end) == (0, 0, 4)


@pytest.mark.trio
async def test_an_exited_containers_record_serves_the_same_output(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    paths = container_paths(state_dir, "gone")
    paths.directory.mkdir(parents=True)
    paths.logs.mkdir(parents=True)
    init = ProcessOutput(41, paths.stdout_log, paths.stderr_log)
    init.stdout.rotate_bytes = 100
    for n in range(33):
        init.stdout.write(lines(n, n + 1))
    init.stderr.write(b"oops\n")
    execd = ProcessOutput(42, *paths.exec_logs(42))
    execd.stdout.write(b"from exec\n")
    for output, status in ((execd, 3), (init, 137)):
        output.close_logs()
        output.mark_exited(status)
    expected = {
        pid: await view.read(0, 0, wait=0, max_bytes=1 << 20)
        for pid, view in ((41, init.view), (42, execd.view))
    }
    assert expected[41].skipped > 0  # the rotated-out part is reported

    record_exit("gone", "/bundles/b", 41, 137, {41: init.view, 42: execd.view}, paths)
    with open(paths.stdout_log, "ab") as late:  # the recorded end is final
        late.write(b"written after the exit is not served\n")

    [record] = read_exited_records(state_dir)
    assert (record.id, record.bundle, record.init_pid, record.status) == ("gone", "/bundles/b", 41, 137)
    views = outputs_of(record, paths)
    assert sorted(views) == [41, 42]
    for pid, view in views.items():
        assert await view.read(0, 0, wait=0, max_bytes=1 << 20) == expected[pid]
    assert views[42].status == 3


def test_exited_records_are_read_oldest_first_and_bad_ones_skipped(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    for id, exited in (("b", 20.0), ("a", 10.0), ("c", 30.0)):
        paths = container_paths(state_dir, id)
        paths.logs.mkdir(parents=True)
        process = {"pid": 5, "init": True, "terminal": False, "status": 0}
        process |= {"stdout": {"base": 0, "end": 0}, "stderr": {"base": 0, "end": 0}}
        record = {"id": id, "bundle": "/b", "init_pid": 5, "status": 0, "exited": exited}
        paths.exited_record.write_text(json.dumps(record | {"processes": [process]}))
    torn = container_paths(state_dir, "torn")
    torn.logs.mkdir(parents=True)
    torn.exited_record.write_text('{"id": "torn", ')
    assert [r.id for r in read_exited_records(state_dir)] == ["a", "b", "c"]
    with pytest.raises(ValueError):
        ExitedRecord.parse(
            {"id": "x", "bundle": "/b", "init_pid": 5, "status": 0, "exited": 1, "processes": []}
        )
    with pytest.raises(ValueError):
        LogRange.parse({"base": 10, "end": 5})
