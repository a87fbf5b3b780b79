"""Busybox bundles for tests, built by scripts/make-bundle so that tests run what developers and CI run.

Building a rootfs means copying busybox and making a few hundred symlinks, which is the slow part, so each
test process builds one rootfs and every bundle points at it by absolute path. Sharing is safe because the
spec makes the rootfs read-only and make-bundle creates every mount point in advance, so runc never writes
to it.

Import it as `from support.bundles import make_bundle` (pyproject puts tests/ on pytest's path).
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

MAKE_BUNDLE = Path(__file__).resolve().parents[2] / "scripts" / "make-bundle"

_lock = threading.Lock()
_rootfs: Path | None = None


def _run(argv: list[str]) -> str:
    # sys.executable rather than the shebang: it skips any shim in front of python3, and the script
    # only needs the standard library.
    result = subprocess.run(
        [sys.executable, str(MAKE_BUNDLE), *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"make-bundle {' '.join(argv)} failed with exit code {result.returncode}:\n{result.stderr}"
        )
    return result.stdout.strip().splitlines()[-1]


def shared_rootfs() -> Path:
    """Return this process's rootfs, building it on first use; it is removed when the process exits."""
    global _rootfs
    with _lock:
        if _rootfs is None:
            cache = Path(tempfile.mkdtemp(prefix="busybox-rootfs-"))
            atexit.register(shutil.rmtree, cache, ignore_errors=True)
            base = Path(_run([str(cache / "base")]))
            _rootfs = base / "rootfs"
        return _rootfs


def make_bundle(
    directory: Path,
    args: list[str],
    memory_limit: int | None = None,
    env: list[str] | None = None,
) -> Path:
    """Write a bundle whose config.json runs `args` in the shared rootfs, and return its absolute path.

    Calling it again on the same directory rewrites config.json, so a test can change the command of a
    bundle it already has.
    """
    argv = [str(directory), "--rootfs", str(shared_rootfs())]
    if memory_limit is not None:
        argv += ["--memory-limit", str(memory_limit)]
    for item in env or []:
        argv += ["--env", item]
    argv += ["--", *args]
    return Path(_run(argv))


def make_terminal_bundle(directory: Path, args: list[str] | None = None) -> Path:
    """A bundle as `runc spec` makes it: ``process.terminal`` true, running ``sh`` unless told otherwise."""
    bundle = make_bundle(directory, args or ["sh"])
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["terminal"] = True
    config_path.write_text(json.dumps(config, indent=2))
    return bundle
