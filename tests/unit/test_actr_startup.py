"""``actr`` pauses the cyclic garbage collector while it starts, and resumes it before it lasts."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ctl.startup import lasting, pause_collection


@pytest.fixture
def collector() -> Iterator[None]:
    was = gc.isenabled()
    yield
    gc.unfreeze()
    if was:
        gc.enable()
    else:
        gc.disable()


def test_a_command_that_lasts_collects_again_with_startup_frozen(collector: None) -> None:
    pause_collection()
    assert not gc.isenabled()
    lasting()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_lasting_leaves_a_collector_that_was_never_paused_alone(collector: None) -> None:
    gc.enable()
    frozen = gc.get_freeze_count()
    lasting()
    assert gc.isenabled() and gc.get_freeze_count() == frozen
