"""Which file an open descriptor is, beyond its name: how a local reader and the daemon agree on a log.

The local fast path for output (``ReadOutput.spans``) sends no bytes: the daemon names the log
file and the client copies from it. Between the two, a rotation may rename the file
(``<log>`` becomes ``<log>.1``) or delete it, and ext4 readily gives a deleted file's inode
number to the next file created in the directory, which a rotation does at once. So a file is
named by its device, its inode number and the inode's generation (``FS_IOC_GETVERSION``), which
the file system changes whenever it reuses an inode number. Both sides read it the same way,
from here: the daemon and the client share this transport.
"""

from __future__ import annotations

import fcntl
import os
import struct

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
import attrs

#: ``_IOR('v', 1, long)``: the inode's generation (file systems write an int).
FS_IOC_GETVERSION = 0x80087601


@attrs.frozen
class FileIdentity:
    device: int
    inode: int
    generation: int


def identity_of(fd: int) -> FileIdentity | None:
    """The identity of the file open as ``fd``; None where the file system keeps no generation
    (tmpfs, overlayfs, ...): such a file cannot be named safely across a rotation."""
    status = os.fstat(fd)
    try:
        raw = fcntl.ioctl(fd, FS_IOC_GETVERSION, bytes(8))
    except OSError:
        return None
    (generation,) = struct.unpack_from("=I", raw)
    return FileIdentity(status.st_dev, status.st_ino, generation)


def identity_at(path: str) -> FileIdentity | None:
    """The identity of the file at ``path`` now; OSError if there is none or it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return identity_of(fd)
    finally:
        os.close(fd)
