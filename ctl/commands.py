"""What each ``actr`` command does, as async functions over one client connection.

They return the process exit code and let the client library's errors (``DaemonUnreachable``,
``RequestFailed``) propagate, so that ``ctl.main`` owns the whole error-reporting policy.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TextIO

from containerd_actors.client import Client, RequestFailed
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


async def stream_events(address: str, *, as_json: bool, stream: TextIO | None = None) -> int:
    """``actr events``: print events as they arrive until interrupted.

    The header is printed once the subscription is live, so a script that waits for it knows
    that later events will be seen. An undecodable frame is reported and skipped rather than
    ending the stream.
    """
    printer = render.EventPrinter(stream or sys.stdout, as_json=as_json)
    async with Client.connect(address) as client, client.subscribe() as subscription:
        printer.header()
        while True:
            try:
                event = await anext(subscription)
            except StopAsyncIteration:
                return 0
            except ProtocolError as exc:
                print(f"actr: skipping event: {exc.message}", file=sys.stderr)
                continue
            printer.print(event)


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
