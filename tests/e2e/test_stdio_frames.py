"""Process output and input as binary frames, end to end: byte-exact both ways, and the guarantees
of the logs kept (a slow reader blocks nobody, a killed one harms nothing, several read alike, a
long poll answers when the bytes arrive)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess

import trio
import trio.testing
from support.daemon import DaemonHandle, unique_id
from test_bad_input import raw_request
from test_exec import ACTR, actr, events_until, output_of

import containerd_actors.protocol as wire
from containerd_actors.client import FRAMED_INPUT_CHUNK_BYTES, BlockingClient, Client
from containerd_actors.protocol import EventType, frames

#: About 20 MiB of text whose every byte the test knows: more than a framed read (4 MiB), than the
#: pipes (1 MiB) and than a log generation's share of a read, and deterministic.
SEQ_COUNT = 2_500_000
SEQ_BYTES = "".join(f"{n}\n" for n in range(1, SEQ_COUNT + 1)).encode()


async def started(client: Client, bundle) -> str:
    cid = unique_id("fr")
    await client.create_container(cid, str(bundle))
    return cid


async def test_the_client_speaks_frames_with_this_daemon(client: Client) -> None:
    assert (await client.ping()).protocol_version >= 3
    assert await client.speaks_frames()


async def test_exec_attach_carries_random_bytes_both_ways_byte_exact(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    data = os.urandom((5 << 20) + 12345)  # several framed WriteInputs and reads, an odd tail

    code, out, err = await actr(daemon, "containers", "exec", "--id", cid, "-a", "--", "cat", stdin=data)

    assert code == 0, err
    assert hashlib.sha256(out).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_framed_input_reaches_stdin_exactly(client: Client, sleep_bundle) -> None:
    cid = await started(client, sleep_bundle)
    data = os.urandom((3 << 20) + 1)
    pid = await client.add_process(cid, ["sha256sum"])

    await client.write_input(cid, data, pid, close=True)
    out, err, status = await output_of(client, cid, pid)

    assert status == 0, err
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()


async def test_ordered_writes_in_flight_on_two_connections_reach_stdin_once_in_order(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    """Revision 6: the second MiB sent before the first, and the first sent twice, on two
    connections; the process reads each byte once, in order, then the EOF."""
    cid = await started(client, sleep_bundle)
    half = FRAMED_INPUT_CHUNK_BYTES  # the most a request carries
    data = os.urandom(2 * half)
    pid = await client.add_process(cid, ["sha256sum"])

    def write() -> list[int]:
        fields = {"id": cid, "pid": pid, "writer": "t-1", "framed": True}
        with BlockingClient.connect(daemon.address) as one, BlockingClient.connect(daemon.address) as two:
            two.send(wire.WriteInput, data=data[half:], offset=half, **fields)  # waits for the gap
            first = one.call(wire.WriteInput, wire.WriteInputReply, data=data[:half], offset=0, **fields)
            again = one.call(wire.WriteInput, wire.WriteInputReply, data=data[:half], offset=0, **fields)
            second = two.receive(wire.WriteInputReply)
            eof = one.call(
                wire.WriteInput, wire.WriteInputReply, data=b"", offset=len(data), close=True, **fields
            )
            return [first.written, again.written, second.written, eof.written]

    written = await trio.to_thread.run_sync(write)
    out, err, status = await output_of(client, cid, pid)

    assert written == [half, half, len(data) - half, 0]
    assert status == 0, err
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()


async def test_json_and_framed_reads_of_one_process_agree(client: Client, sleep_bundle) -> None:
    cid = await started(client, sleep_bundle)
    async with client.subscribe() as events:
        pid = await client.add_process(cid, ["seq", "1", str(SEQ_COUNT)])
        await events_until(events, lambda e: e.type == EventType.EXIT and e.pid == pid)
    framed, _, status = await output_of(client, cid, pid)
    plain, offset = b"", 0
    while True:
        reply = await client.read_output(cid, pid, stdout_offset=offset, max_bytes=1 << 20)
        plain += reply.stdout
        offset = reply.next_stdout_offset
        if reply.exited:
            break
    raw = await client.read_output(cid, pid, max_bytes=4 << 20, binary=True)

    assert status == 0
    assert framed == plain == SEQ_BYTES
    assert raw.stdout == SEQ_BYTES[: 4 << 20] and raw.next_stdout_offset == 4 << 20


async def test_a_slow_framed_reader_never_blocks_the_writer_and_loses_nothing(
    client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    async with client.subscribe() as events:
        pid = await client.add_process(cid, ["seq", "1", str(SEQ_COUNT)])
        # One framed read, then nothing while the process writes the rest and exits.
        first = await client.read_output(cid, pid, wait=10, max_bytes=64 << 10, binary=True)
        exit_event = (await events_until(events, lambda e: e.type == EventType.EXIT and e.pid == pid))[-1]
    rest = b""
    async for chunk in client.follow_output(cid, pid, offsets=(first.next_stdout_offset, 0)):
        rest += chunk.stdout

    assert (exit_event.pid, exit_event.status) == (pid, 0)
    assert 0 < len(first.stdout) <= 64 << 10
    assert first.stdout + rest == SEQ_BYTES


async def test_a_reader_killed_mid_stream_harms_nothing(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    pid = await client.add_process(cid, ["sh", "-c", f"read x; seq 1 {SEQ_COUNT}; read y; exit 7"])
    reader = await trio.lowlevel.open_process(
        [*ACTR, "--address", daemon.address, "containers", "logs", "-f", "-p", str(pid), cid],
        stdout=subprocess.PIPE,
    )
    try:
        await client.write_input(cid, b"go\n", pid)
        with trio.fail_after(30):
            seen = await reader.stdout.receive_some()  # it is reading frames now
    finally:
        reader.send_signal(signal.SIGKILL)
        await reader.wait()
    assert seen and reader.returncode == -signal.SIGKILL
    # The process and the daemon go on: the rest is written, another reader gets all of it.
    await client.write_input(cid, b"done\n", pid, close=True)
    out, err, status = await output_of(client, cid, pid)

    assert (out, err, status) == (SEQ_BYTES, b"", 7)
    assert SEQ_BYTES.startswith(seen)
    await client.ping()


async def test_several_framed_readers_of_one_process_get_the_same_bytes(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    pid = await client.add_process(cid, ["sh", "-c", f"read x; seq 1 {SEQ_COUNT}; echo end >&2; exit 4"])
    results = []

    async def reader() -> None:
        async with Client.connect(daemon.address) as own:
            results.append(await output_of(own, cid, pid))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(reader)
        await client.write_input(cid, b"go\n", pid, close=True)

    assert results == [(SEQ_BYTES, b"end\n", 4)] * 3


async def test_a_long_poll_answers_when_the_bytes_arrive_not_at_its_timeout(
    client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    pid = await client.add_process(cid, ["sh", "-c", "read x; echo here; read y"])
    replies: list[tuple[wire.ReadOutputReply, float]] = []

    async def poll() -> None:
        reply = await client.read_output(cid, pid, wait=25, binary=True)
        replies.append((reply, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        sent = trio.current_time()
        await client.write_input(cid, b"go\n", pid)
    [(reply, answered)] = replies
    await client.write_input(cid, b"\n", pid, close=True)

    assert reply.stdout == b"here\n"
    assert answered - sent < 5  # far from the 25 s the poll could have waited


async def test_a_frame_the_daemon_cannot_take_gets_a_clear_error(daemon: DaemonHandle) -> None:
    header = {"type": "WriteInput", "request_id": "9", "id": "web"}
    wrong_field = frames.pack_frame(header, [("id", b"x")])
    truncated = frames.pack_frame(header, [("data", b"abc")])[:-1]

    refused = await raw_request(daemon.address, wrong_field)
    broken = await raw_request(daemon.address, truncated)

    assert (refused.code, refused.request_id) == (wire.ErrorCode.INVALID_REQUEST, "9")
    assert "not one of its bytes fields" in refused.message
    assert broken.code == wire.ErrorCode.MALFORMED
