"""Connecting the terminal to a process in a container: ``start -a``, ``exec -a``, ``attach``, ``logs``.

Output comes from the daemon's logs through ``Client.follow_output`` (long-poll ReadOutput
requests on the ordinary request socket), so the client needs no access to the daemon's files and
a client that dies loses nothing and stops nothing. Keystrokes or piped stdin go the other way
as WriteInput requests; EOF on stdin closes the process's stdin.

With a terminal (``-t``) the local terminal is put in raw mode, so every key, Ctrl-C included,
goes to the process; it is restored on every way out (the process exits, the detach keys, a
signal, the daemon going away). Ctrl-P Ctrl-Q detaches and leaves the process running, as
docker does. SIGWINCH sends the new window size to the pty.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import trio

from containerd_actors.client import FRAMED_INPUT_CHUNK_BYTES, Client, ErrorCode, OutputRead, RequestFailed
from ctl.attach_blocking import rotated_out

#: Ctrl-P Ctrl-Q, docker's default detach keys.
DETACH_KEYS = b"\x10\x11"
#: Exit code when the daemon does not know the exit status (the process was not its child).
EXIT_STATUS_UNKNOWN = 255
_READ_CHUNK = FRAMED_INPUT_CHUNK_BYTES
#: Reads whose output may wait for the writer (each up to 4 MiB per stream).
_WRITES_AHEAD = 2


class Detached(Exception):
    """The user pressed the detach keys; the process keeps running."""


def terminal_size(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal on ``fd``, or (0, 0) if it is not one."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 0, 0
    return size.lines, size.columns


@contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode on ``fd`` (if it is a terminal) for the duration; always restored."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@asynccontextmanager
async def _output_writer() -> AsyncIterator[trio.MemorySendChannel[tuple[int, bytes]]]:
    """A channel whose bytes are written by a task of their own, in a thread (so that a slow reader
    of our stdout never stalls stdin forwarding), while the next read is on its way; at most
    ``_WRITES_AHEAD`` writes wait. Leaving the block waits for them all."""
    send, receive = trio.open_memory_channel[tuple[int, bytes]](_WRITES_AHEAD)

    async def write_all() -> None:
        async with receive:
            async for fd, data in receive:
                await trio.to_thread.run_sync(_write_all, fd, data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_all)
        async with send:
            yield send


async def _write_chunk(
    output: trio.MemorySendChannel[tuple[int, bytes]], chunk: OutputRead, out_fd: int, err_fd: int
) -> None:
    """A read's bytes to their streams; a gap in the logs is said on stderr, where it was lost."""
    if chunk.skipped:
        await output.send((err_fd, rotated_out(chunk.skipped)))
    if chunk.stdout:
        await output.send((out_fd, chunk.stdout))
    if chunk.stderr:
        await output.send((err_fd, chunk.stderr))


async def _pump_output(
    client: Client, id: str, pid: int, out_fd: int, err_fd: int, offsets: tuple[int, int]
) -> int:
    status = EXIT_STATUS_UNKNOWN
    async with _output_writer() as output:
        async for chunk in client.follow_output(id, pid, offsets=offsets):
            await _write_chunk(output, chunk, out_fd, err_fd)
            if chunk.exited:
                status = EXIT_STATUS_UNKNOWN if chunk.status is None else chunk.status
                break
    return status


class _DetachScanner:
    """Finds the detach keys in keystrokes, also when they arrive in two reads."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Bytes to forward, and whether the detach keys were seen (nothing after them is sent)."""
        data = self._held + data
        self._held = b""
        index = data.find(DETACH_KEYS)
        if index >= 0:
            return data[:index], True
        if data.endswith(DETACH_KEYS[:1]):
            self._held, data = data[-1:], data[:-1]
        return data, False


async def _read_stdin(fd: int) -> bytes:
    """One read from stdin; regular files cannot be polled, so they are read directly."""
    if stat.S_ISREG(os.fstat(fd).st_mode):
        await trio.lowlevel.checkpoint()
        return os.read(fd, _READ_CHUNK)
    while True:
        try:
            return os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)


async def _pump_input(client: Client, id: str, pid: int, in_fd: int, detach_keys: bool) -> None:
    """Forward stdin until EOF (then close the process's stdin) or until the process stops taking it."""
    try:
        await _forward_input(client, id, pid, in_fd, detach_keys)
    except RequestFailed as failure:
        if failure.code not in (ErrorCode.INVALID_STATE, ErrorCode.NOT_FOUND):
            raise
        # The process closed or lost its stdin (it may have exited): its output and status still come.


async def _forward_input(client: Client, id: str, pid: int, in_fd: int, detach_keys: bool) -> None:
    scanner = _DetachScanner()
    regular = stat.S_ISREG(os.fstat(in_fd).st_mode)
    was_blocking = os.get_blocking(in_fd)
    if not regular:
        os.set_blocking(in_fd, False)
    try:
        while True:
            data = await _read_stdin(in_fd)
            if not data:
                await client.write_input(id, b"", pid, close=True)
                return
            if detach_keys:
                data, detach = scanner.feed(data)
                if data:
                    await client.write_input(id, data, pid)
                if detach:
                    raise Detached()
            else:
                await client.write_input(id, data, pid)
    finally:
        if not regular:
            os.set_blocking(in_fd, was_blocking)


async def _forward_window_size(client: Client, id: str, pid: int, tty_fd: int) -> None:
    with trio.open_signal_receiver(signal.SIGWINCH) as changes:
        async for _ in changes:
            rows, cols = terminal_size(tty_fd)
            if rows and cols:
                await client.resize_terminal(id, rows, cols, pid)


async def attach(
    client: Client,
    id: str,
    pid: int,
    *,
    terminal: bool,
    forward_stdin: bool = True,
    offsets: tuple[int, int] = (0, 0),
) -> int:
    """Connect this process's stdio to process ``pid`` of container ``id``; return its exit status.

    Output starts at ``offsets`` (stdout, stderr): by default the process's first byte. They are
    fixed before any input is sent, so the answer to a keystroke is never before the start.

    Returns 0 after a detach. A SIGTERM or SIGHUP to ``actr`` ends the attach (the process keeps
    running) with 128+N, after the terminal has been restored.
    """
    in_fd, out_fd, err_fd = sys.stdin.fileno(), sys.stdout.fileno(), sys.stderr.fileno()
    sys.stdout.flush()
    status = 0
    local_tty = terminal and os.isatty(in_fd)
    with raw_terminal(in_fd) if local_tty else _nothing():
        try:
            async with trio.open_nursery() as nursery:

                async def output() -> None:
                    nonlocal status
                    status = await _pump_output(client, id, pid, out_fd, err_fd, offsets)
                    nursery.cancel_scope.cancel()

                async def stop_on_signal() -> None:
                    nonlocal status
                    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
                        async for signum in signals:
                            status = 128 + signum
                            nursery.cancel_scope.cancel()
                            return

                nursery.start_soon(output)
                nursery.start_soon(stop_on_signal)
                if forward_stdin:
                    nursery.start_soon(_pump_input, client, id, pid, in_fd, terminal)
                if local_tty:
                    nursery.start_soon(_forward_window_size, client, id, pid, in_fd)
        except* Detached:
            status = 0
    return status


@contextmanager
def _nothing() -> Iterator[None]:
    yield
