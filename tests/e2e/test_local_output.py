"""The local fast path for output (``ReadOutput.spans``, revision 7), end to end: a client on the
daemon's host copies the bytes from the log files, byte-exact across rotations, with the logs'
guarantees kept (a reader that falls behind is told what was rotated out, two read alike, a file
it may not read or a TLS connection means frames, a bad request harms nothing)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import trio
from support.certs import make_test_certs
from support.daemon import DaemonHandle, unique_id
from test_bad_input import raw_request
from test_exec import ACTR, actr, output_of
from test_tls import tls_daemon

import containerd_actors.protocol as wire
from containerd_actors.client import BlockingClient, Client, TlsFiles
from containerd_actors.client.local_output import Reader, follow_output
from containerd_actors.client.log_files import FileBytes, LogFiles
from containerd_actors.daemon.container.logs import LOG_ROTATE_BYTES

#: The line the test processes repeat: 17 bytes, so a chunk skipped or read twice (its size a
#: power of two, or a log generation) shows in the content, not only in the length.
LINE = b"0123456789abcdef\n"
#: More than two log generations: the first is deleted while the process still writes.
BIG = 2 * LOG_ROTATE_BYTES + (9 << 20) + 5


def expected(size: int, start: int = 0) -> bytes:
    """The bytes ``yes`` writes from ``start`` to ``size``."""
    whole = LINE * (size // len(LINE) + 2)
    return whole[start:size]


def writer_argv(size: int, *, wait_first: int = -1) -> list[str]:
    """A process that writes ``size`` bytes of ``LINE``s to stdout; with ``wait_first``, that many
    first, then a line of stdin, then the rest."""
    line = LINE.decode().strip()
    if wait_first < 0:
        return ["sh", "-c", f"yes {line} | head -c {size}"]
    return [
        "sh",
        "-c",
        f"yes {line} | head -c {wait_first}; read x; "
        f"yes {line} | head -c {size} | tail -c {size - wait_first}",
    ]


def collect(
    client: BlockingClient, cid: str, pid: int, reader: Reader, **options
) -> tuple[bytes, int, int | None]:
    """Follow with the local reader; what a writer would write, the bytes skipped, the status."""
    out, skipped, status = bytearray(), 0, None
    for chunk in follow_output(client, cid, pid, reader=reader, **options):
        for part in (chunk.stdout, chunk.stderr):
            if isinstance(part, FileBytes):
                out += os.pread(part.file.fd, part.length, part.position)
            else:
                out += part
        skipped += chunk.skipped
        status = chunk.status if chunk.exited else status
    return bytes(out), skipped, status


async def started(client: Client, bundle) -> str:
    cid = unique_id("lo")
    await client.create_container(cid, str(bundle))
    return cid


async def test_a_local_reader_copies_every_byte_from_the_files_across_rotations(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    pid = await client.add_process(cid, writer_argv(BIG))
    reader = Reader()

    def read() -> tuple[bytes, int, int | None]:
        with BlockingClient.connect(daemon.address) as blocking:
            return collect(blocking, cid, pid, reader)

    with trio.fail_after(120):
        out, skipped, status = await trio.to_thread.run_sync(read)

    assert (len(out), skipped, status) == (BIG, 0, 0)
    assert hashlib.sha256(out).digest() == hashlib.sha256(expected(BIG)).digest()
    assert (reader.from_files, reader.from_replies, reader.spans) == (BIG, 0, True)  # no byte in a reply


async def test_exec_attach_and_logs_are_byte_exact_through_the_files(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    data = os.urandom(LOG_ROTATE_BYTES + (3 << 20) + 7)  # a rotation on the way

    code, out, err = await actr(daemon, "containers", "exec", "--id", cid, "-a", "--", "cat", stdin=data)
    assert code == 0, err
    assert hashlib.sha256(out).digest() == hashlib.sha256(data).digest()

    pid = await client.add_process(cid, writer_argv(5 << 20))
    await output_of(client, cid, pid)
    code, out, err = await actr(daemon, "containers", "logs", "-p", str(pid), cid)
    assert (code, err) == (0, b"")
    assert out == expected(5 << 20)
    code, out, err = await actr(daemon, "containers", "logs", "-f", "--tail", "2", "-p", str(pid), cid)
    assert (code, err) == (0, b"")
    assert out == expected(5 << 20)[-len(LINE) - (5 << 20) % len(LINE) :]  # a whole line and a cut one


async def test_bytes_rotated_out_between_the_reply_and_the_copy_are_reported_not_read(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    """The reply names the first generation; before the reader opens it, the process writes two
    more (the file is deleted, its inode number likely given to the new log): the reader must
    not read another file's bytes, but read again and be told what was skipped."""
    first = 6 << 20
    cid = await started(client, sleep_bundle)
    pid = await client.add_process(cid, writer_argv(BIG, wait_first=first))

    class LateFiles(LogFiles):
        late = True

        def bytes_of(self, span: wire.LogFileSpan, length: int) -> FileBytes | None:
            if self.late:
                self.late = False
                with BlockingClient.connect(daemon.address) as other:
                    other.write_input(cid, b"go\n", pid)
                    while not other.read_output(cid, pid, stdout_offset=1 << 40, wait=10).exited:
                        pass
            return super().bytes_of(span, length)

    reader = Reader(LateFiles())

    def read() -> tuple[bytes, int, int | None]:
        with BlockingClient.connect(daemon.address) as blocking:
            # Wait for the first part, so that the first read names the first generation.
            while blocking.read_output(cid, pid, stdout_offset=first - 1, wait=10).next_stdout_offset < first:
                pass
            return collect(blocking, cid, pid, reader)

    with trio.fail_after(120):
        out, skipped, status = await trio.to_thread.run_sync(read)

    assert status == 0
    assert skipped > 0 and skipped + len(out) == BIG
    assert out == expected(BIG, skipped)
    assert reader.from_replies > 0  # the read after the miss came as bytes, with the skip


