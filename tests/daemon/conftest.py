"""Fixtures for the in-process actor tests: a supervisor with fake runc, running in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.actors import Harness, running


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(Harness(tmp_path / "state")) as started:
        yield started
