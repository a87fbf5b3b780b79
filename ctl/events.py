"""``actr events [--from SEQ | --since TIME]``: the daemon's events, live, and past ones on request."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING

from ctl.arguments import non_negative_int, tls_files

if TYPE_CHECKING:
    from containerd_actors.client import EventsLost
    from ctl.arguments import Commands

#: ``--from``: 0 means the oldest event the daemon still keeps.
seq_arg = non_negative_int("seq")


def since_arg(text: str) -> float:
    """argparse type for ``--since``: see ``ctl.times.parse_since`` (imported here: it needs
    datetime, ~1.5 ms that no other command should pay for building the parser)."""
    from ctl.times import BadTime, parse_since

    try:
        return parse_since(text)
    except BadTime as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(commands: Commands, json_after: argparse.ArgumentParser) -> None:
    events = commands.add_parser(
        "events",
        parents=[json_after],
        help="receive events from the daemon: TYPE ID PID STATUS SEQ TIME",
        description="Print events as they happen; none is missed while the daemon's journal holds it. "
        "With --from or --since, first print past events from the journal, then continue live "
        "without a gap or a repeat.",
    )
    start_at = events.add_mutually_exclusive_group()
    start_at.add_argument(
        "--from",
        dest="from_seq",
        metavar="SEQ",
        type=seq_arg,
        default=None,
        help="replay from event SEQ (0: the oldest the daemon still keeps)",
    )
    start_at.add_argument(
        "--since",
        metavar="TIME",
        type=since_arg,
        default=None,
        help="replay from the first event at or after TIME: 10m, 1h30m (ago), a Unix timestamp, "
        "or ISO 8601 such as 2026-01-02T15:04:05Z",
    )
    events.set_defaults(handler=stream_events)


def describe_loss(lost: EventsLost) -> str:
    """One line for stderr: which events can no longer be shown, and why."""
    what = f"event {lost.first_seq}" if lost.count == 1 else f"events {lost.first_seq}..{lost.last_seq}"
    if lost.beyond_retention:
        why = (
            f"older than the daemon keeps (its oldest is {lost.first_available_seq}; see --events-retention)"
        )
    else:
        why = "unreadable in the daemon's journal (its log says why)"
    return f"actr: {what} lost: {why}"


async def stream_events(args: argparse.Namespace) -> int:
    """Print events until interrupted.

    The header is printed once the subscription is live, so a script that waits for it knows
    that later events will be seen. With ``--from`` or ``--since``, past events from the
    daemon's journal come first, then live ones, with no gap and no repeat in between; events
    the journal no longer has are reported on stderr rather than skipped silently. An
    undecodable frame is reported and skipped rather than ending the stream.
    """
    import trio  # here, not at the top: building the parser must not import it

    from containerd_actors.client import Client, ProtocolError
    from ctl import render

    addresses = args.addresses or [args.address]
    printer = render.EventPrinter(sys.stdout, as_json=args.json, hosts=len(addresses) > 1)

    def report_loss(lost: EventsLost) -> None:
        print(describe_loss(lost), file=sys.stderr, flush=True)

    # Ctrl-C arrives as a message, not as a KeyboardInterrupt thrown into whatever runs (possibly
    # pynng's callback into trio, which then fails with TrioInternalError): the stream is cancelled
    # cleanly and the shell gets the usual 130.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as stop_signals:
        result: list[int] = []
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in stop_signals:
                    result.append(128 + signum)
                    nursery.cancel_scope.cancel()
                    return

            async def follow(address: str, subscribed: trio.Event) -> None:
                """One daemon's events (each daemon numbers its own seq), until its stream ends."""
                async with (
                    Client.connect(address, tls=tls_files(args)) as client,
                    client.subscribe(
                        from_seq=args.from_seq, since=args.since, on_loss=report_loss
                    ) as subscription,
                ):
                    host = (await client.ping()).daemon_id if len(addresses) > 1 else None
                    subscribed.set()
                    # Replayed events may be there at once: none is printed before the header.
                    await header_printed.wait()
                    while True:
                        try:
                            event = await anext(subscription)
                        except StopAsyncIteration:
                            return
                        except ProtocolError as exc:
                            print(f"actr: skipping event: {exc.message}", file=sys.stderr)
                            continue
                        printer.print(event, host)

            nursery.start_soon(stop_on_signal)
            header_printed = trio.Event()
            async with trio.open_nursery() as streams:
                ready = [trio.Event() for _ in addresses]
                for address, subscribed in zip(addresses, ready, strict=True):
                    streams.start_soon(follow, address, subscribed)
                for subscribed in ready:
                    await subscribed.wait()
                printer.header()  # once every subscription is live
                header_printed.set()
            nursery.cancel_scope.cancel()
    return result[0] if result else 0
