"""Async (trio) client library for the daemon: the same code path `actr` and other services use.

Requests go over nng Req0, one context per call so that many calls can be in flight on one socket.
The socket is created with ``resend_time=0``: nng's default would silently resend a
non-idempotent request (a container start) after 60 s or on reconnect.
"""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import pynng
import trio

from .protocol import (
    MAX_MESSAGE_BYTES,
    AddProcess,
    AddProcessReply,
    Checkpoint,
    ContainerInfo,
    ContainerStats,
    CreateCheckpoint,
    CreateCheckpointReply,
    CreateContainer,
    CreateContainerReply,
    DeleteCheckpoint,
    DeleteCheckpointReply,
    ErrorReply,
    Event,
    ListCheckpoints,
    ListCheckpointsReply,
    Metrics,
    MetricsReply,
    MetricsSnapshot,
    Ping,
    PingReply,
    ProtocolError,
    ReadOutput,
    ReadOutputReply,
    ResizeTerminal,
    ResizeTerminalReply,
    Signal,
    SignalReply,
    State,
    StateReply,
    Stats,
    StatsReply,
    UpdateContainer,
    UpdateContainerReply,
    User,
    WriteInput,
    WriteInputReply,
    decode_event,
    decode_reply,
    encode_request,
)

DEFAULT_ADDRESS = "ipc:///run/containerd-actors/containerd.sock"
#: How long a call waits for its reply before giving up; a start can queue behind --concurrency.
DEFAULT_TIMEOUT_S = 120.0

ReplyT = TypeVar("ReplyT")
#: How long one ReadOutput of a follow waits for output before asking again.
FOLLOW_WAIT_S = 10.0
#: A follow whose long poll came back empty without waiting (the daemon had too many) waits this long.
FOLLOW_BACKOFF_S = 0.1
#: stdin bytes per WriteInput: base64 makes them 4/3 bigger, well under the daemon's 1 MiB limit.
INPUT_CHUNK_BYTES = 256 << 10


@attrs.frozen
class OutputChunk:
    """Decoded output of one ReadOutput; ``exited`` marks the last, with the exit ``status``."""

    stdout: bytes
    stderr: bytes
    skipped: int = 0
    exited: bool = False
    status: int | None = None
    terminal: bool = False


class ClientError(Exception):
    """Base of everything this library raises on purpose."""


class DaemonUnreachable(ClientError):
    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot reach containerd-actors at {address}: {reason}")
        self.address = address
        self.reason = reason


class RequestFailed(ClientError):
    """The daemon answered with an ErrorReply."""

    def __init__(self, error: ErrorReply) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.code = error.code
        self.message = error.message
        self.details = error.details


def normalize_address(address: str) -> str:
    """Accept a bare socket path (as the original's --address did) as well as an nng URL."""
    if "://" in address:
        return address
    return "ipc://" + os.path.abspath(address)


