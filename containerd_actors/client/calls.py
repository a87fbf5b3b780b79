"""What every request of a client goes through, whichever socket carries it: ids, encoding, checks.

``Client`` (trio) and ``BlockingClient`` (one request at a time, no trio) differ only in how the
bytes travel; a request is built and its reply judged here, once, so that both raise the same
errors for the same replies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

# Before attrs, so that attrs' own classes are defined with their methods from the cache.
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
import attrs

import containerd_actors.protocol as wire
from containerd_actors.client.basics import DEFAULT_TIMEOUT_S, MAX_REPLY_BYTES, RequestIds  # noqa: F401
from containerd_actors.client.errors import ClientError, DaemonUnreachable, RequestFailed
from containerd_actors.protocol import plain_codec, plain_requests
from containerd_actors.protocol.addresses import is_tls, normalize_address
from containerd_actors.protocol.message_errors import MAX_MESSAGE_BYTES, ProtocolError

#: How long one ReadOutput of a follow waits for output before asking again.
FOLLOW_WAIT_S = 10.0
#: A follow whose long poll came back empty without waiting (the daemon had too many) waits this long.
FOLLOW_BACKOFF_S = 0.1
#: stdin bytes per JSON WriteInput: base64 makes them 4/3 bigger, well under the daemon's 1 MiB limit.
INPUT_CHUNK_BYTES = 256 << 10
#: The protocol revision from which ReadOutput replies and WriteInput requests may be binary frames.
FRAMES_SINCE = 3
#: stdin bytes per framed WriteInput: a whole request but for room for its JSON header (a
#: container id is at most 128 bytes; the header is a few hundred), so one round trip per MiB.
FRAMED_INPUT_CHUNK_BYTES = MAX_MESSAGE_BYTES - (4 << 10)
#: Output bytes per stream of a framed ReadOutput (the most the daemon gives): one reply carries
#: what a fast process writes in several milliseconds, where base64 made 1 MiB the sensible most.
FRAMED_READ_BYTES = wire.MAX_READ_BYTES

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from containerd_actors.client.log_files import FileBytes
    from containerd_actors.transport.tls import TlsFiles

_Reply = TypeVar("_Reply")


@attrs.frozen
class OutputRead:
    """The decoded output of one ReadOutput; ``exited`` marks the last, with the exit ``status``."""

    #: A view of the reply (``BlockingClient.follow_output``) or bytes: write it out, compare it;
    #: or where it is in a log file (``local_output.follow_output``: ``FileBytes.copy_to``).
    stdout: bytes | memoryview | FileBytes
    stderr: bytes | memoryview | FileBytes
    skipped: int = 0
    exited: bool = False
    status: int | None = None
    terminal: bool = False
    #: Where both logs together ended when the daemon answered (``stdout_end + stderr_end``);
    #: None from a daemon that does not say.
    end: int | None = None


def dialable(address: str, tls: TlsFiles | None) -> str:
    """``address`` normalized, once it is known that this client can dial it (TLS needs ``tls``)."""
    address = normalize_address(address)
    if is_tls(address) and tls is None:
        raise DaemonUnreachable(address, "a tls+tcp:// address needs a client certificate, key and CA")
    return address


def encode(
    request_type: type | str, request_id: str, fields: dict[str, Any], *, framed: bool = False
) -> bytes:
    """Build the request (its validators run here, so a bad field fails before sending) and encode it;
    ``framed``: its bytes fields as blobs of a binary frame (a daemon of ``FRAMES_SINCE`` or later).
    Without cattrs where it can (``plain_codec``: the converter's bytes, ~20 ms less per command).

    ``request_type`` by name (``"State"``): written from the fields where ``plain_requests`` is sure
    of them (the same bytes and checks, without defining the request classes: ~20M instructions
    of a one-shot command), else built as the class."""
    if isinstance(request_type, str):
        if not framed:
            payload = plain_requests.encode_fields(request_type, {"request_id": request_id, **fields})
            if payload is not None:
                return payload
        request_type = getattr(wire, request_type)
    return plain_codec.encode_request(request_type(request_id=request_id, **fields), framed=framed)


def speaks_frames(ping: wire.PingReply) -> bool:
    """Whether this daemon takes and gives binary frames (``ReadOutput.binary``, framed ``WriteInput``)."""
    return ping.protocol_version >= FRAMES_SINCE


def refuses_frames(failure: RequestFailed) -> bool:
    """Whether ``failure`` is a daemon older than ``FRAMES_SINCE`` refusing ``ReadOutput.binary``:
    its strict reader names the field it does not know (``extra fields found (binary) @ $``)."""
    return failure.code == wire.ErrorCode.INVALID_REQUEST and any(
        "extra fields" in detail and "binary" in detail for detail in (failure.details or [failure.message])
    )


def frames_worth_asking(size: int) -> bool:
    """Whether to ask the daemon (a Ping) if it takes framed input before writing ``size`` bytes of
    stdin: not for what one JSON WriteInput carries anyway (an EOF, a line typed), which would
    then wait a round trip to save nothing."""
    return size > INPUT_CHUNK_BYTES


def decode(raw: bytes | memoryview, reply_type: type[_Reply], *, views: bool = False) -> _Reply:
    """The typed reply; an ErrorReply raises ``RequestFailed``, anything else unexpected ``ClientError``.
    ``views``: a framed reply's bytes fields stay views of ``raw`` (``plain_codec.decode_reply``)."""
    try:
        # As wire.decode_reply, without cattrs where it can.
        reply = plain_codec.decode_reply(raw, views=views)
    except ProtocolError as exc:
        raise ClientError(f"undecodable reply from daemon: {exc.message}") from None
    if isinstance(reply, wire.ErrorReply):
        raise RequestFailed(reply)
    if not isinstance(reply, reply_type):
        raise ClientError(f"expected {reply_type.__name__}, got {type(reply).__name__}")
    return reply


# The keyword arguments of the clients' methods, for type checkers only: a TypedDict of string
# annotations (``from __future__ import annotations``) compiles each one as a ForwardRef when it is
# defined, ~25 compilations of every ``exec`` and ``start`` that nothing reads at run time.
if TYPE_CHECKING:

    class ProcessOptions(TypedDict, total=False):
        """The keyword arguments of ``add_process`` (both clients), each as the AddProcess field."""

        env: list[str] | None
        cwd: str
        user: wire.User | None
        terminal: bool
        rows: int
        cols: int

    class ReadOptions(TypedDict, total=False):
        """The keyword arguments of ``read_output`` (both clients), each as the ReadOutput field."""

        stdout_offset: int
        stderr_offset: int
        wait: float
        max_bytes: int
        tail: int
        binary: bool

    class CheckpointFlags(TypedDict, total=False):
        """The keyword arguments of ``create_checkpoint`` (both clients); all default to False."""

        tcp: bool
        unix_sockets: bool
        shell: bool
        exit: bool

    class MigrateFlags(TypedDict, total=False):
        """The keyword arguments of ``migrate_container`` (both clients); all default to False/0."""

        tcp: bool
        keep_source: bool
        rootfs_copy: bool
        pre_dump: int

    class FollowOptions(TypedDict, total=False):
        """The keyword arguments of ``follow_output`` (both clients), as ``OutputFollow`` takes them."""

        follow: bool
        tail: int
        offsets: tuple[int, int]


#: A migration moves the container's memory between hosts: allow it far longer than a request.
MIGRATE_TIMEOUT_S = 600.0


def process_fields(id: str, args: list[str], **options: Unpack[ProcessOptions]) -> dict[str, Any]:
    """The AddProcess fields for ``add_process``: copies of ``args`` and ``env`` (None: empty)."""
    return {**options, "id": id, "args": list(args), "env": list(options.get("env") or [])}


class OutputFollow:
    """The offsets of a ``follow_output`` between its ReadOutput requests, and when it stops.

    Both clients run the same loop (ask with ``fields``, yield ``take(reply)``, stop on ``done``,
    sleep ``backoff`` seconds); only the waiting differs.
    """

    def __init__(
        self,
        *,
        follow: bool = True,
        tail: int = -1,
        offsets: tuple[int, int] = (0, 0),
        framed: bool = False,
    ) -> None:
        """``framed``: ask for binary frames, and for as many bytes as a reply may carry (a daemon
        older than ``FRAMES_SINCE`` refuses that read: then ``refused_frames``)."""
        self._framed = framed
        self._follow = follow
        self._tail = tail
        self._offsets = offsets
        self.done = False
        self.backoff = 0.0

    def fields(self) -> ReadOptions:
        """The ReadOutput options of the next read (``tail`` only applies to the first)."""
        tail, self._tail = self._tail, -1
        wait = FOLLOW_WAIT_S if self._follow else 0.0
        out, err = self._offsets
        fields: ReadOptions = {"stdout_offset": out, "stderr_offset": err, "wait": wait, "tail": tail}
        if self._framed:
            fields["binary"] = True
            fields["max_bytes"] = FRAMED_READ_BYTES
        return fields

    @property
    def framed(self) -> bool:
        return self._framed

    def refused_frames(self, fields: ReadOptions) -> ReadOptions:
        """The daemon refused ``fields`` (``refuses_frames``): the same read as JSON, and JSON from now on.

        Why ask framed at once rather than Ping first: a Ping would cost every attach and every
        ``logs`` a round trip, while only a daemon older than frames pays for the refused read.
        """
        self._framed = False
        return self.plain(fields)

    @staticmethod
    def plain(fields: ReadOptions) -> ReadOptions:
        """``fields`` without the frame's options."""
        plain = fields.copy()
        plain.pop("binary", None)
        plain.pop("max_bytes", None)
        return plain

    def take(self, reply: wire.ReadOutputReply) -> OutputRead:
        """The decoded read; sets ``done`` (exited, or at the end without follow) and ``backoff``
        (nothing came back without waiting: the daemon's long polls were all taken)."""
        stdout, stderr = reply.stdout, reply.stderr
        self._offsets = (reply.next_stdout_offset, reply.next_stderr_offset)
        # By the offsets, not the bytes: a reply of ``spans`` carries none (``log_files``).
        empty = self._offsets == (reply.stdout_offset, reply.stderr_offset)
        self.done = reply.exited or (empty and not self._follow)
        self.backoff = FOLLOW_BACKOFF_S if empty and not self.done else 0.0
        end = (
            None
            if reply.stdout_end is None or reply.stderr_end is None
            else reply.stdout_end + reply.stderr_end
        )
        return OutputRead(stdout, stderr, reply.skipped, reply.exited, reply.status, reply.terminal, end)


class InputChunks:
    """``write_input``'s data in WriteInput-sized chunks, resent from where the daemon stopped."""

    def __init__(self, data: bytes, close: bool, *, framed: bool = False) -> None:
        """``framed``: chunks for binary frames (bigger: the bytes go as they are)."""
        self._size = FRAMED_INPUT_CHUNK_BYTES if framed else INPUT_CHUNK_BYTES
        self._view = memoryview(data)
        self._close = close
        self._finished = False
        self._sent = 0
        self._final = False

    def next_fields(self) -> dict[str, Any] | None:
        """The ``data`` and ``close`` fields of the next WriteInput, or None once all is written."""
        if self._finished:
            return None
        # A frame takes the view as it is (its one copy is into the frame); base64 copies anyway.
        chunk = self._view[: self._size]
        self._sent = len(chunk)
        self._final = len(chunk) == len(self._view)
        return {"data": chunk, "close": self._close and self._final}  # bytes-like: a view of data

    def written(self, count: int) -> None:
        """The daemon took ``count`` bytes of the last chunk."""
        self._view = self._view[count:]
        self._finished = self._final and count == self._sent
