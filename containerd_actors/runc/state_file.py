"""What runc's own state file (``<root>/<id>/state.json``) says of a container that the host no
longer can: where its cgroups are once its init has exited.

``/proc/PID/cgroup`` is the usual source, but an init that exits before it is read (an OOM kill a
few milliseconds after the start, on a busy host) leaves nothing there: a zombie names the root
cgroups, a reaped process no file at all. runc keeps the directories in its state until the
container is deleted, which the daemon does only after it has read what it needs.
"""

from __future__ import annotations

import json
from pathlib import Path


def cgroup_dirs(root: Path, id: str) -> dict[str, str]:
    """{controller: directory} of container ``id`` under runc ``--root`` ``root``, ``""`` naming
    the cgroup2 one. Raises FileNotFoundError once runc has deleted it, ValueError if unreadable."""
    with open(root / id / "state.json", "rb") as f:
        state = json.load(f)
    directories = state.get("cgroup_paths") if isinstance(state, dict) else None
    if not isinstance(directories, dict):
        raise ValueError(f"runc's state of {id!r} names no cgroup_paths")
    return {str(controller): str(directory) for controller, directory in directories.items()}
