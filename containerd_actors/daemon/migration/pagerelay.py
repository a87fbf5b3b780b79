"""The page relay: CRIU's page-server stream carried over mutual TLS, so a dump's memory pages go
straight to the destination while CRIU dumps, instead of to the source's disk and then over the
bulk channel (issue 17, "stream the dump").

CRIU's page server speaks plain TCP, and runc's ``checkpoint --page-server ADDR:PORT`` only takes
an address. So each end runs a relay:

    source: runc checkpoint -> CRIU -> 127.0.0.1:<ephemeral> (``SourceRelay``)
              == TLS "pages-up" ==>   (CRIU's requests and pages)
              <== TLS "pages-down" == (the page server's answers)
    destination: ``PageServerRelay`` -> a socketpair -> ``criu page-server --ps-socket``

The destination offers it beside the bulk channel (``MigrationBeginReply.page_server_port``, on
the host the source reached, with the bulk channel's one-time secret); the source connects both
TLS connections before anything is frozen, and the destination answers ``{"ready"}`` on both
only once its ``criu page-server`` has said it is ready (``--status-fd``): a path that is not
whole is found before the freeze, and the source then dumps to disk as before, and says so in
its log.

Two connections, one per direction, because an ``ssl`` socket must not be read in one thread
while another writes it: each of the four pump threads owns one direction of one TLS socket.
No checksums on the way: TLS's AEAD authenticates every record, and completeness is CRIU's own
business (the dump ends by asking the page server to flush and waits for its answer, so a dump
that succeeded proves that every page is on the destination's disk; the destination also
requires the page server to exit with 0 before it restores).

What a failure leaves: the source dumps with ``--leave-running`` from a paused container, and a
dump whose page stream broke fails with the container still paused (tried on this machine:
a relay that drops the connection midway, and a page server nobody listens on), so the source
thaws it as after any failed dump. The pages were never on the source's disk, and need not be:
the container never stopped there.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import attrs

from containerd_actors.daemon.migration import bulk
from containerd_actors.transport.tls import TlsFiles

log = logging.getLogger(__name__)

#: Bytes moved per ``recv``/``send`` of a pump.
PUMP_BYTES = 1 << 20
#: A TLS record's largest plaintext: a pump gathers no more once less room than this is left.
RECORD_BYTES = 16 * 1024
#: The two roles a relay connection presents with the secret.
UP, DOWN = "pages-up", "pages-down"
#: How long the source's relay waits for CRIU to connect once the dump has begun, and the
#: destination for the page server to exit once its stream ended.
CRIU_CONNECT_TIMEOUT_S = 60.0
PAGE_SERVER_EXIT_TIMEOUT_S = 30.0
#: How long the page server may take to say it is ready (it takes ~0.07 s here).
PAGE_SERVER_START_TIMEOUT_S = 10.0
#: The page server's log, beside (not among) the images it writes.
PAGE_SERVER_LOG = "page-server.log"
#: The lines of the page server's log quoted when it fails.
LOG_TAIL_LINES = 3


class RelayError(Exception):
    """The page relay could not be set up, or its stream failed."""


def pump(source: socket.socket, target: socket.socket, progress: Callable[[], None] | None = None) -> int:
    """Copy ``source`` to ``target`` until ``source`` ends, then shut ``target``'s sending side;
    the bytes copied. Raises ``OSError`` when either side fails.

    A TLS socket's ``recv_into`` returns one record (16 KiB at most): what is already there is
    gathered (up to ``PUMP_BYTES``) before one ``sendall``, which cut the receiving relay's CPU
    time for 256 MiB from 0.35-0.44 s to 0.29 s here; what is not there yet is never waited for
    (CRIU's requests wait for their answers).
    The shutdown is the base class's on purpose: on a TLS socket it ends the TCP stream (the peer
    reads an end of stream) without touching the TLS state another thread may be reading."""
    buffer = bytearray(PUMP_BYTES)
    view = memoryview(buffer)
    total = 0
    poller = select.poll()
    poller.register(source, select.POLLIN)
    ended = False
    while not ended:
        filled = source.recv_into(buffer)
        if filled == 0:
            break
        while PUMP_BYTES - filled >= RECORD_BYTES and _more_ready(source, poller):
            n = source.recv_into(view[filled:])
            if n == 0:
                ended = True
                break
            filled += n
        target.sendall(view[:filled])
        total += filled
        if progress is not None:
            progress()
    socket.socket.shutdown(target, socket.SHUT_WR)
    return total


def _more_ready(source: socket.socket, poller: select.poll) -> bool:
    """Whether a ``recv`` would return at once: decrypted bytes held by TLS, or bytes in the kernel."""
    if isinstance(source, ssl.SSLSocket) and source.pending():
        return True
    return bool(poller.poll(0))


def no_delay(sock: socket.socket) -> None:
    """Send small writes at once (``TCP_NODELAY``). CRIU's page-server protocol asks and waits for
    answers a few times per process (opening each one's pagemap); with Nagle's algorithm, a request
    written while the previous segment waits for its delayed ACK waited ~40 ms, and a dump of a
    four-process container through the relay took ~0.3 s longer than one to disk, whatever its size.
    CRIU sets it on its own page-server socket for the same reason."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


#: How soon a relay connection whose peer went silent fails (TCP keepalive: first probe after
#: this many idle seconds, then one a second, and the connection fails after the third unanswered).
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 2, 1, 3
#: How long sent pages may stay unacknowledged, or the peer's window closed, before the connection
#: fails (``TCP_USER_TIMEOUT``). A page server takes a relay's MiB in milliseconds; 20 s of a
#: closed window is a destination that is gone, not a slow one.
UNACKNOWLEDGED_LIMIT_S = 20


def keep_alive(sock: socket.socket) -> None:
    """Fail a relay connection soon after its peer goes away without a word.

    Seen in test_migrate's dropped connection: B's firewall reset B's own sockets, its page server
    died, and neither B's FIN nor anything else reached A. Two ways A then waited, its container
    frozen, until the dump's timeout (minutes):
    - CRIU waiting for the page server's answer: no side sends. Keepalive probes (from 2 s idle)
      find the peer gone (an RST or no answer) within ~5 s.
    - Pages sent into B's full, never-read buffer: a zero window, which TCP probes for ever (the
      probes were answered by nothing A took as an end). ``TCP_USER_TIMEOUT`` ends that, and
      unacknowledged data, after ``UNACKNOWLEDGED_LIMIT_S``.
    The relay's pump then fails, and CRIU's dump with it. A live peer answers keepalive probes and
    opens its window, so a stream that merely pauses is not affected.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, UNACKNOWLEDGED_LIMIT_S * 1000)


def _pump_quietly(
    source: socket.socket,
    target: socket.socket,
    outcome: list[int | OSError],
    progress: Callable[[], None] | None = None,
) -> None:
    """``pump`` for a thread of its own: its bytes or its error go to ``outcome``; on an error
    both sockets are woken, so the pump of the other direction ends too."""
    try:
        outcome.append(pump(source, target, progress))
    except OSError as exc:
        outcome.append(exc)
        bulk.shut(source)
        bulk.shut(target)


# ---------------------------------------------------------------------- destination


@attrs.frozen
class PageServerOutcome:
    """How the page server ended: its exit code, the bytes it received, the tail of its log."""

    returncode: int
    received: int
    said: str


class PageServerRelay:
    """The destination's listener, its two vetted connections and the ``criu page-server`` behind
    them; ``run`` in a worker thread. ``stop`` may be called from any thread at any time."""

    def __init__(
        self,
        tls: TlsFiles,
        host: str,
        token: str,
        peer_cn: str,
        secret: str,
        images: Path,
        work: Path,
        heard: Callable[[], None] | None = None,
    ) -> None:
        """``heard`` is called as pages arrive (from the worker thread): the source is alive."""
        self._token = token
        self._heard = heard
        self._peer_cn = peer_cn
        self._secret = secret
        self._images = images
        self._work = work
        self._context = bulk.server_context(tls)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener: socket.socket | None = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.bind((host, 0))
            self._listener.listen(4)
            self._listener.settimeout(bulk.ACCEPT_POLL_S)
        except OSError:
            self._listener.close()
            raise
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        #: Set once both connections came and the page server runs: the pages come this way.
        self.connected = threading.Event()

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            for sock in [self._listener, *self._sockets]:
                bulk.shut(sock)
            if self._process is not None and self._process.poll() is None:
                self._process.kill()

    def run(self) -> PageServerOutcome | None:
        """Take the source's two connections, run the page server behind them until it exits.

        None if stopped before the source came (it dumps to disk then); raises ``RelayError``.
        """
        try:
            conns = self._accept_both()
            if conns is None:
                return None
            up, down = conns
            return self._serve(up, down)
        finally:
            listener, self._listener = self._listener, None
            if listener is not None:
                listener.close()
            for sock in self._sockets:
                sock.close()
            process = self._process
            if process is not None:  # ended by now, or a failure above: never left unreaped
                if process.poll() is None:
                    process.kill()
                process.wait()

    def _accept_both(self) -> tuple[ssl.SSLSocket, ssl.SSLSocket] | None:
        taken: dict[str, ssl.SSLSocket] = {}
        while len(taken) < 2:
            if self._stopped.is_set():
                return None
            listener = self._listener
            assert listener is not None
            accepted = bulk.accept_until_stopped(listener, self._stopped)
            if accepted is None:
                return None
            vetted = bulk.vet(self._context, *accepted, self._token, self._peer_cn, self._secret)
            if vetted is None:
                continue
            conn, first = vetted
            role = first.get("role")
            if role not in (UP, DOWN) or role in taken:
                log.warning("migration %s: page relay connection with role %r refused", self._token, role)
                conn.close()
                continue
            conn.settimeout(None)  # a dump may pause its stream (while CRIU collects), not our business
            no_delay(conn)
            keep_alive(conn)
            taken[role] = conn
            with self._lock:
                self._sockets.append(conn)
                if self._stopped.is_set():
                    return None
        return taken[UP], taken[DOWN]

    def _serve(self, up: ssl.SSLSocket, down: ssl.SSLSocket) -> PageServerOutcome:
        ours, theirs = socket.socketpair()
        status_read, status_write = os.pipe()
        with self._lock:
            self._sockets.append(ours)
            if self._stopped.is_set():
                theirs.close()
                os.close(status_read)
                os.close(status_write)
                raise RelayError("stopped")
            argv = [
                "criu",
                "page-server",
                "--images-dir",
                str(self._images),
                "--work-dir",
                str(self._work),
                "--ps-socket",
                str(theirs.fileno()),
                "--status-fd",
                str(status_write),
                "-o",
                PAGE_SERVER_LOG,
            ]
            try:
                self._process = subprocess.Popen(
                    argv,
                    pass_fds=[theirs.fileno(), status_write],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                )
            except OSError as exc:
                os.close(status_read)
                raise RelayError(f"cannot start criu page-server: {exc}") from None
            finally:
                theirs.close()
                os.close(status_write)
        try:
            started = _wait_started(status_read)
        finally:
            os.close(status_read)
        if not started:
            self.stop()
            raise RelayError(f"criu page-server did not start: {self._log_tail()}")
        process = self._process
        try:
            for conn in (up, down):
                bulk.send_record(conn, {"ready": True})
        except OSError as exc:
            raise RelayError(f"the source left the page relay at once: {exc}") from None
        self.connected.set()
        answers: list[int | OSError] = []
        back = threading.Thread(target=_pump_quietly, args=(ours, down, answers), daemon=True)
        back.start()
        pages: list[int | OSError] = []
        _pump_quietly(up, ours, pages, self._heard)
        try:
            returncode = process.wait(PAGE_SERVER_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
        bulk.shut(ours)
        back.join(PAGE_SERVER_EXIT_TIMEOUT_S)
        received = pages[0] if pages and isinstance(pages[0], int) else 0
        if pages and isinstance(pages[0], OSError) and returncode == 0:
            returncode = -1  # the stream broke, whatever the page server made of it
        return PageServerOutcome(returncode, received, self._log_tail() if returncode else "")

    def _log_tail(self) -> str:
        try:
            lines = (self._work / PAGE_SERVER_LOG).read_text(errors="replace").splitlines()
        except OSError:
            return "(no page-server log)"
        errors = [line for line in lines if "rror" in line] or lines
        return " | ".join(line.strip() for line in errors[-LOG_TAIL_LINES:])


def _wait_started(status: int) -> bool:
    """Whether the page server said it is ready (``--status-fd``: a zero byte, then the pipe
    closes; a page server that fails to start closes it without the byte)."""
    ready, _, _ = select.select([status], [], [], PAGE_SERVER_START_TIMEOUT_S)
    return bool(ready) and os.read(status, 1) == b"\0"


# ---------------------------------------------------------------------- source


class SourceRelay:
    """The source's end: a plain listener on 127.0.0.1 for CRIU, and the two TLS connections.

    ``open`` (blocking) connects both and waits for the destination's ``ready``: the whole path
    works before anything is frozen. ``run`` (blocking) then relays the one connection CRIU makes.
    """

    def __init__(self, up: ssl.SSLSocket, down: ssl.SSLSocket, listener: socket.socket) -> None:
        self._up = up
        self._down = down
        self._listener = listener
        self._criu: socket.socket | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self.address = "{}:{}".format(*listener.getsockname()[:2])

    @classmethod
    def open(cls, tls: TlsFiles, host: str, port: int, secret: str) -> SourceRelay:
        """Raises ``OSError`` (``ssl.SSLError`` among them) or ``RelayError``."""
        conns: list[ssl.SSLSocket] = []
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            for role in (UP, DOWN):
                conn = bulk.open_tls(tls, host, port)
                conns.append(conn)
                no_delay(conn)
                keep_alive(conn)
                bulk.send_record(conn, {"secret": secret, "role": role})
            for conn in conns:
                if not bulk.recv_record(conn).get("ready"):
                    raise RelayError("the destination did not start its page server")
                conn.settimeout(None)  # a dump's stream may pause while CRIU collects
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            listener.settimeout(bulk.ACCEPT_POLL_S)
        except BaseException as exc:
            for sock in [*conns, listener]:
                sock.close()
            if isinstance(exc, bulk.BulkError):
                raise RelayError(str(exc)) from None
            raise
        return cls(conns[0], conns[1], listener)

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            for sock in (self._listener, self._up, self._down, self._criu):
                bulk.shut(sock)

    def close(self) -> None:
        for sock in (self._listener, self._up, self._down, self._criu):
            if sock is not None:
                sock.close()

    def run(self) -> int:
        """Relay CRIU's connection until it ends; the bytes sent to the destination.

        Raises ``RelayError`` when CRIU never came (stopped, or ``CRIU_CONNECT_TIMEOUT_S``) or the
        stream failed."""
        criu = self._accept()
        failed = True
        try:
            answers: list[int | OSError] = []
            back = threading.Thread(target=_pump_quietly, args=(self._down, criu, answers), daemon=True)
            back.start()
            pages: list[int | OSError] = []
            _pump_quietly(criu, self._up, pages)
            if pages and isinstance(pages[0], OSError):
                self.stop()  # no answer matters now: end their pump at once, not after a grace
            # CRIU has closed its connection (its dump is over) or a side failed: the destination's
            # page server ends, and its side closes the answers' connection.
            back.join(PAGE_SERVER_EXIT_TIMEOUT_S)
            if back.is_alive():
                self.stop()
                back.join()
            for outcome in (pages, answers):
                if outcome and isinstance(outcome[0], OSError):
                    raise RelayError(f"the page relay failed: {outcome[0]}")
            sent = pages[0] if pages else 0
            assert isinstance(sent, int)
            failed = False
            return sent
        finally:
            self._close_criu(reset=failed)

    def _close_criu(self, reset: bool) -> None:
        """Close CRIU's connection now that no pump uses it; after a failure with a reset, so
        that CRIU's next write fails at once. (A shut socket is not enough: Linux goes on taking
        bytes into a socket shut for reading, and a CRIU blocked writing into a full one would
        wait for the dump's timeout, and be killed with its parasite in the container.)"""
        with self._lock:
            criu, self._criu = self._criu, None
        if criu is None:
            return
        if reset:
            criu.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        criu.close()

    def _accept(self) -> socket.socket:
        waited = 0.0
        while not self._stopped.is_set() and waited < CRIU_CONNECT_TIMEOUT_S:
            try:
                criu, _ = self._listener.accept()
            except TimeoutError:
                waited += bulk.ACCEPT_POLL_S
                continue
            except OSError as exc:
                raise RelayError(f"the page relay's listener failed: {exc}") from None
            criu.settimeout(None)
            no_delay(criu)
            with self._lock:
                self._criu = criu
                if self._stopped.is_set():
                    break
            return criu
        raise RelayError("CRIU never connected to the page relay")
