"""``exec -a``'s stdin held back by the output it has copied out (``ctl.output_backlog``), end to end.

A real daemon, real runc, the real ``actr``: a ``cat`` whose echo is read by a stdout that stops
for a while must not get its stdin far ahead of what was copied out (the logs would rotate the
echo away), and a process that reads all its input before it writes must still finish.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

import trio
from support.daemon import DaemonHandle
from test_direct_stdin import started
from test_exec import ACTR, actr

from containerd_actors.client import Client
from ctl.output_backlog import AHEAD_BYTES, IN_FLIGHT_BYTES, SEND_BYTES

MIB = 1 << 20
#: What may be ahead of the reader besides the backlog's own bound: the process's stdin pipe,
#: what cat holds, actr's stdout pipe (1 MiB each at most).
PIPES_BYTES = 3 * MIB


async def test_a_stdout_that_stops_holds_stdin_back_and_loses_nothing(
    daemon: DaemonHandle, client: Client, sleep_bundle, tmp_path
) -> None:
    """The reader of actr's stdout stops after 8 MiB: stdin stops within the bound (its file's
    offset, shared with actr, says how far it got) until the reader goes on; byte-exact."""
    cid = await started(client, sleep_bundle)
    size = 160 * MIB + 123
    source = tmp_path / "in"
    digest = hashlib.sha256()
    with source.open("wb") as out:
        for _ in range(size // MIB):
            chunk = os.urandom(MIB)
            digest.update(chunk)
            out.write(chunk)
        tail = os.urandom(size % MIB)
        digest.update(tail)
        out.write(tail)
    stdin_fd = os.open(source, os.O_RDONLY)
    got = hashlib.sha256()
    copied = 0
    farthest_ahead = 0
    try:
        argv = [*ACTR, "--address", daemon.address, "containers", "exec", "--id", cid, "-a", "--", "cat"]
        with trio.fail_after(240):
            process = await trio.lowlevel.open_process(
                argv, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            try:
                assert process.stdout is not None and process.stderr is not None
                while copied < 8 * MIB:
                    data = await process.stdout.receive_some(MIB)
                    got.update(data)
                    copied += len(data)
                # The reader stops: stdin may go until the bound, then waits. Watch it for 3 s
                # or until it is past any bound (as it was before: it ran to the end).
                with trio.move_on_after(3):
                    while farthest_ahead <= 2 * (AHEAD_BYTES + IN_FLIGHT_BYTES):
                        farthest_ahead = max(farthest_ahead, os.lseek(stdin_fd, 0, os.SEEK_CUR) - copied)
                        await trio.sleep(0.05)
                while data := await process.stdout.receive_some(MIB):
                    got.update(data)
                    copied += len(data)
                err = await process.stderr.receive_some(1 << 16)
                await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            assert process.returncode == 0, err
    finally:
        os.close(stdin_fd)

    assert farthest_ahead <= AHEAD_BYTES + IN_FLIGHT_BYTES + SEND_BYTES + PIPES_BYTES
    assert err == b""  # no "bytes were rotated out"
    assert (copied, got.hexdigest()) == (size, digest.hexdigest())


async def test_a_process_that_reads_all_its_input_before_writing_finishes(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    """sort: nothing comes out until its stdin ends, so the output's end stays put while more
    than the bound goes in; stdin must never wait for it."""
    cid = await started(client, sleep_bundle)
    lines = [
        os.urandom(24).hex().encode() + b"\n" for _ in range((AHEAD_BYTES + IN_FLIGHT_BYTES + 8 * MIB) // 49)
    ]
    data = b"".join(lines)
    assert len(data) > AHEAD_BYTES + IN_FLIGHT_BYTES

    code, out, err = await actr(
        daemon, "containers", "exec", "--id", cid, "-a", "--", "sort", stdin=data, timeout=180
    )

    assert code == 0, err
    assert out == b"".join(sorted(lines))


async def test_a_line_typed_echoes_at_once(daemon: DaemonHandle, client: Client, sleep_bundle) -> None:
    """A caught-up local reader's long poll answers a short write at once (it gathers more only
    after a big write of a busy pipe): each line's echo comes back within tens of milliseconds."""
    cid = await started(client, sleep_bundle)
    argv = [*ACTR, "--address", daemon.address, "containers", "exec", "--id", cid, "-a", "--", "cat"]
    delays = []
    with trio.fail_after(120):
        process = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert process.stdin is not None and process.stdout is not None
            for n in range(12):
                line = f"line {n}\n".encode()
                started_at = trio.current_time()
                await process.stdin.send_all(line)
                echoed = b""
                while len(echoed) < len(line):
                    echoed += await process.stdout.receive_some(1 << 16)
                delays.append(trio.current_time() - started_at)
                assert echoed == line
            await process.stdin.aclose()
            assert await process.stdout.receive_some(1) == b""
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    delays.sort()
    # The first lines pay for the attach's start (its probe, its reader's first poll).
    assert delays[len(delays) // 2] < 0.05, delays
