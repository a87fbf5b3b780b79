"""CRIU on this host: installed by scripts/install-criu, new enough for this kernel, and usable.

A missing or too old criu is a missing install step, so those tests fail. A criu that is installed but whose
`criu check` fails is a limit of the host (kernel config, a sandbox without some capability), so that test
skips with CRIU's own reason instead.
"""

from __future__ import annotations

import subprocess

import pytest
from support.criu import INSTALL_HINT, MIN_VERSION, criu_path, last_error_line, parse_version


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