async def test_a_slow_reader_is_told_what_was_rotated_out(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    pid = await client.add_process(cid, writer_argv(BIG))
    await output_of(client, cid, pid)  # the process is done before the reader starts
    kept = BIG - (await client.read_output(cid, pid)).stdout_offset
    code, out, err = await actr(daemon, "containers", "logs", "-p", str(pid), cid)
    assert code == 0
    assert (
        err == f"actr: {BIG - kept} bytes were rotated out of the logs before they could be read\n".encode()
    )
    assert out == expected(BIG, BIG - kept)


async def test_two_local_readers_at_once_get_the_same_bytes(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    pid = await client.add_process(cid, writer_argv(40 << 20))
    results: list[bytes] = []

    def read() -> None:
        with BlockingClient.connect(daemon.address) as blocking:
            results.append(collect(blocking, cid, pid, Reader())[0])

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, read)
            nursery.start_soon(trio.to_thread.run_sync, read)

    assert results == [expected(40 << 20)] * 2


async def test_a_reader_killed_mid_copy_harms_nothing(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    pid = await client.add_process(cid, writer_argv(BIG, wait_first=1 << 20))
    reader = await trio.lowlevel.open_process(
        [*ACTR, "--address", daemon.address, "containers", "logs", "-f", "-p", str(pid), cid],
        stdout=subprocess.PIPE,
    )
    try:
        with trio.fail_after(30):
            seen = await reader.stdout.receive_some()
    finally:
        reader.send_signal(signal.SIGKILL)
        await reader.wait()
    await client.write_input(cid, b"go\n", pid)
    with trio.fail_after(60):  # the process goes on to its end
        while not (await client.read_output(cid, pid, stdout_offset=1 << 40, wait=10)).exited:
            pass
    out, _, status = await output_of(client, cid, pid)  # another reader: what the logs kept

    assert seen and expected(BIG).startswith(seen)
    assert status == 0 and len(out) >= LOG_ROTATE_BYTES  # what the logs kept while it read
    assert out == expected(BIG, BIG - len(out))
    assert (await client.state(cid)).containers[0].status == "running"
    await client.ping()


async def test_files_this_reader_may_not_open_mean_frames(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    pid = await client.add_process(cid, writer_argv(9 << 20))

    class Refused(LogFiles):
        def bytes_of(self, span: wire.LogFileSpan, length: int) -> FileBytes | None:
            raise PermissionError(13, "Permission denied", span.path)

    reader = Reader(Refused())

    def read() -> tuple[bytes, int, int | None]:
        with BlockingClient.connect(daemon.address) as blocking:
            return collect(blocking, cid, pid, reader)

    with trio.fail_after(60):
        out, skipped, status = await trio.to_thread.run_sync(read)

    assert (out == expected(9 << 20), skipped, status) == (True, 0, 0)
    assert (reader.from_files, reader.from_replies, reader.spans) == (0, 9 << 20, False)


async def test_a_tls_client_gets_the_bytes_not_the_files(
    state_dir: Path, sleep_bundle, tmp_path: Path
) -> None:
    certs: dict[str, TlsFiles] = make_test_certs(tmp_path / "certs")
    async with tls_daemon(state_dir, certs["server"]) as (handle, port):
        remote = f"tls+tcp://127.0.0.1:{port}"
        async with Client.connect(handle.address) as local:
            cid = await started(local, sleep_bundle)
            pid = await local.add_process(cid, writer_argv(1 << 20))
            await output_of(local, cid, pid)
            asked = {"id": cid, "pid": pid, "spans": True, "max_bytes": 4 << 20}
            here = await local.call(wire.ReadOutput, wire.ReadOutputReply, **asked)
        async with Client.connect(remote, timeout=20, tls=certs["admin"]) as client:
            there = await client.call(wire.ReadOutput, wire.ReadOutputReply, **asked, binary=True)

        assert (here.stdout, here.stdout_file is not None) == (b"", True)
        assert (bytes(there.stdout), there.stdout_file) == (expected(1 << 20), None)

        def read_remote() -> Reader:
            reader = Reader()
            with BlockingClient.connect(remote, tls=certs["admin"]) as blocking:
                assert collect(blocking, cid, pid, reader)[0] == expected(1 << 20)
            return reader

        reader = await trio.to_thread.run_sync(read_remote)
        assert (reader.from_files, reader.spans) == (0, False)


@pytest.mark.parametrize(
    "fields",
    [
        {"spans": "yes"},
        {"spans": None},
        {"spans": True, "id": "no-such-ctr"},
        {"spans": True, "pid": 99999999},
    ],
)
async def test_a_bad_spans_request_is_answered_and_harms_nothing(
    daemon: DaemonHandle, client: Client, sleep_bundle, fields: dict
) -> None:
    cid = await started(client, sleep_bundle)
    request = {"type": "ReadOutput", "request_id": "bad-1", "id": cid, **fields}

    error = await raw_request(daemon.address, json.dumps(request).encode())

    assert error.code in (wire.ErrorCode.INVALID_REQUEST, wire.ErrorCode.NOT_FOUND)
    # Spans with a tail of an init that wrote nothing: nothing to name, nothing to send.
    reply = await client.call(wire.ReadOutput, wire.ReadOutputReply, id=cid, spans=True, tail=3, wait=0.1)
    assert (reply.stdout, reply.stdout_file, reply.stderr_file) == (b"", None, None)
    assert (await client.state(cid)).containers[0].status == "running"
