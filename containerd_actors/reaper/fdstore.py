"""The reaper's kept pipe ends, also in systemd's fd store, so that a kill of the whole tree keeps them.

The reaper keeps, per key, the pipe ends the API server hands it (``wire``'s ``keep``/``drop``).
Under systemd it also stores each of them in the service manager (``FDSTORE=1``): a ``kill -9`` of
the reaper and the server together then closes neither a container's output pipe (its unread
output waits in the kernel's pipe buffer, 64 KiB) nor its stdin, and the next start of the unit
gets them back as ``$LISTEN_FDS`` and hands them to the new server as if the reaper had kept them.

**Names.** ``ca/<key>/<role>``: ``<key>`` is the reaper's key (``<id>`` for a container's init,
``<id>/<pid>`` for an exec'd process, ``<id>/exec-<n>`` for an exec whose pid runc has not told
yet); ``<role>`` is ``stdin`` (the write end), ``stdout`` or ``stderr`` (read ends), ``pty`` (a
terminal's master, stored once though the reaper keeps it twice: the store keeps one copy of the
same open file) or ``fd<i>`` for a list of another shape. The init's pid is not in its name: its
pipes are kept before ``runc run`` tells the pid (so that a kill during a start loses nothing),
and the container id alone names it. Ids are ``[A-Za-z0-9_.-]``, at most 128 characters, so
every name is a valid FDNAME (under 255 printable characters, no ``:``).

**Lifetime.** A key's fds are stored when the server keeps them and removed (``FDSTOREREMOVE=1``)
when it drops them: a process that exited and whose output is drained, a stdin a client closed
(the stored copy would otherwise keep the container from seeing EOF), a container the server
found gone. They are stored with ``FDPOLL=0``: otherwise systemd would drop a pipe at its first
EPOLLHUP, which is when the container exited with output still unread. A re-keyed fd (an exec's
``exec-<n>`` key becoming ``<pid>``) is removed under its old name first, since the store keeps
one copy of an open file and would ignore the new name.

**Start-up.** Fds whose names are not ours, or whose roles do not add up to a list the server
knows, are closed and removed from the store; the rest become the reaper's kept lists, which go
to the server exactly as the reaper's own copies do. A key whose container is gone is dropped by
the server (it has no record), and so removed from the store.

**Upgrade.** The re-executed reaper gets the kept fds in its handover, with the names already
stored, and stores nothing twice; a handover from a version without the store stores them all.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from collections.abc import Iterable, Mapping

from containerd_actors.host.fds import close_quietly
from containerd_actors.host.sd_notify import Notifier, remove_fields, store_fields, valid_fdname

log = logging.getLogger(__name__)

NAME_PREFIX = "ca/"
PIPE_ROLES = ("stdin", "stdout", "stderr")
PTY_ROLE = "pty"
#: ``$FDSTORE``: systemd (254 and later) sets it to the unit's FileDescriptorStoreMax.
FDSTORE_ENV = "FDSTORE"

#: What says that two fds are the same open file (systemd keeps one copy of such fds).
Identity = tuple[int, int, int]


def identity(fd: int) -> Identity | None:
    try:
        st = os.fstat(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        return None
    return st.st_dev, st.st_ino, flags & os.O_ACCMODE


def fd_name(key: str, role: str) -> str:
    return f"{NAME_PREFIX}{key}/{role}"


def parse_name(name: str) -> tuple[str, str] | None:
    """(key, role) of one of our names, None for anything else."""
    if not name.startswith(NAME_PREFIX):
        return None
    key, sep, role = name[len(NAME_PREFIX) :].rpartition("/")
    if not sep or not key or not role:
        return None
    return key, role


def roles(fds: list[int]) -> list[str | None]:
    """The role of each fd of a kept list (``Launched.kept_fds`` order); None: not stored again."""
    if len(fds) == 2 and _same_pty(fds[0], fds[1]):
        return [PTY_ROLE, None]
    if len(fds) == 3:
        return list(PIPE_ROLES)
    if len(fds) == 2:
        return list(PIPE_ROLES[1:])
    return [f"fd{index}" for index in range(len(fds))]


def _same_pty(first: int, second: int) -> bool:
    try:
        a, b = os.fstat(first), os.fstat(second)
    except OSError:
        return False
    return stat.S_ISCHR(a.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def named_fds(key: str, fds: list[int]) -> list[tuple[str, int]]:
    """(name, fd) for each fd of a kept list that goes into the store."""
    return [(fd_name(key, role), fd) for role, fd in zip(roles(fds), fds, strict=True) if role is not None]


def assemble(by_role: dict[str, int]) -> list[int] | None:
    """A kept list back from its stored roles; None when they add up to no list the server knows
    (a part missing: the store was full, or a removal raced a kill)."""
    found = set(by_role)
    if found == {PTY_ROLE}:
        return [by_role[PTY_ROLE], os.dup(by_role[PTY_ROLE])]
    if found in ({*PIPE_ROLES}, {*PIPE_ROLES[1:]}):
        return [by_role[role] for role in PIPE_ROLES if role in by_role]
    numbered = [f"fd{index}" for index in range(len(found))]
    if found == set(numbered):
        return [by_role[role] for role in numbered]
    return None


def store_limit(environ: Mapping[str, str]) -> int | None:
    """The store's size when systemd says it (``$FDSTORE``); None when it does not (before 254)."""
    try:
        return int(environ[FDSTORE_ENV])
    except (KeyError, ValueError):
        return None


