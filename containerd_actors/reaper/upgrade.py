"""`containerd-actors upgrade`: ask the running reaper to re-execute the installed code, and wait.

The request itself is a SIGUSR2 to the reaper (so an operator or a package's post-install hook can
send it without this command); this command adds what a person wants from it: which process it
asked, and an exit status that says whether the new version came up and serves. The reaper's own
word on that is ``<state-dir>/reaper.json`` (``reaper.process.STATUS_FILE``): a new
``image_started`` with ``serving`` true means the new image runs and its API server serves.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from containerd_actors.reaper.process import STATUS_FILE

POLL_INTERVAL_S = 0.05


def _read_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        status = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_upgrade(argv: list[str], default_state_dir: str) -> int:
    parser = argparse.ArgumentParser(
        prog="containerd-actors upgrade",
        description="Re-execute the running daemon with the installed version, keeping every "
        "container, exec'd process and output pipe.",
    )
    parser.add_argument("--state-dir", default=default_state_dir, help="the running daemon's state directory")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the new version to serve"
    )
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir)
    before = _read_status(state_dir)
    if before is None or not isinstance(before.get("pid"), int) or not _alive(before["pid"]):
        print(
            f"containerd-actors upgrade: no running reaper found in {state_dir / STATUS_FILE} "
            "(is the daemon running on this state dir, and not with --no-reaper?)",
            file=sys.stderr,
        )
        return 1
    pid = before["pid"]
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        now = _read_status(state_dir)
        if not _alive(pid):
            print(
                f"containerd-actors upgrade: the reaper (pid {pid}) died; see the daemon's log",
                file=sys.stderr,
            )
            return 1
        if (
            now is not None
            and now.get("pid") == pid
            and now.get("image_started", 0) > before.get("image_started", 0)
            and now.get("serving")
        ):
            print(
                f"upgraded: reaper pid {pid} from {now.get('upgraded_from')} to {now.get('version')}; "
                f"API server pid {before.get('server_pid')} -> {now.get('server_pid')}"
            )
            return 0
        time.sleep(POLL_INTERVAL_S)  # the reaper announces the new image only in its status file
    print(
        f"containerd-actors upgrade: the new version did not serve within {args.timeout:g} s; "
        "see the daemon's log",
        file=sys.stderr,
    )
    return 1
