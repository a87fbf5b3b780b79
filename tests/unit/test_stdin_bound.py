"""``ctl.output_backlog``: stdin held back by the output an attach has copied out, without a daemon."""

from __future__ import annotations

import threading

import pytest

from ctl import output_backlog
from ctl.output_backlog import OutputBacklog

MIB = 1 << 20
AHEAD = output_backlog.AHEAD_BYTES


class Ends:
    """A probe: where the output ends, as the test says."""

    def __init__(self, end: int | None = 0) -> None:
        self.end = end
        self.calls = 0

    def __call__(self) -> int | None:
        self.calls += 1
        return self.end


def waits(backlog: OutputBacklog, sent: int) -> tuple[threading.Thread, threading.Event]:
    released = threading.Event()

    def send() -> None:
        backlog.wait(sent)
        released.set()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, released


def test_stdin_goes_while_the_output_is_copied_out() -> None:
    """cat, read as fast as it comes: every read measures the end; stdin never waits or asks."""
    probe = Ends()
    backlog = OutputBacklog(probe)
    sent = 0
    for _ in range(100):
        sent_before = backlog.sent
        backlog.read(b"", b"", sent_before, sent_before)  # the echo of all that was sent
        backlog.copied(sent_before)
        backlog.wait(sent)
        sent += 4 * MIB
    assert probe.calls == 0
    assert backlog.pauses == 0


def test_stdin_waits_for_the_output_it_has_not_copied_out() -> None:
    """The reader behind (a slow stdout): stdin stops at the bound and goes on once the
    output is copied out, however long that takes (no timeout lets bytes through)."""
    probe = Ends(end=0)
    backlog = OutputBacklog(probe)
    backlog.wait(0)  # the first wait asks where the output ends
    assert probe.calls == 1
    backlog.wait(AHEAD)  # within the bound
    # The echo of it all is in the logs: the reader read it, copied none yet.
    backlog.read(b"", b"", AHEAD + MIB, AHEAD + MIB)
    probe.end = AHEAD + MIB
    thread, released = waits(backlog, AHEAD + MIB)
    assert not released.wait(0.3)
    assert probe.calls == 2  # asked once for this pause, then waits for the copies alone
    backlog.copied(MIB // 2)
    assert not released.wait(0.1)
    backlog.copied(MIB)  # now AHEAD + MIB - MIB ahead: the bound holds
    assert released.wait(5)
    thread.join()
    assert backlog.pauses == 1


def test_a_process_that_writes_nothing_never_holds_stdin() -> None:
    """md5sum, sort before its end: the end stays put, each probe lets AHEAD more through."""
    probe = Ends(end=0)
    backlog = OutputBacklog(probe)
    for sent in range(0, 1 << 30, 4 * MIB):
        backlog.wait(sent)
    assert backlog.pauses == 0
    assert probe.calls <= (1 << 30) // AHEAD + 1


def test_a_measurement_counts_only_the_stdin_sent_before_it_was_asked() -> None:
    """An end measured by a read asked long ago (a long poll) bounds less than one just asked."""
    probe = Ends(end=0)
    backlog = OutputBacklog(probe)
    backlog.wait(0)
    # A read asked before any stdin went says the end is 0: the bound is ``sent`` itself.
    backlog.read(b"", b"", 0, 0)
    backlog.wait(AHEAD)
    thread, released = waits(backlog, AHEAD + 1)
    # Not held: the probe finds the end still 0 with AHEAD + 1 sent (nothing echoed yet).
    assert released.wait(5)
    thread.join()


def test_the_end_of_the_reads_releases_stdin() -> None:
    probe = Ends(end=100 * MIB)
    backlog = OutputBacklog(probe)
    thread, released = waits(backlog, 0)
    assert not released.wait(0.2)
    backlog.finish()
    assert released.wait(5)
    thread.join()
    backlog.wait(1 << 40)  # never again


@pytest.mark.parametrize("probe_answer", [None, "raises"])
def test_a_daemon_that_does_not_say_gets_the_old_bounded_rule(
    probe_answer: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No end in the replies (an older daemon), or a probe that fails: stdin waits only while the
    last read was full and it is AHEAD past the output read, LEGACY_WAIT_S at most at a time."""
    monkeypatch.setattr(output_backlog, "LEGACY_WAIT_S", 0.05)

    def probe() -> int | None:
        if probe_answer == "raises":
            raise OSError("gone")
        return None

    backlog = OutputBacklog(probe)
    backlog.wait(10 * AHEAD)  # nothing read, nothing full: goes
    full = b"x" * output_backlog.LEGACY_FULL_READ_BYTES
    backlog.read(full, b"", None, 0)
    thread, released = waits(backlog, 10 * AHEAD)
    assert released.wait(5)  # bounded
    thread.join()
    monkeypatch.setattr(output_backlog, "LEGACY_WAIT_S", 30.0)
    thread, released = waits(backlog, 10 * AHEAD)
    assert not released.wait(0.2)
    backlog.read(b"x", b"", None, 0)  # caught up: a read that was not full
    assert released.wait(5)
    thread.join()
