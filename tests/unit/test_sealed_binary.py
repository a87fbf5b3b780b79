"""runc executed from a sealed memfd copy (``runc.sealed_binary``): made once, made again when the
file changes, never for a script, and executed with the caller's argv."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from containerd_actors.runc import spawn
from containerd_actors.runc.driver import Runc
from containerd_actors.runc.sealed_binary import RUNC_SEALS, SealedBinary, sealed_binary


def copy_of(program: str, target: Path) -> Path:
    found = shutil.which(program)
    assert found is not None
    shutil.copy(found, target)
    return target


async def test_an_elf_binary_runs_from_a_sealed_copy_with_the_callers_argv(tmp_path: Path) -> None:
    binary = copy_of("echo", tmp_path / "my-echo")
    sealed = SealedBinary(str(binary))
    try:
        executable = sealed.executable()
        assert executable is not None and executable.startswith(f"/proc/{os.getpid()}/fd/")
        fd = int(executable.rsplit("/", 1)[1])
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) == RUNC_SEALS
        assert os.readlink(executable).startswith("/memfd:runc")
        assert sealed.executable() == executable  # unchanged file: the same copy
        result = await spawn.run(["named-anything", "hello"], capture=True, timeout=10, executable=executable)
        assert result == spawn.Finished(0, b"hello\n", b"")
    finally:
        sealed.close()


def test_a_changed_file_is_copied_again_and_a_script_or_missing_file_never(tmp_path: Path) -> None:
    binary = copy_of("true", tmp_path / "runtime")
    sealed = SealedBinary(str(binary))
    try:
        first = sealed.executable()
        assert first is not None
        size = os.fstat(int(first.rsplit("/", 1)[1])).st_size
        replacement = copy_of("echo", tmp_path / "new")
        os.replace(replacement, binary)  # an upgrade: a new file under the old name
        second = sealed.executable()
        assert second is not None
        assert os.fstat(int(second.rsplit("/", 1)[1])).st_size == binary.stat().st_size != size
        binary.unlink()
        assert sealed.executable() is None  # gone: looked up as before, and fails as before
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
        assert sealed.executable() is None  # a script runs from its file
    finally:
        sealed.close()
    assert SealedBinary(str(tmp_path / "nowhere")).executable() is None


def test_one_copy_per_binary_in_a_process() -> None:
    assert sealed_binary("runc") is sealed_binary("runc")


async def test_through_a_named_link_the_process_is_named_like_the_binary(tmp_path: Path) -> None:
    """Executed as /proc/PID/fd/N, the kernel would name the process N (what top and ps -e show)."""
    binary = copy_of("sleep", tmp_path / "runc")
    runc = Runc(tmp_path / "root", binary=str(binary), exe_link=tmp_path / "bin" / "runc")
    executable = runc._executable()
    assert executable == str(tmp_path / "bin" / "runc")
    assert os.readlink(executable).startswith(f"/proc/{os.getpid()}/fd/")
    pid = os.posix_spawn(executable, ["runc", "5"], {})
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert exe.startswith("/memfd:runc") and comm == "runc", (exe, comm)
    assert runc._executable() == executable  # the same copy: the link is not made again
    sealed_binary(str(binary)).close()
