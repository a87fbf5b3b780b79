"""``client.log_files``: a span's file found under its name or as ``<name>.1``, never another file
that took its inode number, and its bytes copied to a pipe, a terminal or an O_APPEND file."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

import containerd_actors.protocol as wire
from containerd_actors.client.log_files import FileBytes, LogFiles
from containerd_actors.transport.file_identity import identity_at

DATA = bytes(range(256)) * 4096  # 1 MiB
F_SETPIPE_SZ = 1031


def span_of(path: Path, position: int) -> wire.LogFileSpan:
    identity = identity_at(str(path))
    if identity is None:
        pytest.skip(
            f"{path.parent} keeps no inode generations (FS_IOC_GETVERSION): spans are not offered there"
        )
    return wire.LogFileSpan(str(path), identity.device, identity.inode, identity.generation, position)


def read_all(found: FileBytes) -> bytes:
    return os.pread(found.file.fd, found.length, found.position)


def test_a_rotated_file_is_found_at_its_new_name_and_a_deleted_one_is_not_mistaken(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(DATA)
    span = span_of(log, 10)
    log.rename(tmp_path / "stdout.log.1")  # a rotation
    log.write_bytes(b"x" * len(DATA))  # the new current file

    found = LogFiles().bytes_of(span, 100)

    assert found is not None and read_all(found) == DATA[10:110]
    (tmp_path / "stdout.log.1").unlink()  # the next rotation
    log.unlink()
    log.write_bytes(b"y" * len(DATA))  # may well get the first file's inode number again
    assert LogFiles().bytes_of(span, 100) is None


def test_a_file_held_open_keeps_its_bytes_after_it_is_deleted(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(DATA)
    span = span_of(log, 0)
    files = LogFiles()
    assert files.bytes_of(span, 1) is not None  # opened, and kept
    log.unlink()

    found = files.bytes_of(span, len(DATA))

    assert found is not None and read_all(found) == DATA


@pytest.mark.parametrize("output", ["pipe", "append"])
def test_the_bytes_are_copied_whatever_the_output(tmp_path: Path, output: str) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(DATA)
    found = LogFiles().bytes_of(span_of(log, 1000), 300_000)
    assert found is not None
    if output == "pipe":
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, F_SETPIPE_SZ, 1 << 20)  # room for all of it: no reader meanwhile
        try:
            found.copy_to(write_end)
            os.close(write_end)
            got = b""
            while chunk := os.read(read_end, 1 << 20):
                got += chunk
        finally:
            os.close(read_end)
    else:  # sendfile refuses an O_APPEND file: read and written instead
        target = tmp_path / "out"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            found.copy_to(fd)
        finally:
            os.close(fd)
        got = target.read_bytes()
    assert got == DATA[1000:301_000]
