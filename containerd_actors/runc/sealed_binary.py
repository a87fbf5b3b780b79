"""runc executed from a sealed in-memory copy, so that ``runc init`` need not protect itself again.

Every ``runc init`` (a ``run``, an ``exec``) first makes sure that the binary it runs from cannot
be overwritten by the container it is entering (CVE-2019-5736). Unless it already runs from a
fully sealed memfd, runc 1.1 does that by bind-mounting ``/proc/self/exe`` read-only onto a
temporary file under its state dir, opening it, unmounting it (``umount2`` with MNT_DETACH, which
waits for an RCU grace period) and executing itself again: a second exec and dynamic load of the
9 MB binary. Measured here (``runc exec -d --process`` against one container, 80 alternating runs
per line, three runs): 13.82 -> 13.05, 12.57 -> 11.50, 14.74 -> 13.05 ms median wall, and about
0.5 ms of runc's CPU, when runc itself is a sealed memfd.

So the daemon keeps one: the binary copied into a memfd sealed against writes, growth and
shrinking and further seals (the seals runc checks for), executed as ``/proc/<daemon pid>/fd/<n>``
with runc's own name as ``argv[0]``. It is made at the first runc call, not at start-up, and made
again when the file on disk changes (device, inode, size or mtime: an upgraded runc is used from
its next call on). Only an ELF binary is copied: a script given as the runtime (tests, wrappers)
may look for files beside itself, and runc's check would not apply to it anyway. Whatever fails
(no memfd, no room, out of descriptors) leaves runc executed from its file, as before; the copy
costs the binary's size (~9 MB of shared memory, charged to the daemon) for the daemon's life.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

#: The seals runc 1.1 requires of a memfd to take it for its own safe copy (``RUNC_MEMFD_SEALS``).
RUNC_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_ELF_MAGIC = b"\x7fELF"
_COPIES: dict[str, SealedBinary] = {}


def named_link(link: Path, target: str) -> bool:
    """Point the symlink ``link`` at ``target`` (made anew, atomically); False if it cannot be made.

    Executed as ``/proc/PID/fd/N``, runc's process would be named ``N`` (the kernel names a process
    after the last part of the path it was executed by): ``14`` in ``top`` and ``ps -e``, and no
    ``pgrep -x runc`` would find it. Executed through a link named ``runc``, it is named ``runc``
    and still runs from the copy (the link resolves to the memfd).
    """
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    try:
        link.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary.unlink(missing_ok=True)
        os.symlink(target, temporary)
        os.replace(temporary, link)
    except OSError as exc:
        log.warning("runc is executed as %s (cannot make the link %s: %s)", target, link, exc)
        return False
    return True


def sealed_binary(binary: str) -> SealedBinary:
    """The one copy of ``binary`` in this process, whoever runs it (a test makes many ``Runc``)."""
    found = _COPIES.get(binary)
    if found is None:
        found = _COPIES[binary] = SealedBinary(binary)
    return found


class SealedBinary:
    """The executable to spawn for ``binary`` (a name looked up on PATH once, or a path)."""

    def __init__(self, binary: str) -> None:
        self._binary = binary
        self._path: str | None = None
        #: What the copy (or the decision not to make one) was made from.
        self._made_from: tuple[int, int, int, int] | None = None
        self._fd = -1

    def executable(self) -> str | None:
        """A path of the sealed copy; None: execute ``binary`` itself (looked up as usual)."""
        if self._path is None:
            self._path = shutil.which(self._binary)
            if self._path is None:
                return None
        try:
            found = os.stat(self._path)
        except OSError:
            self._drop()
            return None
        identity = (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)
        if identity != self._made_from:
            self._drop()
            self._made_from = identity
            self._fd = self._copy(self._path)
        return None if self._fd < 0 else f"/proc/{os.getpid()}/fd/{self._fd}"

    def close(self) -> None:
        self._drop()
        self._made_from = None

    def _drop(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def _copy(self, path: str) -> int:
        """The sealed memfd, or -1."""
        try:
            source = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.debug("runc is executed from its file: cannot open %s: %s", path, exc)
            return -1
        copy = -1
        try:
            if os.pread(source, len(_ELF_MAGIC), 0) != _ELF_MAGIC:
                return -1
            copy = os.memfd_create("runc", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            size = os.fstat(source).st_size
            offset = 0
            while offset < size:
                sent = os.sendfile(copy, source, offset, size - offset)
                if sent <= 0:
                    raise OSError(f"{path} ended at {offset} of {size} bytes")
                offset += sent
            fcntl.fcntl(copy, fcntl.F_ADD_SEALS, RUNC_SEALS)
        except (OSError, AttributeError) as exc:  # AttributeError: no memfd_create here
            log.warning("runc is executed from its file (no sealed copy: %s)", exc)
            if copy >= 0:
                os.close(copy)
            return -1
        finally:
            os.close(source)
        return copy
