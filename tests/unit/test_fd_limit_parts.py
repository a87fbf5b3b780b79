"""Out of file descriptors (EMFILE), piece by piece: nothing half made stays open, a log that
cannot be opened drops and marks its output instead of raising, and the error names the limit.

No limit is lowered here (pytest's own process would suffer): ``os.pipe`` and the log's open
are made to fail the way they do at the limit.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from containerd_actors.daemon.container import logs
from containerd_actors.daemon.container.console import InitStdio
from containerd_actors.daemon.container.logs import TOO_MANY_OPEN_FILES, RotatingLog, lost_marker
from containerd_actors.daemon.container.stdio import ContainerPipes
from containerd_actors.host.fds import describe_os_error, is_fd_limit_error
from containerd_actors.runc import spawn


def emfile() -> OSError:
    return OSError(errno.EMFILE, os.strerror(errno.EMFILE))


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def pipe_failing_after(successes: int) -> Callable[[], tuple[int, int]]:
    """An ``os.pipe`` that works ``successes`` times, then fails as at the fd limit."""
    real = os.pipe
    made = 0

    def pipe() -> tuple[int, int]:
        nonlocal made
        if made == successes:
            raise emfile()
        made += 1
        return real()

    return pipe


@pytest.mark.parametrize("successes", [0, 1, 2])
def test_pipes_made_before_the_limit_are_closed(monkeypatch: pytest.MonkeyPatch, successes: int) -> None:
    before = open_fds()
    monkeypatch.setattr(os, "pipe", pipe_failing_after(successes))
    with pytest.raises(OSError) as failure:
        ContainerPipes.create()
    monkeypatch.undo()
    assert is_fd_limit_error(failure.value)
    assert open_fds() == before


def test_init_stdio_opens_nothing_until_asked_and_closes_safely_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = open_fds()
    stdio = InitStdio(terminal=False)
    assert open_fds() == before
    monkeypatch.setattr(os, "pipe", pipe_failing_after(2))
    with pytest.raises(OSError):
        stdio.open()
    monkeypatch.undo()
    stdio.close_all()
    assert open_fds() == before


async def test_spawn_closes_its_first_capture_pipe_when_the_second_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = open_fds()
    monkeypatch.setattr(os, "pipe", pipe_failing_after(1))
    with pytest.raises(OSError):
        await spawn.run(["true"], capture=True, timeout=5)
    monkeypatch.undo()
    assert open_fds() == before


def test_a_log_that_cannot_be_opened_drops_and_marks_its_output_then_opens_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = RotatingLog(tmp_path / "out.log", new=True)
    real_open = logs._open_for_append
    failing = True

    def open_for_append(path: Path) -> int:
        if failing:
            raise emfile()
        return real_open(path)

    monkeypatch.setattr(logs, "_open_for_append", open_for_append)
    log.write(b"lost one\n")  # no exception: the drain (and its actor) go on
    log.write(b"lost two\n")
    assert not log.path.exists()
    assert (log.lost, log.lost_total) == (18, 18)
    failing = False
    log.write(b"kept\n")
    assert log.path.read_bytes() == lost_marker(18, TOO_MANY_OPEN_FILES) + b"kept\n"
    assert lost_marker(18, TOO_MANY_OPEN_FILES) == b"[18 bytes lost: too many open files]\n"
    assert log.lost == 0
    log.close()


def test_a_log_that_cannot_rotate_for_the_limit_keeps_writing_its_current_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = RotatingLog(tmp_path / "out.log", new=True, rotate_bytes=10)
    log.write(b"0123456789")
    real_open = logs._open_for_append

    def open_for_append(path: Path) -> int:
        raise emfile()

    monkeypatch.setattr(logs, "_open_for_append", open_for_append)
    log.write(b"abc")
    monkeypatch.setattr(logs, "_open_for_append", real_open)
    assert log.path.read_bytes() == b"0123456789abc"
    assert log.lost_total == 0 and log.end == 13
    log.close()


def test_the_error_names_the_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert describe_os_error(emfile()).startswith(
        f"too many open files (RLIMIT_NOFILE {soft}, hard {hard}): "
    )
    assert "fs.file-max" in describe_os_error(OSError(errno.ENFILE, "Too many open files in system"))
    assert describe_os_error(OSError(errno.ENOENT, "gone")) == "[Errno 2] gone"


CHILD_SEES = """
import trio
from containerd_actors.host.fd_limit import raise_soft_limit
from containerd_actors.runc import spawn
import resource
import subprocess
import sys

async def main():
    raise_soft_limit()
    mine = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    child = await spawn.run(["sh", "-c", "ulimit -Sn"], capture=True, timeout=10)
    after = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    print(mine, int(child.stdout), after)

trio.run(main)
"""


def test_the_raised_soft_limit_is_the_servers_alone_a_spawned_child_gets_the_original() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) leaves no room to raise a soft limit of 256")
    result = subprocess.run(
        ["prlimit", f"--nofile=256:{hard}", sys.executable, "-c", CHILD_SEES],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == [str(hard), "256", str(hard)]
