"""The bulk channel: a migration's images over one TLS stream of Python's ``ssl``, beside the API.

Why not the API: nng's TLS (mbedTLS, as pynng links it) moved ~100 MiB/s of 1 MiB messages over
loopback with one connection, where OpenSSL (AES-GCM with AES-NI) moves several times that. So the
destination, on ``MigrationBegin`` from a TLS client, opens a one-shot listener on the address the
source reached (an ephemeral port) and returns its port and a one-time secret in the reply. The
source connects before it freezes anything (so a port a firewall blocks costs nothing: the source
falls back to the API's chunks and says so in its log), and after the dump streams the files.

Both ends run blocking sockets in a worker thread: ``sendall``/``recv_into`` of an ``ssl`` socket
release the GIL while OpenSSL encrypts and while the kernel copies, and so does ``hashlib`` on
big buffers, so the trio thread stays free. Mutual TLS 1.3 with the daemon's own certificate, key
and CA (``--tls-*``); the destination also checks that the client certificate's common name is the
one that sent ``MigrationBegin``, and that the first record holds the secret. A connection that
fails either is closed, and the listener waits for the next: a stranger cannot disturb the
migration. Only one good connection is taken; the listener closes then, and on commit, abort or
the idle timeout.

The stream, source to destination: records of a 4-byte big-endian length and a JSON header; a
chunk's header (``seq``, ``kind``, ``name``, ``offset``, ``length``, ``sha256``) is followed by
its ``length`` bytes. First ``{"secret"}`` (answered ``{"ready"}`` once taken), then the chunks,
then ``{"end": chunks}``; the destination answers ``{"ok": chunks}`` once every chunk is checked
and written, or ``{"error"}``.
The whole is checked again at ``MigrationCommit``, as for chunks sent over the API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from containerd_actors.daemon.migration.chunks import ChunkPlan
from containerd_actors.protocol.migration import MigrationChunk
from containerd_actors.protocol.validators import InvalidField
from containerd_actors.transport.tls import TlsFiles

log = logging.getLogger(__name__)

#: Bytes per chunk on the bulk channel. 256 KiB, 1 MiB and 4 MiB cost the same CPU here
#: (``scripts/bench_bulk_channel.py``: ~0.36 s at the source, ~0.43 s at the receiver for 256 MiB);
#: 1 MiB keeps the receiver's buffer, read three times (decrypted into, hashed, written out),
#: within a core's L2 cache, and the per-chunk header small beside its bytes.
BULK_CHUNK_BYTES = 1 << 20
#: A chunk header may not announce more than this (a bad peer cannot make us allocate more).
MAX_CHUNK_BYTES = 8 << 20
#: The largest JSON header accepted.
MAX_HEADER_BYTES = 4096
#: How long a connecting peer has for its handshake and its secret.
HANDSHAKE_TIMEOUT_S = 5.0
#: How long the source waits to connect (a port a firewall drops answers nothing).
CONNECT_TIMEOUT_S = 5.0
#: A stalled peer on an established bulk connection is given up after this.
IO_TIMEOUT_S = 30.0
#: How often the listener looks whether it was stopped.
ACCEPT_POLL_S = 0.2

_LENGTH = struct.Struct("!I")


class BulkError(Exception):
    """The bulk channel failed: the peer vanished, broke the format, or sent bad bytes."""


def server_context(tls: TlsFiles) -> ssl.SSLContext:
    """TLS 1.3, our certificate, and a client certificate signed by the CA required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(tls.cert, tls.key)
    context.load_verify_locations(cafile=str(tls.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(tls: TlsFiles) -> ssl.SSLContext:
    """TLS 1.3, our certificate as the client's, the server's checked against the CA and its name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(tls.cert, tls.key)
    context.load_verify_locations(cafile=str(tls.ca))
    return context


def common_name(peer: dict[str, Any] | None) -> str | None:
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def send_record(conn: ssl.SSLSocket, header: dict[str, Any]) -> None:
    body = json.dumps(header).encode()
    conn.sendall(_LENGTH.pack(len(body)) + body)


def recv_exactly(conn: ssl.SSLSocket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if n == 0:
            raise BulkError("the peer closed the bulk connection midway")
        got += n


def recv_record(conn: ssl.SSLSocket) -> dict[str, Any]:
    raw = bytearray(_LENGTH.size)
    recv_exactly(conn, memoryview(raw))
    (length,) = _LENGTH.unpack(raw)
    if length > MAX_HEADER_BYTES:
        raise BulkError(f"a bulk header of {length} bytes (at most {MAX_HEADER_BYTES})")
    body = bytearray(length)
    recv_exactly(conn, memoryview(body))
    try:
        header = json.loads(body)
    except ValueError as exc:
        raise BulkError(f"a bulk header that is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BulkError("a bulk header that is not an object")
    return header


def shut(sock: socket.socket | None) -> None:
    """Wake a thread blocked in ``accept`` or ``recv`` on ``sock`` (the base class's shutdown:
    ``SSLSocket.shutdown`` would tear down its TLS state under the other thread)."""
    if sock is None:
        return
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def accept_until_stopped(
    listener: socket.socket, stopped: threading.Event
) -> tuple[socket.socket, Any] | None:
    """One connection (and its address) from ``listener``, whose timeout (``ACCEPT_POLL_S``) wakes
    it to notice ``stopped``; None once stopped (a ``stop`` also shuts the listener, which fails
    the ``accept`` at once)."""
    while not stopped.is_set():
        try:
            return listener.accept()
        except TimeoutError:
            continue
        except OSError:
            if stopped.is_set():
                return None
            raise
    return None


def vet(
    context: ssl.SSLContext, raw: socket.socket, address: Any, token: str, peer_cn: str, secret: str
) -> tuple[ssl.SSLSocket, dict[str, Any]] | None:
    """The handshake, the client's name and the secret of one accepted connection: the TLS
    connection and its first record, or None (the connection is closed, the reason logged: a
    stranger's connection costs the listener nothing but this)."""
    raw.settimeout(HANDSHAKE_TIMEOUT_S)
    try:
        conn = context.wrap_socket(raw, server_side=True)
    except (OSError, ssl.SSLError) as exc:
        raw.close()
        log.warning("migration %s: connection from %s refused: %s", token, address, exc)
        return None
    try:
        name = common_name(conn.getpeercert())
        if name != peer_cn:
            raise BulkError(f"client certificate {name!r} is not the migration's source {peer_cn!r}")
        first = recv_record(conn)
        if not hmac.compare_digest(str(first.get("secret", "")), secret):
            raise BulkError("no valid secret")
    except (OSError, BulkError) as exc:
        conn.close()
        log.warning("migration %s: connection from %s refused: %s", token, address, exc)
        return None
    conn.settimeout(IO_TIMEOUT_S)
    return conn, first


def open_tls(tls: TlsFiles, host: str, port: int) -> ssl.SSLSocket:
    """A TCP connection to ``host:port`` and its mutual TLS handshake. Blocking: a worker thread."""
    raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    try:
        return client_context(tls).wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


# ---------------------------------------------------------------------- destination


@attrs.frozen
class ChunkHeader:
    seq: int
    kind: str
    name: str
    offset: int
    length: int
    sha256: str


def _chunk_header(token: str, header: dict[str, Any]) -> ChunkHeader:
    """A chunk's header, checked by ``MigrationChunk``'s own validators (names, kinds, digests)."""
    try:
        length = int(header["length"])
        chunk = MigrationChunk(
            "bulk",
            token,
            int(header["seq"]),
            str(header["kind"]),
            str(header["name"]),
            int(header["offset"]),
            str(header["sha256"]),
        )
    except (KeyError, TypeError, ValueError, InvalidField) as exc:
        raise BulkError(f"a bad chunk header: {exc}") from None
    if not 0 <= length <= MAX_CHUNK_BYTES:
        raise BulkError(f"a chunk of {length} bytes (at most {MAX_CHUNK_BYTES})")
    return ChunkHeader(chunk.seq, chunk.kind, chunk.name, chunk.offset, length, chunk.sha256)


class BulkReceiver:
    """The destination's one-shot listener and the stream it takes (``run`` in a worker thread).

    ``stop`` may be called from any thread at any time: it wakes the worker, which closes the
    listener and the connection, so the port is free once ``run`` has returned.
    """

    def __init__(
        self,
        tls: TlsFiles,
        host: str,
        token: str,
        peer_cn: str,
        path_of: Callable[[str, str], Path],
        heard: Callable[[], None],
    ) -> None:
        self.secret = secrets.token_hex(16)
        self._token = token
        self._peer_cn = peer_cn
        self._path_of = path_of
        self._heard = heard
        self._context = server_context(tls)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener: socket.socket | None = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.bind((host, 0))
            self._listener.listen(4)
            self._listener.settimeout(ACCEPT_POLL_S)
        except OSError:
            self._listener.close()
            raise
        self.port: int = self._listener.getsockname()[1]
        self._conn: ssl.SSLSocket | None = None
        self._stopped = threading.Event()
        #: Set by the worker once a source presented the secret: the images come this way.
        self.connected = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        shut(self._listener)
        shut(self._conn)

    def run(self) -> dict[int, str]:
        """Take one good connection and the stream; the chunks' digests by ``seq``.

        Raises ``BulkError`` if the stream failed; returns ``{}`` if stopped before any source came.
        """
        try:
            conn = self._accept()
            if conn is None:
                return {}
            with conn:
                return self._receive(conn)
        finally:
            self._close_listener()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def _accept(self) -> ssl.SSLSocket | None:
        while not self._stopped.is_set():
            listener = self._listener
            assert listener is not None
            accepted = accept_until_stopped(listener, self._stopped)
            if accepted is None:
                return None
            conn = self._vet(*accepted)
            if conn is not None:
                self._close_listener()
                self._conn = conn
                if self._stopped.is_set():  # a stop between the check and the assignment
                    conn.close()
                    return None
                self.connected.set()
                try:
                    send_record(conn, {"ready": True})
                except OSError as exc:
                    conn.close()
                    raise BulkError(f"the source left the bulk channel at once: {exc}") from None
                return conn
        return None

    def _vet(self, raw: socket.socket, address: Any) -> ssl.SSLSocket | None:
        vetted = vet(self._context, raw, address, self._token, self._peer_cn, self.secret)
        return vetted[0] if vetted is not None else None

    def _receive(self, conn: ssl.SSLSocket) -> dict[int, str]:
        digests: dict[int, str] = {}
        files: dict[Path, int] = {}
        buffer = bytearray(BULK_CHUNK_BYTES)
        try:
            while True:
                header = recv_record(conn)
                if "end" in header:
                    if header["end"] != len(digests):
                        raise BulkError(f"the source sent {header['end']} chunks, {len(digests)} arrived")
                    send_record(conn, {"ok": len(digests)})
                    return digests
                chunk = _chunk_header(self._token, header)
                if chunk.length > len(buffer):
                    buffer = bytearray(chunk.length)
                view = memoryview(buffer)[: chunk.length]
                recv_exactly(conn, view)
                if hashlib.sha256(view).hexdigest() != chunk.sha256:
                    raise BulkError(f"chunk {chunk.seq} ({chunk.name}) does not match its sha256")
                path = self._path_of(chunk.kind, chunk.name)
                fd = files.get(path)
                if fd is None:
                    fd = files[path] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
                if os.pwrite(fd, view, chunk.offset) != chunk.length:
                    raise BulkError(f"short write to {path}")
                if chunk.seq in digests:
                    raise BulkError(f"chunk {chunk.seq} arrived twice")
                digests[chunk.seq] = chunk.sha256
                self._heard()
        except BulkError as exc:
            try:
                send_record(conn, {"error": str(exc)})
            except OSError:
                pass
            raise
        except OSError as exc:
            if self._stopped.is_set():
                raise BulkError("stopped") from None
            raise BulkError(f"the bulk connection failed: {exc}") from None
        finally:
            for fd in files.values():
                os.close(fd)


# ---------------------------------------------------------------------- source


def connect(tls: TlsFiles, host: str, port: int, secret: str) -> ssl.SSLSocket:
    """Connect, handshake, present the secret, and wait until the destination has taken it (so a
    commit that follows finds the destination waiting for this stream). Blocking: a worker thread.
    Raises ``OSError`` (``ssl.SSLError`` among them) or ``BulkError``."""
    conn = open_tls(tls, host, port)
    try:
        send_record(conn, {"secret": secret})
        if not recv_record(conn).get("ready"):
            raise BulkError("the destination did not take the bulk connection")
        conn.settimeout(IO_TIMEOUT_S)
    except BaseException:
        conn.close()
        raise
    return conn


def send_chunks(conn: ssl.SSLSocket, plans: list[ChunkPlan]) -> tuple[list[str], int]:
    """Stream every chunk, then wait for the destination's word: the digests by ``seq``, and bytes.

    Blocking (a worker thread). Raises ``BulkError`` or ``OSError``.
    """
    digests = [""] * len(plans)
    sent = 0
    opened: dict[Path, int] = {}
    try:
        for plan in plans:
            fd = opened.get(plan.file.path)
            if fd is None:
                fd = opened[plan.file.path] = os.open(plan.file.path, os.O_RDONLY | os.O_CLOEXEC)
            data = os.pread(fd, plan.length, plan.offset)
            if len(data) != plan.length:
                raise BulkError(f"{plan.file.path} shrank while it was sent")
            digest = hashlib.sha256(data).hexdigest()
            digests[plan.seq] = digest
            header = {
                "seq": plan.seq,
                "kind": plan.file.kind,
                "name": plan.file.name,
                "offset": plan.offset,
                "length": plan.length,
                "sha256": digest,
            }
            send_record(conn, header)
            conn.sendall(data)
            sent += len(data)
        send_record(conn, {"end": len(plans)})
        answer = recv_record(conn)
    finally:
        for fd in opened.values():
            os.close(fd)
    if answer.get("ok") != len(plans):
        raise BulkError(f"the destination refused the images: {answer.get('error', answer)}")
    return digests, sent
