"""``Redial`` without a daemon: it gives up after its window, and an outage is said once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from containerd_actors.client.redial import BACK_LINE, LOST_LINE, GaveUp, InFlightLost, Notices, Redial


def test_a_daemon_that_never_answers_is_given_up_after_the_window(tmp_path: Path) -> None:
    said: list[bytes] = []
    redial = Redial(f"ipc://{tmp_path}/none.sock", notices=Notices(said.append), window=0.3)
    began = time.monotonic()

    with pytest.raises(GaveUp, match=r"no connection within 0\.3 s"):
        redial.run(lambda client: client.ping())

    assert 0.3 <= time.monotonic() - began < 3
    assert said == []  # it never had a connection to lose


def test_an_outage_is_said_once_whoever_notices_it() -> None:
    said: list[bytes] = []
    notices = Notices(said.append)

    notices.lost(dialled_at=0)  # the output's connection
    notices.lost(dialled_at=0)  # stdin's, in the same outage
    notices.back()
    notices.lost(dialled_at=0)  # a connection dialled before that outage, noticing it late
    notices.back()
    notices.lost(dialled_at=1)  # a second outage

    assert said == [LOST_LINE, BACK_LINE, LOST_LINE]
    assert len(notices.durations) == 1


def test_what_is_not_sent_twice_raises_in_flight_lost(tmp_path: Path) -> None:
    class Dead:
        def close(self) -> None:
            pass

    redial = Redial(f"ipc://{tmp_path}/none.sock", window=0.1)
    redial._client = Dead()  # type: ignore[assignment]  # a connection the daemon dropped

    def lost(_client: object) -> None:
        from containerd_actors.client.errors import DaemonUnreachable

        raise DaemonUnreachable("ipc://x", "the connection to the daemon closed")

    with pytest.raises(InFlightLost):
        redial.run(lost, resend=False)
