"""A local client writes a process's stdin straight into its pipe (``OpenStdin``, revision 7).

What must hold: ``exec -a`` on the daemon's host carries stdin byte-exact without a WriteInput of
data (the daemon's debug log says how many bytes each closed stdin got through WriteInput); a
client that cannot open the path falls back to WriteInput unseen; the daemon refuses the path to
callers over tcp and TLS, for a terminal, a closed stdin, and an unknown container or process,
each with its own error kind; and the opened file is the very pipe the reply names.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import signal
import stat
import threading

import pytest
import trio
from support.certs import free_port_run
from support.daemon import DaemonHandle, running_daemon, unique_id
from test_exec import actr, output_of
from test_exec_attach_signals import _attached_sleep
from test_tls import certs, tls_args  # noqa: F401 - certs is a fixture

import containerd_actors.client.direct_input as direct_input
from containerd_actors.client import Client, RequestFailed, TlsFiles
from containerd_actors.protocol import ErrorCode
from ctl import attach_blocking
from ctl.output_backlog import OutputBacklog


def written_by_write_input(daemon: DaemonHandle, cid: str) -> list[int]:
    """Per closed stdin of ``cid``, the bytes the daemon wrote for WriteInputs (its debug log)."""
    pattern = rf"stdin of process \d+ in '{re.escape(cid)}' closed; (\d+) bytes written by WriteInput"
    return [int(n) for n in re.findall(pattern, daemon.log_text())]


async def started(client: Client, bundle) -> str:
    cid = unique_id("ds")
    await client.create_container(cid, str(bundle))
    return cid


async def test_exec_attach_pipes_stdin_straight_into_the_process_byte_exact(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    data = os.urandom((64 << 20) + 4321)

    code, out, err = await actr(daemon, "containers", "exec", "--id", cid, "-a", "--", "cat", stdin=data)

    assert code == 0, err
    assert hashlib.sha256(out).hexdigest() == hashlib.sha256(data).hexdigest()
    assert written_by_write_input(daemon, cid) == [0]  # every byte went by the pipe
    assert "opened for a local client" in daemon.log_text()


async def test_the_reply_names_the_pipe_the_daemon_writes(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    pid = await client.add_process(cid, ["cat"])

    reply = await client.open_stdin(cid, pid)
    fd = os.open(reply.path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        found = os.fstat(fd)
        assert stat.S_ISFIFO(found.st_mode)
        assert (found.st_ino, found.st_dev) == (reply.inode, reply.device)
        os.write(fd, b"through the pipe\n")
    finally:
        os.close(fd)
    await client.write_input(cid, b"", pid, close=True)
    out, err, status = await output_of(client, cid, pid)

    assert (out, status) == (b"through the pipe\n", 0), err


async def test_a_client_that_cannot_open_the_path_writes_with_write_input(
    daemon: DaemonHandle, client: Client, sleep_bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a client of another uid finds it (EACCES): the same bytes arrive, by WriteInput."""

    def refused(_path: str, _flags: int) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(direct_input, "_open_for_writing", refused)
    cid = await started(client, sleep_bundle)
    pid = await client.add_process(cid, ["sha256sum"])
    data = os.urandom((6 << 20) + 7)
    read_end, write_end = os.pipe()
    failures: list[BaseException] = []
    backlog = OutputBacklog()
    forwarder = threading.Thread(
        target=attach_blocking._forward_stdin,
        args=(daemon.address, cid, pid, read_end, failures, backlog),
    )
    forwarder.start()
    try:
        with os.fdopen(write_end, "wb") as pipe:
            await trio.to_thread.run_sync(pipe.write, data)
    finally:
        backlog.finish()
        await trio.to_thread.run_sync(forwarder.join)
        os.close(read_end)
    out, err, status = await output_of(client, cid, pid)

    assert not failures
    assert status == 0, err
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert written_by_write_input(daemon, cid) == [len(data)]


async def test_open_stdin_is_refused_with_a_clear_kind(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    terminal = await client.add_process(cid, ["cat"], terminal=True)
    closed = await client.add_process(cid, ["cat"])
    await client.write_input(cid, b"", closed, close=True)
    cases = [
        (unique_id("none"), 0, ErrorCode.NOT_FOUND),
        (cid, 999_999, ErrorCode.NOT_FOUND),
        (cid, terminal, ErrorCode.INVALID_STATE),
        (cid, closed, ErrorCode.INVALID_STATE),
    ]
    for id, pid, code in cases:
        with pytest.raises(RequestFailed) as refused:
            await client.open_stdin(id, pid)
        assert refused.value.code == code, (id, pid, refused.value)
    # The daemon serves on, and the init's own stdin is still offered.
    assert (await client.open_stdin(cid)).path.startswith("/proc/")


async def test_open_stdin_is_refused_over_plain_tcp_and_served_over_ipc(state_dir, sleep_bundle) -> None:
    port = free_port_run(3)
    plain_tcp = ("--listen", f"tcp://127.0.0.1:{port}", "--insecure-tcp")
    async with running_daemon(state_dir, *plain_tcp) as handle:  # noqa: SIM117 - the client needs handle
        async with (
            Client.connect(handle.address) as local,
            Client.connect(f"tcp://127.0.0.1:{port}") as remote,
        ):
            cid = await started(local, sleep_bundle)
            assert (await local.open_stdin(cid)).path.startswith("/proc/")
            with pytest.raises(RequestFailed) as refused:
                await remote.open_stdin(cid)
            assert refused.value.code == ErrorCode.PERMISSION_DENIED


async def test_open_stdin_is_refused_over_tls(
    state_dir,
    sleep_bundle,
    certs: dict[str, TlsFiles],  # noqa: F811 - the fixture
) -> None:
    port = free_port_run(3)
    async with running_daemon(state_dir, *tls_args(certs["server"], port)) as handle:  # noqa: SIM117
        async with (
            Client.connect(handle.address) as local,
            Client.connect(f"tls+tcp://127.0.0.1:{port}", timeout=20, tls=certs["admin"]) as remote,
        ):
            cid = await started(local, sleep_bundle)
            with pytest.raises(RequestFailed) as refused:
                await remote.open_stdin(cid)
            assert refused.value.code == ErrorCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 130)],
    ids=["SIGTERM", "SIGINT"],
)
async def test_a_signal_ends_an_attach_whose_process_stopped_reading(
    daemon: DaemonHandle, client: Client, sleep_bundle, signum: int, code: int
) -> None:
    """The direct copy blocks in the kernel once the process's pipe is full; a signal still ends
    ``exec -a`` (the copy's thread is left behind, the process left running)."""
    process = await _attached_sleep(daemon, client, sleep_bundle)
    stdin = process.stdin
    assert isinstance(stdin, trio.lowlevel.FdStream)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_fill, stdin)
            with trio.fail_after(30):  # until every pipe is full: nothing more is taken from ours
                while select.select([], [stdin.fileno()], [], 0)[1]:
                    await trio.sleep(0.05)
            process.send_signal(signum)
            with trio.fail_after(30):
                await process.wait()
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == code
    assert "opened for a local client" in daemon.log_text()


async def _fill(stream: trio.abc.SendStream) -> None:
    """Write into ``stream`` until nobody reads it any more."""
    try:
        while True:
            await stream.send_all(bytes(1 << 16))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
