"""What each ``actr`` command does, as async functions over one client connection.

They return the process exit code and let the client library's errors (``DaemonUnreachable``,
``RequestFailed``) propagate, so that ``ctl.main`` owns the whole error-reporting policy.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import TextIO

import trio

from containerd_actors.client import Client, EventsLost, RequestFailed
from containerd_actors.protocol import ErrorCode, ErrorReply, ProtocolError, User
from ctl import render


class NotSupported(Exception):
    """A flag the original ctr had but the daemon cannot honour yet; reported as a usage error (exit 2)."""


async def list_containers(address: str, *, as_json: bool, stream: TextIO | None = None) -> int:
    """``actr containers [list]``: the ``ID PATH STATUS PID1`` table, or a JSON array."""
    stream = stream or sys.stdout
    async with Client.connect(address) as client:
        containers = await client.containers()
    if as_json:
        stream.write(render.containers_json(containers) + "\n")
    else:
        render.print_containers(containers, stream)
    return 0


async def start_container(
    address: str,
    id: str,
    bundle: str,
    *,
    checkpoint: str | None = None,
    attach: bool = False,
    as_json: bool = False,
    stream: TextIO | None = None,
) -> int:
    """``actr containers start ID BUNDLE``: prints the init pid.

    With ``attach`` it prints the container's output instead, forwards stdin, and returns the
    init's exit status.

    The bundle is made absolute here because the daemon resolves paths in its own working
    directory, not the caller's.
    """
    stream = stream or sys.stdout
    bundle = os.path.abspath(bundle)
    async with Client.connect(address) as client:
        pid = await client.create_container(id, bundle, checkpoint=checkpoint)
        if attach:
            from ctl.attach import attach as attach_to

            return await attach_to(client, id, pid, terminal=False)
    if as_json:
        stream.write(json.dumps({"id": id, "pid": pid}) + "\n")
    else:
        stream.write(f"{pid}\n")
    return 0


async def kill_container(address: str, id: str, *, signal: int = 15, pid: int = 0) -> int:
    """``actr containers kill [-p PID] [-s SIG] ID``: pid 0 is the container's init process."""
    async with Client.connect(address) as client:
        await client.signal(id, signal=signal, pid=pid)
    return 0


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


async def stream_events(
    address: str,
    *,
    as_json: bool,
    from_seq: int | None = None,
    since: float | None = None,
    stream: TextIO | None = None,
) -> int:
    """``actr events [--from SEQ | --since TIME]``: print events until interrupted.

    The header is printed once the subscription is live, so a script that waits for it knows
    that later events will be seen. With ``from_seq`` or ``since``, past events from the
    daemon's journal come first, then live ones, with no gap and no repeat in between; events
    the journal no longer has are reported on stderr rather than skipped silently. An
    undecodable frame is reported and skipped rather than ending the stream.
    """
    printer = render.EventPrinter(stream or sys.stdout, as_json=as_json)

    def report_loss(lost: EventsLost) -> None:
        print(describe_loss(lost), file=sys.stderr, flush=True)

    # Ctrl-C arrives as a message, not as a KeyboardInterrupt thrown into whatever runs (possibly
    # pynng's callback into trio, which then fails with TrioInternalError): the stream is cancelled
    # cleanly and the shell gets the usual 130.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as stop_signals:
        async with (
            Client.connect(address) as client,
            client.subscribe(from_seq=from_seq, since=since, on_loss=report_loss) as subscription,
            trio.open_nursery() as nursery,
        ):
            result: list[int] = []

            async def stop_on_signal() -> None:
                async for signum in stop_signals:
                    result.append(128 + signum)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            printer.header()
            while True:
                try:
                    event = await anext(subscription)
                except StopAsyncIteration:
                    nursery.cancel_scope.cancel()
                    break
                except ProtocolError as exc:
                    print(f"actr: skipping event: {exc.message}", file=sys.stderr)
                    continue
                printer.print(event)
    return result[0] if result else 0


async def exec_process(
    address: str,
    id: str,
    args: list[str],
    *,
    attach: bool,
    terminal: bool,
    cwd: str,
    env: list[str],
    user: User | None,
    as_json: bool,
    stream: TextIO | None = None,
) -> int:
    """``actr containers exec``: prints the new pid, or with ``-a`` runs attached and returns its status."""
    from ctl.attach import attach as attach_to
    from ctl.attach import terminal_size

    stream = stream or sys.stdout
    rows, cols = terminal_size(sys.stdin.fileno()) if terminal else (0, 0)
    async with Client.connect(address) as client:
        pid = await client.add_process(
            id, args, env=env, cwd=cwd, user=user, terminal=terminal, rows=rows, cols=cols
        )
        if attach:
            return await attach_to(client, id, pid, terminal=terminal)
    if as_json:
        stream.write(json.dumps({"id": id, "pid": pid}) + "\n")
    else:
        stream.write(f"{pid}\n")
    return 0


async def attach_process(address: str, id: str, pid: int) -> int:
    """``actr containers attach ID [-p PID]``: attach to a running process (the init by default).

    Output starts with what the process writes from now on, as docker's attach does; the earlier
    output is in ``actr containers logs``.
    """
    from ctl.attach import attach as attach_to
    from ctl.attach import terminal_size

    async with Client.connect(address) as client:
        probe = await client.read_output(id, pid, tail=0)
        if probe.terminal:
            rows, cols = terminal_size(sys.stdin.fileno())
            if rows and cols:
                await client.resize_terminal(id, rows, cols, pid)
        offsets = (probe.next_stdout_offset, probe.next_stderr_offset)
        return await attach_to(client, id, pid, terminal=probe.terminal, offsets=offsets)


async def show_logs(address: str, id: str, pid: int, *, follow: bool, tail: int) -> int:
    """``actr containers logs ID [-p PID] [-f] [--tail N]``."""
    from ctl.attach import print_logs

    async with Client.connect(address) as client:
        return await print_logs(client, id, pid, follow=follow, tail=tail)


async def container_state(address: str, id: str, *, as_json: bool, stream: TextIO | None = None) -> int:
    """``actr containers state ID``: the container and each of its processes."""
    stream = stream or sys.stdout
    async with Client.connect(address) as client:
        containers = await client.containers()
    found = [c for c in containers if c.id == id]
    if not found:
        raise RequestFailed(ErrorReply(None, ErrorCode.NOT_FOUND, f"no such container: {id!r}"))
    if as_json:
        stream.write(render.containers_json(found)[1:-1].strip() + "\n")
    else:
        render.print_processes(found[0], stream)
    return 0
