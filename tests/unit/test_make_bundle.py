"""scripts/make-bundle must produce bundles that real runc runs, because every other test relies on them.

These tests drive runc directly, not through the daemon, so that a broken bundle is told apart from a
broken daemon.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.bundles import MAKE_BUNDLE, make_bundle, shared_rootfs

pytestmark = pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")

MIB = 1024 * 1024


@pytest.fixture
def runc_root(tmp_path: Path) -> Path:
    """A private runc state directory, so tests never see or touch the system's containers."""
    root = tmp_path / "runc"
    root.mkdir()
    return root


@pytest.fixture
def run_container(runc_root: Path) -> Iterator:
    """Run bundles in the foreground with runc, and force-delete every container afterwards.

    `runc run` deletes a container that exits by itself, but not one left behind when a test fails or
    times out.
    """
    ids: list[str] = []

    def run(bundle: Path) -> subprocess.CompletedProcess[str]:
        cid = f"mb-{uuid.uuid4().hex[:12]}"
        ids.append(cid)
        return subprocess.run(
            ["runc", "--root", str(runc_root), "run", "--bundle", str(bundle), cid],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
        )

    try:
        yield run
    finally:
        for cid in ids:
            subprocess.run(
                ["runc", "--root", str(runc_root), "delete", "-f", cid],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=30,
            )


def script(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MAKE_BUNDLE), *map(str, argv)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def config(bundle: Path) -> dict:
    return json.loads((bundle / "config.json").read_text())


def test_runs_command_and_propagates_exit_code(tmp_path: Path, run_container) -> None:
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", "echo hello; exit 3"])
    result = run_container(bundle)
    assert "hello" in result.stdout, result.stderr
    assert result.returncode == 3, result.stderr


def test_standalone_bundle_layout(tmp_path: Path) -> None:
    result = script(tmp_path / "b", "--", "sh", "-c", "exit 3")
    assert result.returncode == 0, result.stderr
    bundle = Path(result.stdout.strip())
    assert bundle == (tmp_path / "b").resolve()

    rootfs = bundle / "rootfs"
    for name in ("proc", "sys", "dev", "tmp", "etc"):
        assert (rootfs / name).is_dir(), name
    assert (rootfs / "bin" / "busybox").is_file()
    assert (rootfs / "bin" / "sh").is_symlink()
    assert "nobody" in (rootfs / "etc" / "passwd").read_text()
    assert "root" in (rootfs / "etc" / "group").read_text()

    spec = config(bundle)
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert spec["process"]["args"] == ["sh", "-c", "exit 3"]
    assert spec["process"]["terminal"] is False
    assert spec["hostname"] == "busybox"
    # runc's default namespaces stay, so benchmarks against raw runc compare the same spec.
    assert {"type": "network"} in spec["linux"]["namespaces"]


def test_default_command_and_args_option(tmp_path: Path) -> None:
    assert script(tmp_path / "b").returncode == 0
    assert config(tmp_path / "b")["process"]["args"] == ["sleep", "1000000"]
    assert script(tmp_path / "b", "--args", "echo", "-n", "x").returncode == 0
    assert config(tmp_path / "b")["process"]["args"] == ["echo", "-n", "x"]


def test_rerun_keeps_rootfs_unless_forced(tmp_path: Path) -> None:
    assert script(tmp_path / "b", "--memory-limit", str(64 * MIB), "--env", "A=1").returncode == 0
    busybox = tmp_path / "b" / "rootfs" / "bin" / "busybox"
    inode = busybox.stat().st_ino

    assert script(tmp_path / "b", "--", "true").returncode == 0
    spec = config(tmp_path / "b")
    assert spec["process"]["args"] == ["true"]
    # config.json is regenerated from the options, not patched, so nothing from the last run lingers.
    assert "A=1" not in spec["process"]["env"]
    assert "memory" not in spec["linux"].get("resources", {})
    assert busybox.stat().st_ino == inode

    assert script(tmp_path / "b", "--force").returncode == 0
    assert busybox.stat().st_ino != inode


def test_shared_rootfs(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", ["true"])
    rootfs = shared_rootfs()
    assert config(bundle)["root"] == {"path": str(rootfs), "readonly": True}
    assert (rootfs / "tmp").is_dir()
    assert not (bundle / "rootfs").exists()


def test_rootfs_is_read_only(tmp_path: Path, run_container) -> None:
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", "touch /tmp/x && echo writable"])
    result = run_container(bundle)
    assert result.returncode != 0
    assert "writable" not in result.stdout
    assert "Read-only file system" in result.stderr


def test_memory_limit_and_env(tmp_path: Path, run_container) -> None:
    limit = 48 * MIB
    bundle = make_bundle(
        tmp_path / "bundle",
        ["sh", "-c", "echo $GREETING; cat /sys/fs/cgroup/memory/memory.limit_in_bytes"],
        memory_limit=limit,
        env=["GREETING=hi there"],
    )
    spec = config(bundle)
    assert spec["linux"]["resources"]["memory"]["limit"] == limit
    assert "GREETING=hi there" in spec["process"]["env"]

    result = run_container(bundle)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "hi there"
    if Path("/sys/fs/cgroup/memory").is_dir():  # cgroup v1: the limit is visible from inside.
        assert lines[1] == str(limit)


def host_has_swap() -> bool:
    return len(Path("/proc/swaps").read_text().splitlines()) > 1


@pytest.mark.skipif(host_has_swap(), reason="with swap, the hog is swapped out instead of killed")
def test_memory_limit_kills_a_hog(tmp_path: Path, run_container) -> None:
    # `tail /dev/zero` never sees a newline, so it buffers without bound.
    bundle = make_bundle(tmp_path / "bundle", ["tail", "/dev/zero"], memory_limit=32 * MIB)
    result = run_container(bundle)
    assert result.returncode == 128 + 9, result.stderr


def test_bad_options_fail_clearly(tmp_path: Path) -> None:
    result = script(tmp_path / "b", "--rootfs", tmp_path / "missing")
    assert result.returncode == 1
    assert "not a complete rootfs" in result.stderr
    assert not (tmp_path / "b").exists()

    result = script(tmp_path / "b", "--env", "NOEQUALS")
    assert result.returncode == 2
    assert "K=V" in result.stderr
