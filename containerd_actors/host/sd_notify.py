"""systemd's notify protocol and its fd passing at start-up, without libsystemd.

What this implements (sd_notify(3), sd_listen_fds(3), systemd.io/FILE_DESCRIPTOR_STORE):

- A notification is one datagram on the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or an
  abstract name when it starts with ``@``): newline-separated ``KEY=VALUE`` lines (``READY=1``,
  ``STATUS=...``, ``STOPPING=1``), any file descriptors riding along as SCM_RIGHTS.
- ``FDSTORE=1`` + ``FDNAME=<name>`` hands the manager a duplicate of the fds to keep for the
  service; ``FDPOLL=0`` stops it from dropping one when it sees EPOLLHUP/EPOLLERR (a pipe whose
  writer exited still holds unread output). ``FDSTOREREMOVE=1`` + ``FDNAME=<name>`` closes every
  stored fd of that name. A name is at most 255 ASCII characters, no control character, no ``:``.
- On the next start the stored fds arrive as fds 3, 4, ... with ``$LISTEN_FDS`` (how many),
  ``$LISTEN_PID`` (the pid they are meant for: ours, or they are not ours to take) and
  ``$LISTEN_FDNAMES`` (their names, ``:``-separated).

Only the reaper (the service's main process) talks to systemd, so the unit works with
``NotifyAccess=main``. The notify socket is non-blocking and queues what the manager has no room
for yet: the reaper's loop must never block on anyone.
"""

from __future__ import annotations

import array
import collections
import logging
import os
import socket
from collections.abc import Mapping, MutableMapping, Sequence

from containerd_actors.host.fds import close_quietly

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
LISTEN_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID")
#: The first fd systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3
MAX_FDNAME = 255
#: Notifications waiting for room in the manager's queue; past this the oldest are dropped.
MAX_QUEUED = 4096


def socket_address(value: str) -> str | None:
    """The address to connect to for a ``$NOTIFY_SOCKET`` value; None for what we cannot reach
    (vsock addresses, which a host service never gets)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def encode(fields: Mapping[str, str]) -> bytes:
    """One notification: ``KEY=VALUE`` lines. A value is one line (``STATUS=`` is documented so)."""
    lines = []
    for key, value in fields.items():
        if "\n" in key or "=" in key or "\n" in value:
            raise ValueError(f"not a notification field: {key!r}={value!r}")
        lines.append(f"{key}={value}")
    return "\n".join(lines).encode()


def parse(data: bytes) -> dict[str, str]:
    """The fields of a notification (the manager's side; the tests play it)."""
    fields = {}
    for line in data.decode(errors="replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields


def valid_fdname(name: str) -> bool:
    """What systemd accepts as FDNAME (others are ignored): 1-255 printable ASCII, no ``:``."""
    return 0 < len(name) <= MAX_FDNAME and all(" " <= c <= "~" for c in name) and ":" not in name


def store_fields(name: str) -> dict[str, str]:
    """Keep the fd sent with this message under ``name``, even after its peer hung up."""
    return {"FDSTORE": "1", "FDNAME": name, "FDPOLL": "0"}


def remove_fields(name: str) -> dict[str, str]:
    return {"FDSTOREREMOVE": "1", "FDNAME": name}


def take_listen_fds(environ: MutableMapping[str, str], pid: int) -> list[tuple[str, int]]:
    """The fds systemd passed this process, with their names, made close-on-exec.

    The variables are removed whatever they say, so that no child (the API server, runc) takes
    them for its own. Fds meant for another pid are left alone, as sd_listen_fds does. A missing
    name is ``""``: the caller treats it as unknown.
    """
    values = {name: environ.pop(name, None) for name in LISTEN_ENV}
    try:
        count = int(values["LISTEN_FDS"] or "0")
        meant_for = int(values["LISTEN_PID"] or "0")
    except ValueError:
        log.warning("ignoring unparsable LISTEN_FDS/LISTEN_PID: %r", values)
        return []
    if count <= 0 or meant_for != pid:
        return []
    names = (values["LISTEN_FDNAMES"] or "").split(":")
    taken = []
    for index in range(count):
        fd = LISTEN_FDS_START + index
        try:
            os.set_inheritable(fd, False)
        except OSError:
            continue  # LISTEN_FDS said more than was passed
        taken.append((names[index] if index < len(names) else "", fd))
    return taken


class Notifier:
    """The service's side of ``$NOTIFY_SOCKET``: queued datagrams, sent as the manager has room.

    Fds given to ``send`` are duplicated at once (the caller may close its own right after) and
    closed once sent. A manager that is gone (the socket refuses or vanished) costs one log line;
    what could not be sent is dropped, as sd_notify does when nobody listens.
    """

    def __init__(self, address: str, *, max_queued: int = MAX_QUEUED) -> None:
        self.address = address
        self._target = socket_address(address)
        self._sock: socket.socket | None = None
        self._queue: collections.deque[tuple[bytes, list[int]]] = collections.deque()
        self._max_queued = max_queued
        self._complained = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str]) -> Notifier | None:
        """The notifier for ``$NOTIFY_SOCKET``, removed from the environment children inherit
        (runc would take it for the container's, and wait for the container's READY=1)."""
        address = environ.pop(NOTIFY_SOCKET_ENV, None)
        return cls(address) if address else None

    def send(self, fields: Mapping[str, str], fds: Sequence[int] = ()) -> None:
        self._queue.append((encode(fields), [os.dup(fd) for fd in fds]))
        if len(self._queue) > self._max_queued:
            close_quietly(*self._queue.popleft()[1])
            self._complain(f"more than {self._max_queued} notifications unread; dropping the oldest")
        self.flush()

    @property
    def waiting(self) -> bool:
        """Whether something waits for the manager to make room (select for ``fileno``'s writability)."""
        return bool(self._queue) and self._sock is not None

    def fileno(self) -> int:
        assert self._sock is not None
        return self._sock.fileno()

    def flush(self) -> None:
        while self._queue:
            payload, fds = self._queue[0]
            if not self._send_one(payload, fds):
                return
            self._queue.popleft()
            close_quietly(*fds)

    def flush_blocking(self, timeout: float) -> None:
        """Before an exec: what is queued goes now, or not at all (its fds close with the exec)."""
        if self._sock is not None and self._queue:
            self._sock.settimeout(timeout)
            try:
                self.flush()
            finally:
                self._sock.setblocking(False)

    def _send_one(self, payload: bytes, fds: list[int]) -> bool:
        """False while the manager has no room; True once sent, or dropped for good."""
        if self._target is None:
            self._complain(f"unsupported address {self.address!r}")
            return True
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
        error: OSError | None = None
        for _attempt in range(2):  # a manager that re-executed has a new socket at the same address
            try:
                if self._sock is None:
                    self._sock = self._connect()
                self._sock.sendmsg([payload], ancillary)
                return True
            except (BlockingIOError, TimeoutError):
                return False
            except OSError as exc:
                error = exc
                self._reset()
        self._complain(f"{error}")
        return True

    def _connect(self) -> socket.socket:
        assert self._target is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            sock.connect(self._target)
        except OSError:
            sock.close()
            raise
        return sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _complain(self, why: str) -> None:
        if not self._complained:
            self._complained = True
            log.warning("notify socket %s: %s (said once; later ones may be lost too)", self.address, why)

    def close(self) -> None:
        self._reset()
        while self._queue:
            close_quietly(*self._queue.popleft()[1])
