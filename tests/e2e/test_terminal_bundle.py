"""Bundles whose init asks for a terminal (``runc spec``'s default), through a real daemon and runc.

The daemon passes runc a console socket, takes the pty master and drains it into the logs, so
such a bundle starts detached as well as attached; ``start -a`` and ``attach`` give a raw-mode
terminal in tmux (typing, resize, Ctrl-P Ctrl-Q); the pty survives a restart of the API server
because the reaper keeps a copy of the master; ``start -t``/``-T`` override the bundle.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support.bundles import make_bundle, make_terminal_bundle
from support.daemon import DaemonHandle, unique_id
from support.event_waits import exit_status
from support.restarts import server_pid, wait_for_new_server
from support.tmux import Tmux

from containerd_actors.client import Client

PROMPT = "/ #"  # busybox sh as root
ACTR = [sys.executable, "-m", "ctl.main"]
REPO = Path(__file__).resolve().parents[2]


def actr(daemon: DaemonHandle, *args: str) -> subprocess.CompletedProcess[str]:
    """``actr`` as a user runs it, in its own process."""
    return subprocess.run(
        [*ACTR, "--address", daemon.address, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def actr_line(daemon: DaemonHandle, *args: str) -> str:
    return shlex.join([*ACTR, "--address", daemon.address, *args])


@pytest.fixture
def spec_bundle(bundles_dir: Path) -> Path:
    """A fresh `runc spec`-style bundle (terminal true, ``sh``) around the shared busybox rootfs."""
    return make_terminal_bundle(bundles_dir / f"spec-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    session = Tmux(tmp_path)
    try:
        yield session
    finally:
        session.kill()


async def output_until(client: Client, cid: str, marker: bytes, *, after: bytes = b"") -> bytes:
    """The init's output from its first byte until ``marker`` appears after ``after`` (an echoed command)."""
    out = b""
    with trio.fail_after(15):
        async for chunk in client.follow_output(cid):
            out += chunk.stdout
            if marker in out.split(after, 1)[-1] if after else marker in out:
                return out
            assert not chunk.exited, out
    raise AssertionError(f"{marker!r} never came: {out!r}")


async def test_a_runc_spec_bundle_starts_detached_with_a_pty(
    daemon: DaemonHandle, client: Client, spec_bundle: Path
) -> None:
    cid = unique_id("spec")
    pid = await client.create_container(cid, str(spec_bundle))
    [info] = await client.containers()
    assert (info.id, info.pid, info.status) == (cid, pid, "running")
    assert info.processes[0].terminal and info.processes[0].args == ["sh"]

    await client.resize_terminal(cid, 33, 77)
    await client.write_input(cid, b"echo hello-$((6*7)); tty; stty size\r")
    out = await output_until(client, cid, b"33 77\r\n", after=b"stty size")
    assert b"hello-42\r\n" in out and b"/dev/pts/0\r\n" in out

    # The CLI sees the same: the output in logs, a TTY in state, and stats as for any container.
    logs = actr(daemon, "containers", "logs", cid)
    assert logs.returncode == 0 and "hello-42" in logs.stdout
    state = actr(daemon, "containers", "state", cid)
    assert state.returncode == 0
    assert f"{pid}   init   yes" in state.stdout
    stats = await client.stats(cid)
    assert stats.id == cid and stats.timestamp > 0
    assert stats.cgroup.pids is None or stats.cgroup.pids.current >= 1

    async with client.subscribe() as events:
        kill = actr(daemon, "containers", "kill", "-s", "KILL", cid)
        assert kill.returncode == 0, kill.stderr
        assert await exit_status(events, cid, timeout=15) == 137
    assert daemon.runc_ids() == []


async def wait_for_child(pid: int, name: str) -> None:
    """Until the process ``pid`` runs a child called ``name`` (the shell has started the command)."""
    with trio.fail_after(10):
        while True:
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                if any(Path(f"/proc/{child}/comm").read_text().strip() == name for child in children):
                    return
            except FileNotFoundError:
                pass  # a child that exited between the two reads
            await trio.sleep(0.02)  # /proc announces nothing


async def retype_until(tmux: Tmux, keys: str, text: str, timeout: float = 15) -> str:
    """Type ``keys`` until ``text`` shows: a resize reaches the pty through actr and the daemon,
    and nothing on the screen says when it has."""
    with trio.fail_after(timeout):
        while True:
            tmux.keys(keys, "Enter")
            try:
                return await tmux.wait_for(text, timeout=1)
            except AssertionError:
                continue


