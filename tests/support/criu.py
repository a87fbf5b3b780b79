"""CRIU on this host, for the tests that need it: where it is, how new, and its own reason for failing."""

from __future__ import annotations

import re
import shutil

import pytest

# Linux 6.13 split the vvar mapping (CRIU copes from 4.1 on), and Linux 6.16 refuses SO_PASSCRED on TCP
# sockets, which CRIU 4.1 asks for when it dumps an established connection (4.2 copes).
MIN_VERSION = (4, 2)
INSTALL_HINT = "run scripts/install-criu"


def criu_path() -> str:
    path = shutil.which("criu")
    if path is None:
        pytest.fail(f"criu is not on PATH: {INSTALL_HINT}")
    return path


def last_error_line(output: str) -> str:
    """CRIU's last `Error (file:line): ...` line, else its last non-empty line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"(^|\s)Error\b", line)]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "no output"


def parse_version(output: str) -> tuple[int, ...] | None:
    match = re.search(r"^Version:\s*(\d+(?:\.\d+)*)", output, re.MULTILINE)
    return tuple(int(part) for part in match.group(1).split(".")) if match else None