class Client:
    """A connection to one daemon. Create it with ``Client.connect``."""

    def __init__(self, address: str, socket: pynng.Req0, timeout: float) -> None:
        self.address = address
        self._socket = socket
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid()}-{id(self):x}"
        self._events_address: str | None = None

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, address: str = DEFAULT_ADDRESS, timeout: float = DEFAULT_TIMEOUT_S
    ) -> AsyncIterator[Client]:
        address = normalize_address(address)
        socket = pynng.Req0(resend_time=0, recv_max_size=MAX_MESSAGE_BYTES * 64)
        try:
            try:
                socket.dial(address, block=True)
            except pynng.NNGException as exc:
                raise DaemonUnreachable(address, str(exc)) from None
            yield cls(address, socket, timeout)
        finally:
            socket.close()

    def _next_request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    async def call(self, request_type: type, reply_type: type[ReplyT], **fields: Any) -> ReplyT:
        """Send one request and return its typed reply; an ErrorReply raises ``RequestFailed``."""
        request = request_type(request_id=self._next_request_id(), **fields)
        payload = encode_request(request)
        context = self._socket.new_context()
        try:
            with trio.fail_after(self._timeout):
                await context.asend(payload)
                raw = await context.arecv()
        except trio.TooSlowError:
            raise DaemonUnreachable(self.address, f"no reply within {self._timeout:g} s") from None
        except pynng.NNGException as exc:
            raise DaemonUnreachable(self.address, str(exc)) from None
        finally:
            context.close()
        try:
            reply = decode_reply(raw)
        except ProtocolError as exc:
            raise ClientError(f"undecodable reply from daemon: {exc.message}") from None
        if isinstance(reply, ErrorReply):
            raise RequestFailed(reply)
        if not isinstance(reply, reply_type):
            raise ClientError(f"expected {reply_type.__name__}, got {type(reply).__name__}")
        return reply

    async def ping(self) -> PingReply:
        return await self.call(Ping, PingReply)

    async def create_container(self, id: str, bundle: str, checkpoint: str | None = None) -> int:
        """Start a container (restored from ``checkpoint`` if given); returns its init pid."""
        reply = await self.call(
            CreateContainer, CreateContainerReply, id=id, bundle=bundle, checkpoint=checkpoint
        )
        return reply.pid

    async def create_checkpoint(
        self,
        id: str,
        name: str,
        *,
        tcp: bool = False,
        unix_sockets: bool = False,
        shell: bool = False,
        exit: bool = False,
    ) -> Checkpoint:
        reply = await self.call(
            CreateCheckpoint,
            CreateCheckpointReply,
            id=id,
            name=name,
            tcp=tcp,
            unix_sockets=unix_sockets,
            shell=shell,
            exit=exit,
        )
        return reply.checkpoint

    async def list_checkpoints(self, id: str) -> list[Checkpoint]:
        return (await self.call(ListCheckpoints, ListCheckpointsReply, id=id)).checkpoints

    async def delete_checkpoint(self, id: str, name: str) -> None:
        await self.call(DeleteCheckpoint, DeleteCheckpointReply, id=id, name=name)

    async def signal(self, id: str, signal: int = 15, pid: int = 0) -> None:
        await self.call(Signal, SignalReply, id=id, signal=signal, pid=pid)

    async def state(self) -> StateReply:
        return await self.call(State, StateReply)

    async def containers(self) -> list[ContainerInfo]:
        return (await self.state()).containers

    async def pause(self, id: str) -> None:
        await self.call(UpdateContainer, UpdateContainerReply, id=id, status="paused")

    async def resume(self, id: str) -> None:
        await self.call(UpdateContainer, UpdateContainerReply, id=id, status="running")

    async def stats(self, id: str) -> ContainerStats:
        """One cgroup sample; call it about once a second to stream."""
        return (await self.call(Stats, StatsReply, id=id)).stats

    async def metrics(self) -> MetricsSnapshot:
        return (await self.call(Metrics, MetricsReply)).metrics

    async def add_process(
        self,
        id: str,
        args: list[str],
        *,
        env: list[str] | None = None,
        cwd: str = "",
        user: User | None = None,
        terminal: bool = False,
        rows: int = 0,
        cols: int = 0,
    ) -> int:
        """Exec ``args`` in a running container (runc exec); returns the new process's pid."""
        reply = await self.call(
            AddProcess,
            AddProcessReply,
            id=id,
            args=list(args),
            env=list(env or []),
            cwd=cwd,
            user=user,
            terminal=terminal,
            rows=rows,
            cols=cols,
        )
        return reply.pid

    async def read_output(
        self,
        id: str,
        pid: int = 0,
        *,
        stdout_offset: int = 0,
        stderr_offset: int = 0,
        wait: float = 0.0,
        max_bytes: int = 1 << 20,
        tail: int = -1,
    ) -> ReadOutputReply:
        """One read of a process's output (base64 fields); see ``follow_output`` for a stream."""
        return await self.call(
            ReadOutput,
            ReadOutputReply,
            id=id,
            pid=pid,
            stdout_offset=stdout_offset,
            stderr_offset=stderr_offset,
            wait=wait,
            max_bytes=max_bytes,
            tail=tail,
        )

    async def follow_output(
        self,
        id: str,
        pid: int = 0,
        *,
        follow: bool = True,
        tail: int = -1,
        offsets: tuple[int, int] = (0, 0),
    ) -> AsyncIterator[OutputChunk]:
        """Yield a process's output from ``offsets`` (stdout, stderr; by default its start), or from
        its last ``tail`` lines, until it exits.

        Without ``follow`` it stops at the current end of the logs instead. Each chunk is a
        long-poll reply; the last one (``exited``) carries the exit status.
        """
        out_offset, err_offset = offsets
        while True:
            reply = await self.read_output(
                id,
                pid,
                stdout_offset=out_offset,
                stderr_offset=err_offset,
                wait=FOLLOW_WAIT_S if follow else 0.0,
                tail=tail,
            )
            tail = -1
            stdout = base64.b64decode(reply.stdout)
            stderr = base64.b64decode(reply.stderr)
            out_offset, err_offset = reply.next_stdout_offset, reply.next_stderr_offset
            yield OutputChunk(stdout, stderr, reply.skipped, reply.exited, reply.status, reply.terminal)
            if reply.exited:
                return
            if not stdout and not stderr:
                if not follow:
                    return
                await trio.sleep(FOLLOW_BACKOFF_S)  # the daemon's long polls were all taken

    async def write_input(self, id: str, data: bytes, pid: int = 0, *, close: bool = False) -> None:
        """Write all of ``data`` to a process's stdin, in chunks that fit a request; then maybe EOF."""
        view = memoryview(data)
        while True:
            chunk = bytes(view[:INPUT_CHUNK_BYTES])
            final = len(chunk) == len(view)
            reply = await self.call(
                WriteInput,
                WriteInputReply,
                id=id,
                pid=pid,
                data=base64.b64encode(chunk).decode(),
                close=close and final,
            )
            view = view[reply.written :]
            if final and reply.written == len(chunk):
                return

    async def resize_terminal(self, id: str, rows: int, cols: int, pid: int = 0) -> None:
        await self.call(ResizeTerminal, ResizeTerminalReply, id=id, pid=pid, rows=rows, cols=cols)

    async def events_address(self) -> str:
        if self._events_address is None:
            self._events_address = (await self.ping()).events_address
        return self._events_address

    @asynccontextmanager
    async def subscribe(self, topic_prefix: str = "") -> AsyncIterator[EventSubscription]:
        """Subscribe to live events whose topic starts with ``topic_prefix`` (all by default).

        The subscription is ready when this context is entered: events published afterwards
        are delivered (nng pub/sub can still drop under overload; ``seq`` reveals gaps).
        """
        address = await self.events_address()
        socket = pynng.Sub0(recv_max_size=MAX_MESSAGE_BYTES)
        try:
            socket.subscribe(topic_prefix.encode())
            try:
                socket.dial(address, block=True)
            except pynng.NNGException as exc:
                raise DaemonUnreachable(address, str(exc)) from None
            await _wait_until_subscribed(self)
            yield EventSubscription(socket)
        finally:
            socket.close()


async def _wait_until_subscribed(client: Client) -> None:
    """nng connects the pipe asynchronously even after a blocking dial returns on the dialer side.

    One request round trip to the same daemon gives the listener time to accept the pipe; it is
    cheap and makes "subscribe, then act" free of a race in practice.
    """
    await client.ping()


class EventSubscription:
    """Async iterator of decoded events from one Sub0 socket."""

    def __init__(self, socket: pynng.Sub0) -> None:
        self._socket = socket

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> Event:
        try:
            frame = await self._socket.arecv()
        except pynng.Closed:
            raise StopAsyncIteration from None
        return decode_event(frame)
