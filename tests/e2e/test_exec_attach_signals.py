"""``exec -a`` without a terminal runs without trio (``ctl.attach_blocking``): what it must keep.

A SIGTERM or SIGHUP to ``actr`` ends the attach with 128+N and leaves the process running; Ctrl-C
ends it with 130; a stdin left non-blocking is still forwarded whole. The output and stdin of
such an attach are otherwise covered by test_exec.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import trio
from support.daemon import DaemonHandle, unique_id

from containerd_actors.client import Client

ACTR = [sys.executable, "-m", "ctl.main"]


def _default_sigint() -> None:
    """actr as a terminal's shell starts it, with Ctrl-C's default action: a pytest started in
    the background by a script inherits SIGINT ignored, actr then keeps ignoring it (as Python
    does with an ignored SIGINT), and the SIGINT case waited out its 30 s."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def _attached_sleep(daemon: DaemonHandle, client: Client, bundle) -> trio.Process:
    """``exec -a -- sh -c 'echo ready; sleep'``, once it has printed ready."""
    cid = unique_id("sig")
    await client.create_container(cid, str(bundle))
    process = await trio.lowlevel.open_process(
        [*ACTR, "--address", daemon.address, "containers", "exec", "--id", cid, "-a", "--",
         "sh", "-c", "echo ready; exec sleep 1000"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
    )  # fmt: skip
    assert process.stdout is not None
    with trio.fail_after(30):
        seen = b""
        while b"ready" not in seen:
            seen += await process.stdout.receive_some()
    return process


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGHUP, 128 + signal.SIGHUP), (signal.SIGINT, 130)],
    ids=["SIGTERM", "SIGHUP", "SIGINT"],
)
async def test_a_signal_ends_the_attach_and_leaves_the_process(
    daemon: DaemonHandle, client: Client, sleep_bundle, signum: int, code: int
) -> None:
    process = await _attached_sleep(daemon, client, sleep_bundle)
    try:
        process.send_signal(signum)
        with trio.fail_after(30):
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == code
    [info] = await client.containers()
    assert [p.args for p in info.processes][1:] == [["sh", "-c", "echo ready; exec sleep 1000"]]


async def test_a_non_blocking_stdin_is_forwarded_whole(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    """A pipe left non-blocking by whoever shares it: reads that find nothing yet wait, not fail."""
    cid = unique_id("nb")
    await client.create_container(cid, str(sleep_bundle))
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        process = await trio.lowlevel.open_process(
            [*ACTR, "--address", daemon.address, "containers", "exec", "--id", cid, "-a", "--", "cat"],
            stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(read_end)
    try:
        with trio.fail_after(30):  # cat runs: actr's reader is at (or about to reach) the empty pipe
            while len((await client.containers())[0].processes) < 2:
                await trio.sleep(0.01)
        os.write(write_end, b"late\n")
        os.close(write_end)
        write_end = -1
        with trio.fail_after(30):
            assert process.stdout is not None
            out = b""
            while chunk := await process.stdout.receive_some():
                out += chunk
            await process.wait()
    finally:
        if write_end >= 0:
            os.close(write_end)
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (process.returncode, out) == (0, b"late\n")
