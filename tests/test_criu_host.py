"""CRIU on this host: installed by scripts/install-criu, new enough for this kernel, and usable.

A missing or too old criu is a missing install step, so those tests fail. A criu that is installed but whose
`criu check` fails is a limit of the host (kernel config, a sandbox without some capability), so that test
skips with CRIU's own reason instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess

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


def test_parse_version() -> None:
    assert parse_version("Version: 4.1.1\n") == (4, 1, 1)
    assert parse_version("Version: 3.17.1\nGitID: v3.17.1\n") == (3, 17, 1)
    assert parse_version("criu: command not found") is None


def test_last_error_line() -> None:
    output = (
        "Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n"
        "Error (criu/crtools.c:260): Could not initialize kernel features detection.\n"
    )
    last = "Error (criu/crtools.c:260): Could not initialize kernel features detection."
    assert last_error_line(output) == last
    assert last_error_line("Warn  (criu/kerndat.c:1285): x\nsomething odd\n\n") == "something odd"


def test_criu_version_is_new_enough() -> None:
    result = subprocess.run([criu_path(), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"criu --version failed: {result.stdout}{result.stderr}"
    version = parse_version(result.stdout)
    assert version is not None, f"cannot read a version from criu --version: {result.stdout!r}"
    assert version >= MIN_VERSION, (
        f"criu {'.'.join(map(str, version))} is older than {'.'.join(map(str, MIN_VERSION))}, "
        f"which this kernel needs: {INSTALL_HINT}"
    )


def test_criu_check() -> None:
    result = subprocess.run([criu_path(), "check"], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.skip(f"criu check failed: {last_error_line(output)}")
    assert "Looks good" in output, output