async def test_start_attached_then_detach_and_attach_again(
    daemon: DaemonHandle, client: Client, spec_bundle: Path, tmux: Tmux
) -> None:
    cid = unique_id("tty")
    start = actr_line(daemon, "containers", "start", "-a", cid, str(spec_bundle))
    tmux.start(f"{start}; echo ACTR-EXIT=$?; sleep 1000", width=100, height=30)
    await tmux.wait_for(PROMPT)
    # Typing works, and the pty has actr's window size from the start.
    tmux.keys("echo typed-$((6*7)); stty size", "Enter")
    screen = await tmux.wait_for("30 100")
    assert "typed-42" in screen
    # Raw mode: Ctrl-C interrupts the shell's sleep inside the container, not actr.
    tmux.keys("sleep 100", "Enter")
    [info] = await client.containers()
    await wait_for_child(info.pid, "sleep")  # a Ctrl-C typed ahead may be flushed with the line
    tmux.keys("C-c")
    await retype_until(tmux, "echo still-$((1+1))", "still-2")
    # SIGWINCH: tmux resizes actr's terminal, actr resizes the pty.
    tmux.run("resize-window", "-t", "main", "-x", "120", "-y", "40")
    await retype_until(tmux, "stty size", "40 120")
    # Ctrl-P Ctrl-Q detaches; the container keeps running.
    tmux.keys("C-p", "C-q")
    await tmux.wait_for("ACTR-EXIT=0")
    [info] = await client.containers()
    assert (info.id, info.status) == (cid, "running")

    attach = actr_line(daemon, "containers", "attach", cid)
    tmux.run("new-window", "-t", "main", f"{attach}; echo ATTACH-EXIT=$?; sleep 1000")
    await retype_until(tmux, "echo again-$((2+2))", "again-4")
    tmux.keys("exit 3", "Enter")
    await tmux.wait_for("ATTACH-EXIT=3")

    # The logs kept the whole session, with nobody attached or not.
    logs = actr(daemon, "containers", "logs", cid)
    assert logs.returncode == 0
    for line in ("typed-42", "40 120", "again-4"):
        assert line in logs.stdout


async def test_start_t_forces_a_terminal_and_start_T_turns_it_off(
    daemon: DaemonHandle, client: Client, bundles_dir: Path
) -> None:
    says_tty = ["sh", "-c", "tty; exec sleep 1000000"]
    pipes = make_bundle(bundles_dir / f"pipes-{uuid.uuid4().hex[:10]}", says_tty)
    terminal = make_terminal_bundle(bundles_dir / f"term-{uuid.uuid4().hex[:10]}", says_tty)
    forced, plain, off = unique_id("forced"), unique_id("plain"), unique_id("off")
    for cid, flags, bundle in ((forced, ["-t"], pipes), (plain, [], pipes), (off, ["-T"], terminal)):
        started = actr(daemon, "containers", "start", *flags, cid, str(bundle))
        assert started.returncode == 0, started.stderr
    assert (await output_until(client, forced, b"\r\n")).startswith(b"/dev/pts/")
    assert await output_until(client, plain, b"\n") == b"not a tty\n"
    assert await output_until(client, off, b"\n") == b"not a tty\n"
    terminals = {info.id: info.processes[0].terminal for info in await client.containers()}
    assert terminals == {forced: True, plain: False, off: False}
    # The override is a copy of the config in the state directory; the user's bundle is untouched.
    assert '"terminal": false' not in (terminal / "config.json").read_text()
    for cid in (forced, plain, off):
        await client.signal(cid, signal.SIGKILL)


async def test_the_pty_survives_a_server_restart(
    daemon: DaemonHandle, client: Client, spec_bundle: Path
) -> None:
    cid = unique_id("keep")
    await client.create_container(cid, str(spec_bundle))
    await client.write_input(cid, b"x=41\r")
    await output_until(client, cid, PROMPT.encode(), after=b"x=41")
    old = server_pid(daemon)
    os.kill(daemon.pid, signal.SIGHUP)  # the reaper restarts the API server on purpose
    await wait_for_new_server(daemon, old, ping=False)
    async with Client.connect(daemon.address, timeout=30) as fresh:
        [info] = await fresh.containers()
        assert info.id == cid and info.processes[0].terminal
        # The same shell (its variable is still set), on the same pty, drained by the new server.
        await fresh.resize_terminal(cid, 21, 61)
        await fresh.write_input(cid, b"echo kept-$((x+1)); stty size\r")
        out = await output_until(fresh, cid, b"21 61\r\n", after=b"stty size")
        assert b"kept-42\r\n" in out
        async with fresh.subscribe() as events:
            await fresh.write_input(cid, b"exit 6\r")
            assert await exit_status(events, cid, timeout=15) == 6
