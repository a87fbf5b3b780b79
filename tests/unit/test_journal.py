"""The event journal on its own: segments, retention, restarts, torn and corrupt files, reads."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.full_disk import FullDisk

from containerd_actors.daemon.events.journal import (
    QUARANTINE_SUFFIX,
    EventJournal,
    default_segment_events,
    segment_name,
)
from containerd_actors.daemon.state.space import PROBE_INTERVAL_S, StateDirSpace
from containerd_actors.protocol import Event, EventType, decode_event_payload, encode_event_payload

T0 = 1_700_000_000.0
BIG = 1 << 30


def event(seq: int, timestamp: float | None = None) -> Event:
    kind = EventType.START_CONTAINER if seq % 2 else EventType.EXIT
    return Event(seq, T0 + seq if timestamp is None else timestamp, kind, f"c{seq}", 1000 + seq, None)


def append(journal: EventJournal, count: int) -> list[Event]:
    events = [event(journal.last_seq + 1 + n) for n in range(count)]
    for e in events:
        journal.append(e, encode_event_payload(e))
    return events


def write_and_close(directory: Path, *, segment_events: int, count: int) -> list[Event]:
    """A journal of ``count`` events left on disk by a daemon that has stopped."""
    journal = EventJournal(directory, segment_events=segment_events)
    written = append(journal, count)
    journal.close()
    return written


def read_all(journal: EventJournal, from_seq: int = 0, limit: int = 7) -> list[Event]:
    """Page through the journal as a client would, checking that every page makes progress."""
    events: list[Event] = []
    while True:
        page = journal.read(from_seq, limit)
        assert len(page.events) <= limit
        assert page.next_seq > from_seq or from_seq > page.last_seq
        events += page.events
        if page.next_seq > page.last_seq:
            return events
        from_seq = page.next_seq


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


def test_empty_journal(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "events")
    assert (journal.last_seq, journal.first_available_seq) == (0, 1)
    page = journal.read(0, 10)
    assert (page.events, page.next_seq, page.last_seq, page.first_available_seq) == ([], 1, 0, 1)
    assert os.stat(tmp_path / "events").st_mode & 0o777 == 0o700


def test_segments_hold_one_json_line_per_event_in_seq_order(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path, retention=100, segment_events=4)
    written = append(journal, 10)
    assert [p.name for p in journal.segment_paths()] == [segment_name(1), segment_name(5), segment_name(9)]
    assert segment_name(5) == "00000000000000000005.jsonl"
    lines = (tmp_path / segment_name(5)).read_bytes().splitlines()
    assert lines == [encode_event_payload(e) for e in written[4:8]]
    assert read_all(journal) == written


@pytest.mark.parametrize("fresh", [False, True], ids=["from-memory", "from-disk"])
def test_pages_start_at_from_seq_and_say_where_to_continue(tmp_path: Path, fresh: bool) -> None:
    journal = EventJournal(tmp_path, retention=100, segment_events=4)
    written = append(journal, 10)
    if fresh:  # a new journal object has nothing in memory: every read goes to the files
        journal.close()
        journal = EventJournal(tmp_path, retention=100, segment_events=4)
    page = journal.read(3, 4)
    assert (seqs(page.events), page.next_seq, page.last_seq, page.first_available_seq) == (
        [3, 4, 5, 6],
        7,
        10,
        1,
    )
    page = journal.read(7, 1000)
    assert page.events == written[6:]
    assert page.next_seq == 11
    assert journal.read(11, 5).events == []
    assert journal.read(11, 5).next_seq == 11
    assert journal.read(50, 5).next_seq == 50  # a seq from the future waits there
    assert read_all(journal, limit=3) == written


def test_retention_deletes_whole_old_segments(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path, retention=10, segment_events=3)
    written = append(journal, 25)
    kept = read_all(journal)
    assert kept == written[-len(kept) :]
    assert 10 - 3 < len(kept) <= 10
    page = journal.read(1, 100)
    assert page.first_available_seq == kept[0].seq
    assert page.events[0].seq == page.first_available_seq  # the gap 1..first-1 says: lost
    assert len(list(tmp_path.glob("*.jsonl"))) == len(journal.segment_paths()) <= 4


def test_default_segment_size_follows_retention() -> None:
    assert default_segment_events(1_000_000) == 10_000
    assert default_segment_events(100) == 25
    assert default_segment_events(1) == 1


def test_seq_continues_after_a_restart(tmp_path: Path) -> None:
    first = EventJournal(tmp_path, segment_events=4)
    before = append(first, 6)
    first.close()
    second = EventJournal(tmp_path, segment_events=4)
    assert second.last_seq == 6
    after = append(second, 3)
    assert seqs(after) == [7, 8, 9]
    assert read_all(second) == before + after
    second.close()
    third = EventJournal(tmp_path, segment_events=4)
    assert third.last_seq == 9
    assert read_all(third) == before + after


def test_a_torn_last_line_is_cut_off_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    written = write_and_close(tmp_path, segment_events=100, count=3)
    path = tmp_path / segment_name(1)
    with open(path, "ab") as file:
        file.write(encode_event_payload(event(4))[:20])  # the daemon died mid-write
    with caplog.at_level(logging.WARNING):
        reopened = EventJournal(tmp_path)
    assert reopened.last_seq == 3
    assert "torn last line" in caplog.text
    assert path.read_bytes().endswith(b"}\n")
    assert read_all(reopened) == written
    assert seqs(append(reopened, 1)) == [4]


def test_an_empty_newest_segment_is_removed(tmp_path: Path) -> None:
    written = write_and_close(tmp_path, segment_events=2, count=4)
    (tmp_path / segment_name(5)).touch()  # created, then the daemon died before writing
    reopened = EventJournal(tmp_path, segment_events=2)
    assert reopened.last_seq == 4
    assert seqs(append(reopened, 1)) == [5]
    assert read_all(reopened) == [*written, event(5)]


def test_a_corrupt_newest_segment_is_quarantined_and_seq_never_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_and_close(tmp_path, segment_events=5, count=8)
    path = tmp_path / segment_name(6)
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join([lines[0], b"garbage", lines[2]]) + b"\n")
    with caplog.at_level(logging.ERROR):
        reopened = EventJournal(tmp_path, segment_events=5)
    assert f"{path} is corrupt (line 2:" in caplog.text
    assert "events 6..8 are lost" in caplog.text
    assert (tmp_path / (segment_name(6) + QUARANTINE_SUFFIX)).exists()
    assert not path.exists()
    assert reopened.last_seq == 8
    assert seqs(append(reopened, 2)) == [9, 10]
    page = reopened.read(1, 100)
    assert seqs(page.events) == [1, 2, 3, 4, 5, 9, 10]  # 6..8 visibly missing
    assert reopened.read(6, 100).events[0].seq == 9


def test_a_corrupt_older_segment_is_quarantined_when_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_and_close(tmp_path, segment_events=3, count=9)
    middle = tmp_path / segment_name(4)
    middle.write_bytes(middle.read_bytes().replace(b'"seq":5', b'"seq":55'))
    reopened = EventJournal(tmp_path, segment_events=3)
    with caplog.at_level(logging.ERROR):
        events = read_all(reopened, limit=100)
    assert seqs(events) == [1, 2, 3, 7, 8, 9]
    assert "line 2 holds seq 55, expected 5" in caplog.text
    assert "events 4..6 are lost" in caplog.text
    assert (tmp_path / (segment_name(4) + QUARANTINE_SUFFIX)).exists()
    assert seqs(read_all(reopened)) == [1, 2, 3, 7, 8, 9]  # once is enough: no second report


def disk_lines(directory: Path) -> list[int]:
    """The seq of every line in the segment files, in file-name order."""
    found = []
    for path in sorted(directory.glob("*.jsonl")):
        found += [decode_event_payload(line).seq for line in path.read_bytes().splitlines()]
    return found


def journal_on_disk(directory: Path, **options: int) -> tuple[FullDisk, StateDirSpace, EventJournal]:
    """A journal in ``directory`` that writes through a stand-in disk with room, which a test fills."""
    disk = FullDisk(free=BIG)
    space = disk.space(directory)
    return disk, space, EventJournal(directory, segment_events=100, space=space, write=disk.write, **options)


def test_events_that_cannot_be_written_wait_in_memory_and_are_written_in_order_with_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk, space, journal = journal_on_disk(tmp_path)
    append(journal, 2)
    disk.free = 0
    with caplog.at_level(logging.WARNING):
        append(journal, 50)
        assert space.full and journal.waiting == 50
        assert disk.failed_writes == 1  # while full, the journal does not even try
        assert seqs(read_all(journal)) == list(range(1, 53))  # readable from memory at once
        assert disk_lines(tmp_path) == [1, 2]
        disk.free = BIG
        disk.now += PROBE_INTERVAL_S
        assert journal.flush()  # what the events actor does when told of room
    assert journal.waiting == 0
    assert disk_lines(tmp_path) == list(range(1, 53))  # the same segment, no gap
    assert len(journal.segment_paths()) == 1
    assert space.held_events == 50
    messages = [record.getMessage() for record in caplog.records]
    assert sum(" is full " in m for m in messages) == 1
    assert sum("has room again:" in m and "50 events waited" in m for m in messages) == 1
    assert len(messages) == 2  # not one line per event
    journal.close()
    reopened = EventJournal(tmp_path)
    assert seqs(read_all(reopened)) == list(range(1, 53))


def test_waiting_events_beyond_the_tail_stay_readable_until_written(tmp_path: Path) -> None:
    """The tail is small; the events waiting for room are readable however many wait."""
    disk, _, journal = journal_on_disk(tmp_path, tail_events=4)
    append(journal, 2)
    disk.free = 0
    append(journal, 30)
    assert journal.waiting == 30
    assert seqs(read_all(journal)) == list(range(1, 33))
    assert seqs(journal.read(10, 3).events) == [10, 11, 12]  # a waiting event older than the tail
    assert seqs(journal.read(0, 3, since=T0 + 9.5).events) == [10, 11, 12]
    disk.free = BIG
    disk.now += PROBE_INTERVAL_S
    assert journal.flush()
    assert seqs(read_all(journal)) == list(range(1, 33))  # now from disk, and the tail's last 4


def test_the_tail_keeps_only_the_newest_events(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path, segment_events=100, tail_events=4)
    append(journal, 10)
    assert [e.seq for e in journal._tail] == [7, 8, 9, 10]  # its bound is what the soak relies on
    assert seqs(read_all(journal)) == list(range(1, 11))


def test_a_short_write_is_cut_back_and_the_event_written_whole_later(tmp_path: Path) -> None:
    disk, _, journal = journal_on_disk(tmp_path)
    append(journal, 1)
    disk.free = 5  # the next line is cut after 5 bytes
    append(journal, 1)
    assert (tmp_path / segment_name(1)).read_bytes().count(b"\n") == 1
    assert (tmp_path / segment_name(1)).read_bytes().endswith(b"\n")  # no torn line
    disk.free = BIG
    disk.now += PROBE_INTERVAL_S
    append(journal, 1)  # an event while there is room writes the waiting ones first
    assert disk_lines(tmp_path) == [1, 2, 3]


def test_seqs_of_events_waiting_when_the_daemon_stops_are_not_reused_after_a_restart(
    tmp_path: Path,
) -> None:
    disk, _, journal = journal_on_disk(tmp_path)
    append(journal, 2)
    disk.free = 0
    append(journal, 2)
    journal.close()  # the daemon stops while the state dir is still full
    for _restart in range(2):  # a restart that journals nothing keeps the reservation
        reopened = EventJournal(tmp_path, space=disk.space(tmp_path))
        assert reopened.last_seq == 4
        assert seqs(read_all(reopened)) == [1, 2]
        reopened.close()
    disk.free = BIG
    reopened = EventJournal(tmp_path)
    assert seqs(append(reopened, 1)) == [5]
    assert seqs(read_all(reopened)) == [1, 2, 5]


def test_beyond_the_bound_the_oldest_waiting_events_are_given_up_on_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk, _, journal = journal_on_disk(tmp_path, held_events=10)
    append(journal, 3)
    disk.free = 0
    with caplog.at_level(logging.ERROR):
        append(journal, 25)  # 4..28: only the newest 10 wait
    assert journal.waiting == 10 and journal.given_up == 15
    assert sum("given up on disk" in r.getMessage() for r in caplog.records) == 1
    assert seqs(read_all(journal)) == list(range(1, 29))  # the tail still has them all
    disk.free = BIG
    disk.now += PROBE_INTERVAL_S
    assert journal.flush()
    assert disk_lines(tmp_path) == [1, 2, 3, *range(19, 29)]
    journal.close()
    reopened = EventJournal(tmp_path)
    assert seqs(read_all(reopened)) == [1, 2, 3, *range(19, 29)]  # the gap is skipped over
    assert reopened.last_seq == 28


def test_append_refuses_a_seq_out_of_order(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path)
    with pytest.raises(ValueError, match="does not follow"):
        journal.append(event(2), encode_event_payload(event(2)))


@pytest.mark.parametrize("fresh", [False, True], ids=["from-memory", "from-disk"])
def test_since_starts_at_the_first_event_that_new(tmp_path: Path, fresh: bool) -> None:
    journal = EventJournal(tmp_path, segment_events=4, tail_events=5)
    append(journal, 20)  # event n has timestamp T0 + n
    if fresh:
        journal.close()
        journal = EventJournal(tmp_path, segment_events=4)
    for since, first in [
        (T0 - 100, 1),
        (T0 + 1, 1),
        (T0 + 2.5, 3),
        (T0 + 9, 9),
        (T0 + 17.5, 18),
        (T0 + 20, 20),
    ]:
        page = journal.read(0, 3, since=since)
        assert seqs(page.events) == list(range(first, min(first + 3, 21))), since
        assert page.next_seq == min(first + 3, 21)
    page = journal.read(0, 3, since=T0 + 21)
    assert (page.events, page.next_seq) == ([], 21)
    assert seqs(journal.read(12, 2, since=T0 + 5).events) == [12, 13]  # from_seq wins when later


@settings(max_examples=40, deadline=None)
@given(
    retention=st.integers(1, 40),
    segment_events=st.integers(1, 10),
    batches=st.lists(st.integers(0, 15), min_size=1, max_size=5),
    limit=st.integers(1, 12),
)
def test_any_history_reads_back_as_the_newest_events_without_gaps(
    tmp_path_factory: pytest.TempPathFactory,
    retention: int,
    segment_events: int,
    batches: list[int],
    limit: int,
) -> None:
    """Whatever the restarts, the readable events are a gap-free suffix of all events, at most retention."""
    directory = tmp_path_factory.mktemp("journal")
    written: list[Event] = []
    for batch in batches:  # each batch is one daemon lifetime
        journal = EventJournal(directory, retention=retention, segment_events=segment_events)
        assert journal.last_seq == len(written)
        written += append(journal, batch)
        journal.close()
    journal = EventJournal(directory, retention=retention, segment_events=segment_events)
    kept = read_all(journal, limit=limit)
    assert kept == written[len(written) - len(kept) :]
    assert len(kept) <= retention
    if written:
        assert len(kept) >= 1
        assert journal.first_available_seq == kept[0].seq


def test_the_journal_keeps_its_id_across_reopening_and_gets_a_new_one_when_wiped(tmp_path: Path) -> None:
    directory = tmp_path / "events"
    first = EventJournal(directory)
    first.close()
    again = EventJournal(directory)
    again.close()
    assert first.journal_id == again.journal_id
    assert len(first.journal_id) == 32
    shutil.rmtree(directory)
    wiped = EventJournal(directory)
    wiped.close()
    assert wiped.journal_id != first.journal_id
    (directory / "journal.json").write_text("not json")
    garbled = EventJournal(directory)
    garbled.close()
    assert garbled.journal_id not in (first.journal_id, wiped.journal_id)
