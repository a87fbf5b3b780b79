"""``start -t``/``-T``: runc takes the terminal from config.json alone, so the daemon runs it on a copy."""

from __future__ import annotations

import json
from pathlib import Path

from containerd_actors.runc.bundle import write_with_terminal


def test_the_copy_sets_the_terminal_and_keeps_paths_pointing_into_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    config = {
        "process": {"terminal": True, "consoleSize": {"height": 5, "width": 6}, "args": ["sh"]},
        "root": {"path": "rootfs", "readonly": True},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind"]},
            {"destination": "/abs", "source": "/srv/abs", "options": ["bind", "ro"]},
        ],
    }
    (tmp_path / "state").mkdir()  # the container's state directory, made by its start
    copy_dir = write_with_terminal(bundle, config, False, tmp_path / "state" / "bundle")
    copy = json.loads((copy_dir / "config.json").read_text())
    assert copy["process"] == {"terminal": False, "args": ["sh"]}
    assert copy["root"] == {"path": str(bundle / "rootfs"), "readonly": True}
    assert [mount["source"] for mount in copy["mounts"]] == ["proc", str(bundle / "data"), "/srv/abs"]
    assert config["process"]["terminal"] is True and config["root"]["path"] == "rootfs"  # untouched
    forced = json.loads((write_with_terminal(bundle, {}, True, tmp_path / "t") / "config.json").read_text())
    assert forced == {"process": {"terminal": True}}
