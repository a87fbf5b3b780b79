"""Backpressure from an attach's output to its input, as a pipe gives ``runc exec``.

Why: the process never waits for a reader: its output goes to the logs, which keep one rotated
generation of 64 MiB per stream. So with a process that echoes its input (``cat``), a stdin
forwarded faster than the attach copies the output out would run ahead until a rotation deletes
output not yet read, and those bytes would be lost to it ("N bytes were rotated out"). The
client controls its input, so it can always keep the echo within the window: it pauses stdin.

What it knows for sure, and the bound it keeps (all offsets are both streams' together):

* ``copied``: the output offset the attach has written to its own stdout/stderr (skipped
  bytes included: they are behind it too);
* each ReadOutput reply says where the logs ended when the daemon answered (``stdout_end`` +
  ``stderr_end``, ``end_i``), and the attach knows how much stdin it had sent before it asked
  (``sent_i``). Output that appears later comes from stdin sent after that (at most
  ``sent - sent_i``) or from bytes the process had taken but not yet written then (at most
  ``IN_FLIGHT_BYTES``: pipes, a drain's read, requests in flight). So the output's end now is
  at most ``end_i - sent_i + sent + IN_FLIGHT_BYTES`` for every i, and ``slack`` keeps the least
  ``end_i - sent_i``.

stdin sends its next chunk (at most ``SEND_BYTES``) only while ``slack + sent - copied`` is at
most ``AHEAD_BYTES``: then the unread output can never be more than ``AHEAD_BYTES +
IN_FLIGHT_BYTES + SEND_BYTES`` (40 MiB), inside what a log keeps behind its end (64 MiB less
one drain write). Measurements come with the reader's replies; when stdin would pause, it asks
once (``probe``: a ReadOutput of one byte that does not wait) for a fresh end.

It never deadlocks: after a probe, a pause means ``end - copied > AHEAD_BYTES``, that is output
the reader has not copied yet and will (or will skip); a later probe could only find a larger
end, so stdin waits for ``copied`` alone, and goes on as soon as the bound holds. A process
that reads all its input before writing (``sort``) or never writes (``md5sum``) keeps its end
still: each probe lets another ``AHEAD_BYTES`` through. A pause lasts only while the attach's
own stdout is slower than the output (as ``runc exec``'s pipe would hold the writer), or until
the reads end (``finish``). A process whose output does not come from its input (``yes``) cannot
be held back by its input: a reader slower than that still loses bytes, and is told so.

A daemon that does not say where its logs end (older than this field) gets the old rule: stdin
waits, ``LEGACY_WAIT_S`` at most at a time, while the last read was full and stdin is more than
``AHEAD_BYTES`` ahead of the output read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sized

#: How far stdin may run ahead of the output copied out, beyond the output's known end.
AHEAD_BYTES = 24 << 20
#: Bytes a process may have taken from stdin and not yet written to its logs when the daemon
#: says where they end: its stdin and stdout pipes (1 MiB each), a drain's reads, and WriteInput
#: requests in flight (``ordered_input``: 2 of 4 MiB).
IN_FLIGHT_BYTES = 12 << 20
#: The most stdin sends at a time after a wait: a splice (1 MiB) or a WriteInput (4 MiB).
SEND_BYTES = 4 << 20
#: With a daemon that does not say where its logs end: a read of this much of one stream (all it
#: asked for) says the reader may be behind, and stdin waits at most this long at a time.
LEGACY_FULL_READ_BYTES = 4 << 20
LEGACY_WAIT_S = 0.5

#: Where the output ends now (both streams), or None when the daemon does not say.
Probe = Callable[[], int | None]


class OutputBacklog:
    """Shared by the attach's output reader, its stdout writer and its stdin forwarder (threads)."""

    def __init__(self, probe: Probe | None = None) -> None:
        self._changed = threading.Condition()
        self._probe = probe
        self._sent = 0
        self._copied = 0
        #: Least ``end_i - sent_i`` measured; None before the first.
        self._slack: int | None = None
        self._finished = False
        #: A daemon that does not say where its logs end: the old rule (see the module).
        self._legacy = False
        self._full = False
        self._read = 0
        #: How often stdin asked for the end, and how often it waited: for tests and benchmarks.
        self.probes = 0
        self.pauses = 0

    def set_probe(self, probe: Probe) -> None:
        self._probe = probe

    @property
    def sent(self) -> int:
        """stdin sent so far (at most one chunk less): what to pair with the read about to be asked."""
        return self._sent

    def read(self, stdout: Sized, stderr: Sized, end: int | None, sent_before: int) -> None:
        """A read came back: ``end`` where the logs ended (None: the daemon does not say), asked
        after ``sent_before`` bytes of stdin had been sent."""
        with self._changed:
            self._full = max(len(stdout), len(stderr)) >= LEGACY_FULL_READ_BYTES
            self._read += len(stdout) + len(stderr)
            if end is None:
                self._legacy = True
            else:
                self._measured(end - sent_before)
            self._changed.notify_all()

    def copied(self, position: int) -> None:
        """The output up to ``position`` (both streams) is written out, or was skipped."""
        with self._changed:
            self._copied = max(self._copied, position)
            self._changed.notify_all()

    def finish(self) -> None:
        """No more reads: nothing to wait for."""
        with self._changed:
            self._finished = True
            self._changed.notify_all()

    def wait(self, sent: int) -> None:
        """Before sending more, ``sent`` bytes of stdin sent so far: at once while within the bound."""
        with self._changed:
            self._sent = sent
            if self._within(sent):
                return
        if not self._legacy:
            self._ask_end(sent)  # once per pause: a later answer could only be larger
        with self._changed:
            if self._legacy:
                self._legacy_wait(sent)
                return
            if not self._within(sent):
                self.pauses += 1
            while not self._within(sent):
                self._changed.wait()

    def _within(self, sent: int) -> bool:
        if self._finished:
            return True
        if self._legacy:
            return not self._full or sent - self._read <= AHEAD_BYTES
        return self._slack is not None and self._slack + sent - self._copied <= AHEAD_BYTES

    def _measured(self, slack: int) -> None:
        self._slack = slack if self._slack is None else min(self._slack, slack)

    def _ask_end(self, sent: int) -> None:
        end = None
        if self._probe is not None:
            self.probes += 1
            try:
                end = self._probe()
            except Exception:
                end = None  # the process is gone, or the daemon: its writes say so
        with self._changed:
            if end is None:
                self._legacy = True
            else:
                self._measured(end - sent)

    def _legacy_wait(self, sent: int) -> None:
        deadline = time.monotonic() + LEGACY_WAIT_S
        while not self._within(sent):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._changed.wait(remaining):
                return
