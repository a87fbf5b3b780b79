"""The shipped systemd unit says what the daemon relies on, and systemd itself accepts it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "contrib" / "systemd" / "containerd-actors.service"


def settings() -> dict[str, str]:
    found = {}
    for line in UNIT.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";")):
            found[key.strip()] = value.strip()
    return found


def test_the_unit_runs_the_reaper_as_systemd_expects_it() -> None:
    unit = settings()
    assert unit["Type"] == "notify"  # the reaper says READY=1 once the API server serves
    assert unit["NotifyAccess"] == "main"  # and it alone notifies (fd store included)
    assert unit["KillMode"] == "process"  # a stop leaves the containers running
    assert int(unit["FileDescriptorStoreMax"]) >= 3 * 1000  # 3 pipe ends per container
    assert unit["Restart"] == "always"


def test_systemd_accepts_every_setting(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed on this host")
    unit = tmp_path / UNIT.name
    text = UNIT.read_text().replace("/usr/local/bin/containerd-actors", "/bin/true")
    unit.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "Unknown" not in done.stderr + done.stdout, done.stderr
