"""Containers run with the runc CLI directly, for tests of the host helpers that need a real cgroup."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def runc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runc", "--root", str(root), *args], capture_output=True, text=True, check=False)


@contextmanager
def detached_container(root: Path, bundle: Path, prefix: str = "t") -> Iterator[tuple[str, int]]:
    """(id, init pid) of a `runc run -d` container under a private root, force-deleted by id on exit.

    Its stdio must not be pipes: the container inherits them, and reading to EOF would wait for it.
    runc's stderr goes to a file under the root, so that a failed start shows runc's reason.
    """
    container_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
    try:
        stderr_path = root / f"{container_id}.stderr"
        with open(stderr_path, "w") as stderr:
            started = subprocess.run(
                ["runc", "--root", str(root), "run", "-d", "--bundle", str(bundle), container_id],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                check=False,
            )
        assert started.returncode == 0, f"runc run -d failed: {stderr_path.read_text()}"
        state = runc(root, "state", container_id)
        assert state.returncode == 0, state.stderr
        yield container_id, json.loads(state.stdout)["pid"]
    finally:
        runc(root, "delete", "-f", container_id)
