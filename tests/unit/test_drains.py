"""The server's one drain task (container/drains.py): pipes read into their logs, ends, stops, errors."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import pytest
import trio
import trio.testing
from support.logs import read_to_end

from containerd_actors.daemon.container import drains as drains_module
from containerd_actors.daemon.container.drains import DEFAULT_PIPE_BYTES, drain
from containerd_actors.daemon.container.stdio import PIPE_BYTES, ProcessOutput

F_GETPIPE_SZ = 1032


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def test_two_processes_are_drained_into_their_logs_until_their_pipes_end(tmp_path: Path) -> None:
    outputs = [ProcessOutput(n, tmp_path / f"{n}.out", tmp_path / f"{n}.err", new=True) for n in (1, 2)]
    pipes = [(os.pipe(), os.pipe()) for _ in outputs]
    errors: list[BaseException] = []
    drains = [
        drain((out[0], err[0]), output, errors.append)
        for (out, err), output in zip(pipes, outputs, strict=True)
    ]
    for n, (out, err) in enumerate(pipes):
        os.write(out[1], b"out %d\n" % n)
        os.write(err[1], b"err %d\n" % n)
    await trio.testing.wait_all_tasks_blocked()
    for n, output in enumerate(outputs):
        assert read_to_end(output.stdout, 0)[1] == b"out %d\n" % n
        assert read_to_end(output.stderr, 0)[1] == b"err %d\n" % n
        assert not output.stdout.finished
    # The first process's writers go: its logs end, its read ends are closed, it is drained.
    os.close(pipes[0][0][1])
    await trio.testing.wait_all_tasks_blocked()
    assert output_finished(outputs[0]) == (True, False) and not drains[0].drained.is_set()
    os.close(pipes[0][1][1])
    await trio.testing.wait_all_tasks_blocked()
    assert drains[0].drained.is_set() and output_finished(outputs[0]) == (True, True)
    assert not fd_is_open(pipes[0][0][0]) and not fd_is_open(pipes[0][1][0])
    # The second still drains, whatever the first did.
    os.write(pipes[1][0][1], b"more\n")
    await trio.testing.wait_all_tasks_blocked()
    assert read_to_end(outputs[1].stdout, 0)[1] == b"out 1\nmore\n"
    # Stopped (its grace is over, or its actor ends): logs and read ends closed, drained set.
    drains[1].cancel()
    drains[1].cancel()  # twice is harmless
    assert drains[1].drained.is_set() and output_finished(outputs[1]) == (True, True)
    assert not fd_is_open(pipes[1][0][0])
    assert errors == []
    for out, err in pipes[1:]:
        os.close(out[1])
        os.close(err[1])


def output_finished(output: ProcessOutput) -> tuple[bool, bool]:
    return output.stdout.finished, output.stderr.finished


async def test_an_absent_end_closes_its_log_at_once(tmp_path: Path) -> None:
    output = ProcessOutput(1, tmp_path / "out", tmp_path / "err", new=True)
    none = drain((-1, -1), output, lambda error: None)
    assert none.drained.is_set() and output_finished(output) == (True, True)
    output = ProcessOutput(2, tmp_path / "out2", tmp_path / "err2", terminal=True, new=True)
    read_end, write_end = os.pipe()
    only_stdout = drain((read_end, -1), output, lambda error: None)
    assert output_finished(output) == (False, True)
    os.write(write_end, b"tty\n")
    os.close(write_end)
    await trio.testing.wait_all_tasks_blocked()
    assert only_stdout.drained.is_set() and read_to_end(output.stdout, 0)[1] == b"tty\n"


async def test_an_unexpected_error_goes_to_the_owner_and_ends_only_that_pipe(tmp_path: Path) -> None:
    output = ProcessOutput(1, tmp_path / "out", tmp_path / "err", new=True)
    errors: list[BaseException] = []

    def broken_write(data: bytes) -> None:
        raise RuntimeError("disk on fire")

    output.stdout.write = broken_write  # type: ignore[method-assign]
    (out_read, out_write), (err_read, err_write) = os.pipe(), os.pipe()
    drains = drain((out_read, err_read), output, errors.append)
    os.write(out_write, b"x")
    await trio.testing.wait_all_tasks_blocked()
    assert [str(error) for error in errors] == ["disk on fire"]
    assert not fd_is_open(out_read) and fd_is_open(err_read) and not drains.drained.is_set()
    os.write(err_write, b"still drained\n")
    await trio.testing.wait_all_tasks_blocked()
    assert read_to_end(output.stderr, 0)[1] == b"still drained\n"
    drains.cancel()
    for fd in (out_write, err_write):
        os.close(fd)


async def test_an_output_pipe_is_enlarged_once_a_read_finds_it_full(tmp_path: Path) -> None:
    """Output pipes start at Linux's 64 KiB (no fcntl per start); a process that fills one gets
    ``PIPE_BYTES`` from then on, fewer wake-ups per MiB; one that writes a little keeps 64 KiB."""
    output = ProcessOutput(1, tmp_path / "out", tmp_path / "err", new=True)
    (out_read, out_write), (err_read, err_write) = os.pipe(), os.pipe()
    errors: list[BaseException] = []
    drains = drain((out_read, err_read), output, errors.append)
    try:
        os.write(err_write, b"a little\n")
        os.set_blocking(out_write, False)
        written = 0
        with contextlib.suppress(BlockingIOError):
            while written < DEFAULT_PIPE_BYTES:
                written += os.write(out_write, b"x" * (DEFAULT_PIPE_BYTES - written))
        await trio.testing.wait_all_tasks_blocked()
        assert read_to_end(output.stdout, 0)[1] == b"x" * DEFAULT_PIPE_BYTES
        assert fcntl.fcntl(out_write, F_GETPIPE_SZ) == PIPE_BYTES
        assert fcntl.fcntl(err_write, F_GETPIPE_SZ) == DEFAULT_PIPE_BYTES
        assert errors == []
    finally:
        drains.cancel()
        os.close(out_write)
        os.close(err_write)


async def test_a_pipe_that_stays_full_lets_the_other_tasks_run_between_its_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that writes as fast as the hub reads must not hold the loop (the ReadOutput
    that follows its output would wait meanwhile): a few reads per round, then the others run.
    Reads of 64 KiB here, so that a pipe of 1 MiB (the most without privileges) holds 16."""
    monkeypatch.setattr(drains_module, "DRAIN_READ_BYTES", 64 << 10)
    output = ProcessOutput(1, tmp_path / "out", tmp_path / "err", new=True)
    read_end, write_end = os.pipe()
    size = fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)
    os.write(write_end, bytes(size))  # the pipe holds it all: as if its writer never paused
    drains = drain((read_end, -1), output, lambda error: None)
    seen = []
    with trio.fail_after(10):
        while output.stdout.end < size:
            seen.append(output.stdout.end)
            await trio.sleep(0)
    assert any(0 < end < size for end in seen), seen  # this task ran while the pipe still held bytes
    os.close(write_end)
    drains.cancel()
