"""A person at a terminal: tmux drives `actr containers exec -a -t ... sh` and the test reads the screen.

tmux gives actr a real terminal, so this covers raw mode (Ctrl-C reaches the shell inside instead
of killing actr), window size at start and on SIGWINCH, the detach keys, the exit status, and the
terminal being restored afterwards. Each test runs its own tmux server (``-L``) and kills it by name.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support.daemon import DaemonHandle, unique_id
from support.tmux import Tmux

from containerd_actors.client import Client

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

PROMPT = "/ #"  # busybox sh as root; capture-pane drops the trailing blank
ACTR = [sys.executable, "-m", "ctl.main"]


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    session = Tmux(tmp_path)
    try:
        yield session
    finally:
        session.kill()


def actr_exec_command(daemon: DaemonHandle, cid: str, directory: Path) -> str:
    """A shell line that records the terminal settings around actr, then its exit status."""
    actr = shlex.join(
        [*ACTR, "--address", daemon.address, "containers", "exec", "--id", cid, "-a", "-t", "--", "sh"]
    )
    before, after = directory / "stty.before", directory / "stty.after"
    return f"stty -g > {before}; {actr}; echo ACTR-EXIT=$?; stty -g > {after}; sleep 1000"


async def open_shell(
    daemon: DaemonHandle, client: Client, bundle: Path, tmux: Tmux, prefix: str, **size: int
) -> str:
    """A container from ``bundle`` with ``actr exec -a -t sh`` into it in tmux, at its prompt."""
    cid = unique_id(prefix)
    await client.create_container(cid, str(bundle))
    tmux.start(actr_exec_command(daemon, cid, tmux.directory), **size)
    await tmux.wait_for(PROMPT)
    return cid


async def assert_terminal_restored(directory: Path) -> None:
    """actr has exited (the shell line recorded stty after it) and left the settings it found."""
    with trio.fail_after(10):
        while not (directory / "stty.after").exists():
            await trio.sleep(0.05)
    assert (directory / "stty.before").read_text() == (directory / "stty.after").read_text()


async def test_interactive_shell_in_a_pty(
    daemon: DaemonHandle, client: Client, sleep_bundle, tmux: Tmux
) -> None:
    await open_shell(daemon, client, sleep_bundle, tmux, "tty", width=100, height=30)
    tmux.keys("echo $((6*7)); tty; stty size", "Enter")
    screen = await tmux.wait_for("30 100")
    assert "42" in screen and "/dev/pts/" in screen
    # Raw mode: Ctrl-C interrupts the shell's sleep inside the container, not actr.
    tmux.keys("sleep 100", "Enter")
    await trio.sleep(0.2)
    tmux.keys("C-c")
    tmux.keys("echo still-$((1+1))", "Enter")
    await tmux.wait_for("still-2")
    # SIGWINCH: tmux resizes actr's terminal, actr resizes the pty.
    tmux.run("resize-window", "-t", "main", "-x", "120", "-y", "40")
    await trio.sleep(0.3)
    tmux.keys("stty size", "Enter")
    await tmux.wait_for("40 120")
    tmux.keys("exit 5", "Enter")
    await tmux.wait_for("ACTR-EXIT=5")
    await assert_terminal_restored(tmux.directory)


async def test_detach_keys_leave_the_process_running(
    daemon: DaemonHandle, client: Client, sleep_bundle, tmux: Tmux
) -> None:
    cid = await open_shell(daemon, client, sleep_bundle, tmux, "detach")
    tmux.keys("echo before-detach", "Enter")
    await tmux.wait_for("before-detach")
    tmux.keys("C-p", "C-q")
    await tmux.wait_for("ACTR-EXIT=0")
    [info] = await client.containers()
    [_, shell] = info.processes
    assert shell.args == ["sh"] and shell.terminal
    # The shell still runs and still answers, through the API this time.
    await client.write_input(cid, b"echo after-detach\r", shell.pid)
    with trio.fail_after(10):
        out = b""
        async for chunk in client.follow_output(cid, shell.pid):
            out += chunk.stdout
            if b"after-detach\r\n" in out.split(b"echo after-detach", 1)[-1]:
                break
    # And a terminal attaches to it again.
    attach = shlex.join(
        [*ACTR, "--address", daemon.address, "containers", "attach", "-p", str(shell.pid), cid]
    )
    tmux.run("new-window", "-t", "main", f"{attach}; echo ATTACH-EXIT=$?; sleep 1000")
    tmux.keys("echo again-$((2+2))", "Enter")
    await tmux.wait_for("again-4")
    tmux.keys("exit 4", "Enter")
    await tmux.wait_for("ATTACH-EXIT=4")


async def test_terminal_is_restored_when_the_daemon_goes_away(
    daemon: DaemonHandle, client: Client, sleep_bundle, tmux: Tmux
) -> None:
    await open_shell(daemon, client, sleep_bundle, tmux, "gone")
    daemon.process.kill()
    screen = await tmux.wait_for("ACTR-EXIT=1")
    assert "cannot reach containerd-actors" in screen
    await assert_terminal_restored(tmux.directory)
