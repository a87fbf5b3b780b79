"""The OCI bundle on disk: checked before runc sees it, so that a mistake gets a clear message.

runc's own errors for a relative path or a missing ``config.json`` name neither the bundle nor the
fix; checking here first lets the daemon answer with the reason.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from containerd_actors.host.fds import is_fd_limit_error, read_small

#: Parsed configs by path, each with the bytes it was parsed from: a burst of containers started
#: from one bundle parses its config once, not once each.
_parsed: dict[str, tuple[bytes, dict[str, Any]]] = {}
#: Bundles whose parsed config is remembered; past this the memory starts afresh.
_PARSED_LIMIT = 64


def validate_bundle(bundle: str) -> Path:
    """Reject what runc would reject less clearly; raises ValueError with the reason."""
    path = Path(bundle)
    if not path.is_absolute():
        raise ValueError(f"bundle {bundle!r} must be an absolute path")
    try:
        if stat.S_ISREG(os.stat(os.path.join(bundle, "config.json")).st_mode):
            return path  # the usual case, in one system call
    except OSError:
        pass
    if not path.is_dir():
        raise ValueError(f"bundle {bundle!r} is not a directory")
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"bundle {bundle!r} has no config.json")
    return path


def read_bundle_config(bundle: Path) -> dict[str, Any]:
    """Parse the bundle's OCI config; raises ValueError on anything that is not a JSON object.

    The result is shared by every caller until the file's bytes change: copy before changing
    any part of it.
    """
    path = os.path.join(bundle, "config.json")
    try:
        raw = read_small(path)
        known = _parsed.get(path)
        if known is not None and known[0] == raw:
            return known[1]
        config = json.loads(raw)
    except (OSError, ValueError) as exc:
        if is_fd_limit_error(exc):
            raise  # the server's limit, not the bundle's fault (see ``host.fds``)
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("process", {}), dict):
        raise ValueError(f"{path} is not an OCI runtime config object")
    if len(_parsed) >= _PARSED_LIMIT:
        _parsed.clear()
    _parsed[path] = (raw, config)
    return config


def write_with_terminal(bundle: Path, config: dict[str, Any], terminal: bool, directory: Path) -> Path:
    """A bundle in ``directory`` that is ``bundle`` with ``process.terminal`` set; returns it.

    runc takes the terminal from ``config.json`` alone, so forcing one on (or off) needs a copy of
    the config. runc resolves relative paths from the bundle directory, so the copy names the
    root filesystem and bind-mount sources by absolute path; the rootfs itself is not copied.
    """
    copy = json.loads(json.dumps(config))
    process = copy.setdefault("process", {})
    process["terminal"] = terminal
    if not terminal:
        process.pop("consoleSize", None)
    root = copy.get("root")
    if isinstance(root, dict) and isinstance(root.get("path"), str):
        root["path"] = str(bundle / root["path"])  # an absolute path stays as it is
    for mount in copy.get("mounts") or []:
        if not isinstance(mount, dict) or not isinstance(mount.get("source"), str):
            continue
        options = [str(option) for option in mount.get("options") or []]
        if mount.get("type") == "bind" or {"bind", "rbind"} & set(options):
            mount["source"] = str(bundle / mount["source"])
    directory.mkdir(mode=0o700, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(copy))
    return directory
