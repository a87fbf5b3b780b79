"""Fixtures: a real daemon process per test on a private state directory, and busybox bundles.

The launcher itself lives in ``support.daemon`` (shared with the benchmarks) so that test modules
import it from there, never from this file.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.bundles import make_bundle
from support.daemon import DaemonHandle, remove_containers, running_daemon, short_temp_dir

from containerd_actors.client import Client


@pytest.fixture
def state_dir() -> Iterator[Path]:
    top = short_temp_dir("ca-")
    yield top / "state"
    remove_containers(top / "state" / "runc")
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def runc_root() -> Iterator[Path]:
    """A private ``runc --root`` for tests that drive runc directly; what is left in it is deleted by id."""
    root = short_temp_dir("ca-runc-")
    yield root
    remove_containers(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """A short private directory (ipc socket paths must stay under 108 bytes), removed afterwards."""
    directory = short_temp_dir("ca-work-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def daemon(state_dir: Path) -> AsyncIterator[DaemonHandle]:
    async with running_daemon(state_dir) as handle:
        yield handle
    print(f"---- daemon log ({handle.log_path}) ----\n{handle.log_text()}")  # after it stopped: the whole log


@pytest.fixture
async def client(daemon: DaemonHandle) -> AsyncIterator[Client]:
    async with Client.connect(daemon.address, timeout=60) as connected:
        yield connected


@pytest.fixture(scope="session")
def bundles_dir() -> Iterator[Path]:
    directory = short_temp_dir("ca-bundles-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sleep_bundle(bundles_dir: Path) -> Path:
    """A container that runs until killed (sleep as init ignores SIGTERM; tests use KILL)."""
    return make_bundle(bundles_dir / "sleep", ["sleep", "1000000"])


@pytest.fixture
def bundle_factory(bundles_dir: Path):
    """Make a bundle running the given command line."""

    def factory(*args: str) -> Path:
        return make_bundle(bundles_dir / f"b-{uuid.uuid4().hex[:12]}", list(args))

    return factory