class FdStore:
    """What the reaper has stored in systemd's fd store, by key; a no-op without a notifier."""

    def __init__(self, notifier: Notifier | None, limit: int | None = None) -> None:
        self._notifier = notifier if limit != 0 else None
        self._limit = limit
        self._stored: dict[str, dict[str, Identity]] = {}
        self._owner: dict[Identity, tuple[str, str]] = {}
        self._warned_full = False

    @property
    def enabled(self) -> bool:
        return self._notifier is not None

    def keep(self, key: str, fds: list[int]) -> None:
        """The server kept ``fds`` under ``key`` (replacing what the key held)."""
        if self._notifier is None:
            return
        before = self._stored.pop(key, {})
        now: dict[str, Identity] = {}
        for name, fd in named_fds(key, fds):
            ident = identity(fd)
            if ident is None or not valid_fdname(name):
                log.warning("reaper: cannot store %s in systemd's fd store", name)
                continue
            if before.get(name) == ident:
                now[name] = ident  # already there
                continue
            if name in before:
                self._remove(name, before.pop(name))
            owner = self._owner.get(ident)
            if owner is not None:  # re-keyed: the store would ignore the same file under a new name
                other_key, other_name = owner
                self._remove(other_name, self._stored.get(other_key, {}).pop(other_name, None))
                if not self._stored.get(other_key, True):
                    del self._stored[other_key]
            self._notifier.send(store_fields(name), [fd])
            now[name] = ident
            self._owner[ident] = (key, name)
        for name, ident in before.items():
            if name not in now:
                self._remove(name, ident)
        if now:
            self._stored[key] = now
        self._check_limit()

    def drop(self, key: str) -> None:
        """The server dropped ``key``: its fds leave the store."""
        for name, ident in self._stored.pop(key, {}).items():
            self._remove(name, ident)

    def _remove(self, name: str, ident: Identity | None) -> None:
        if ident is not None and self._owner.get(ident, (None, name))[1] == name:
            self._owner.pop(ident, None)
        if self._notifier is not None:
            self._notifier.send(remove_fields(name))

    def _check_limit(self) -> None:
        if self._limit is not None and len(self._owner) > self._limit and not self._warned_full:
            self._warned_full = True
            log.warning(
                "reaper: %d pipe ends to store, but the unit's FileDescriptorStoreMax is %d: the rest "
                "will not survive a kill of the whole tree (raise it: 3 per container and exec'd process)",
                len(self._owner),
                self._limit,
            )

    def mark_stored(self, key: str, fds: list[int], names: Iterable[str]) -> None:
        """Record, without sending, that these fds are in the store already (a handover's)."""
        already = set(names)
        for name, fd in named_fds(key, fds):
            ident = identity(fd)
            if name in already and ident is not None:
                self._stored.setdefault(key, {})[name] = ident
                self._owner[ident] = (key, name)

    def stored_names(self) -> dict[str, list[str]]:
        """Per key, the names in the store (for the handover of an upgrade)."""
        return {key: sorted(names) for key, names in self._stored.items()}

    def store_unstored(self, kept: dict[str, list[int]]) -> None:
        """Store what is kept but not stored yet (after a handover from a version without the store)."""
        for key, fds in kept.items():
            if key not in self._stored:
                self.keep(key, fds)

    def restore(self, passed: list[tuple[str, int]]) -> dict[str, list[int]]:
        """The kept lists from the fds systemd passed at start-up; the rest closed and removed."""
        by_key: dict[str, dict[str, int]] = {}
        twice: set[str] = set()
        for name, fd in passed:
            parsed = parse_name(name)
            if parsed is None:
                log.warning("reaper: closing fd %d from systemd's fd store, named %r: not ours", fd, name)
                self._discard(name, [fd])
            elif parsed[1] in by_key.get(parsed[0], {}):
                close_quietly(fd)  # the same name twice: the first is kept, and stored again below
                twice.add(parsed[0])
            else:
                by_key.setdefault(parsed[0], {})[parsed[1]] = fd
        kept: dict[str, list[int]] = {}
        for key, by_role in by_key.items():
            fds = assemble(by_role)
            if fds is None:
                log.warning("reaper: closing the stored pipe ends of %s: only %s", key, sorted(by_role))
                for role, fd in by_role.items():
                    self._discard(fd_name(key, role), [fd])
                continue
            kept[key] = fds
            if key in twice:
                for role in by_role:
                    self._discard(fd_name(key, role), [])
                self.keep(key, fds)
            else:
                self.mark_stored(key, fds, (fd_name(key, role) for role in by_role))
        if kept:
            log.info("reaper: took back the pipe ends of %d processes from systemd's fd store", len(kept))
        return kept

    def _discard(self, name: str, fds: list[int]) -> None:
        close_quietly(*fds)
        if self._notifier is not None and valid_fdname(name):
            self._notifier.send(remove_fields(name))
