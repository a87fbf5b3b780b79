"""spawn.run: exit codes, captured output, time-outs and cancellation, always reaped."""

from __future__ import annotations

import os
import signal

import pytest
import trio

from containerd_actors.runc import spawn


def _is_reaped(pid: int) -> bool:
    """A reaped child is gone from the process table; an unreaped one would be a zombie here."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


async def test_exit_code_and_captured_streams() -> None:
    result = await spawn.run(["sh", "-c", "echo out; echo err >&2; exit 3"], capture=True, timeout=10)
    assert result == spawn.Finished(3, b"out\n", b"err\n")


async def test_output_larger_than_a_pipe_buffer_does_not_deadlock() -> None:
    result = await spawn.run(["head", "-c", "1000000", "/dev/zero"], capture=True, timeout=10)
    assert result.returncode == 0
    assert len(result.stdout) == 1_000_000


async def test_stdin_defaults_to_dev_null() -> None:
    result = await spawn.run(["cat"], capture=True, timeout=10)
    assert result == spawn.Finished(0, b"", b"")


async def test_given_descriptors_become_the_childs_stdio(tmp_path) -> None:
    target = tmp_path / "out"
    with open(target, "wb") as out:
        result = await spawn.run(["sh", "-c", "echo hello"], stdout=out.fileno(), timeout=10)
    assert result.returncode == 0
    assert target.read_bytes() == b"hello\n"


async def test_killed_by_a_signal_reports_a_negative_code() -> None:
    result = await spawn.run(["sh", "-c", "kill -TERM $$"], timeout=10)
    assert result.returncode == -signal.SIGTERM


async def test_a_timeout_kills_and_reaps_the_child(tmp_path) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(spawn.SpawnTimeout):
        await spawn.run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], timeout=2.0)
    assert _is_reaped(int(pid_file.read_text()))


async def test_cancellation_kills_and_reaps_the_child(tmp_path) -> None:
    pid_file = tmp_path / "pid"
    with trio.move_on_after(2.0) as scope:
        await spawn.run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], capture=True, timeout=30)
    assert scope.cancelled_caught
    assert _is_reaped(int(pid_file.read_text()))


async def test_a_missing_program_raises_at_once() -> None:
    with pytest.raises(FileNotFoundError):
        await spawn.run(["/nonexistent/program"], timeout=10)
