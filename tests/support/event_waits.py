"""Waiting on a client's event subscription for one container's event, with a deadline.

End-to-end tests synchronise on the daemon's events rather than on sleeps; these helpers are the
one way they do it, so a stream that ends or an event that never comes fails the same clear way.
"""

from __future__ import annotations

import trio

from containerd_actors.client import Client, EventSubscription
from containerd_actors.protocol import Event, EventType

EVENT_TIMEOUT_S = 30.0


async def next_event(
    events: EventSubscription, kind: str, id: str, *, timeout: float = EVENT_TIMEOUT_S
) -> Event:
    """The next event of ``kind`` about container ``id``; the others on the stream are passed over."""
    with trio.fail_after(timeout):
        async for event in events:
            if event.type == kind and event.id == id:
                return event
    raise AssertionError("the event subscription ended")


async def exit_status(events: EventSubscription, id: str, *, timeout: float = EVENT_TIMEOUT_S) -> int | None:
    """The status in the next exit event of container ``id`` (its init's exit)."""
    return (await next_event(events, EventType.EXIT, id, timeout=timeout)).status


async def journal_events(client: Client) -> list[Event]:
    """Every event in the daemon's journal, read page by page from the first."""
    events: list[Event] = []
    from_seq = 1
    while True:
        page = await client.events_page(from_seq=from_seq)
        events += page.events
        if page.next_seq > page.last_seq:
            return events
        from_seq = page.next_seq
