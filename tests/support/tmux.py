"""A person at a terminal, for the end-to-end tests: tmux gives actr a real terminal and the test
reads the screen. Each ``Tmux`` runs its own tmux server (``-L``) and is killed by that name."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import trio


class Tmux:
    def __init__(self, directory: Path) -> None:
        self.server = f"actr-test-{uuid.uuid4().hex[:8]}"
        self.directory = directory

    def run(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.server, *args], capture_output=True, text=True, check=True
        )
        return result.stdout

    def start(self, command: str, width: int = 100, height: int = 30) -> None:
        self.run("new-session", "-d", "-s", "main", "-x", str(width), "-y", str(height), command)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "main", *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "main")

    async def wait_for(self, text: str, timeout: float = 15) -> str:
        screen = ""
        try:
            with trio.fail_after(timeout):
                while text not in (screen := self.screen()):
                    await trio.sleep(0.05)  # the screen is the state under test; nothing announces a change
        except trio.TooSlowError:
            raise AssertionError(f"{text!r} did not appear on the screen:\n{screen}") from None
        return screen

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.server, "kill-server"], capture_output=True)
        # kill-server leaves the socket file behind.
        socket_dir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (socket_dir / self.server).unlink(missing_ok=True)
