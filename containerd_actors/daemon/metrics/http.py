"""`--metrics-address HOST:PORT`: ``GET /metrics`` in the Prometheus text format, for a scraper.

A scrape is one short HTTP/1.0 exchange, so a few lines on trio's TCP streams serve it without an
HTTP framework. Anything but ``GET /metrics`` gets a 404 or 405; a client that sends nothing is
dropped after a timeout, so idle connections cannot pile up.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from containerd_actors.daemon.mailbox import ask
from containerd_actors.daemon.metrics.messages import TakeSnapshot
from containerd_actors.protocol.prometheus import CONTENT_TYPE, format_prometheus

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0
MAX_REQUEST_HEAD = 16 << 10


def parse_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--metrics-address must be HOST:PORT, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _read_request_line(stream: trio.SocketStream) -> str:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_HEAD:
            break
    return data.split(b"\n", 1)[0].decode("latin-1").strip()


async def serve_prometheus(
    address: str, metrics: trio.MemorySendChannel[Any], *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    host, port = parse_host_port(address)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.move_on_after(REQUEST_TIMEOUT_S):
                    method, _, rest = (await _read_request_line(stream)).partition(" ")
                    path = rest.split(" ", 1)[0]
                    if method != "GET":
                        reply = _response("405 Method Not Allowed", b"only GET\n")
                    elif path.split("?", 1)[0] != "/metrics":
                        reply = _response("404 Not Found", b"see /metrics\n")
                    else:
                        snapshot = await ask(metrics, TakeSnapshot)
                        reply = _response("200 OK", format_prometheus(snapshot).encode(), CONTENT_TYPE)
                    await stream.send_all(reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.debug("metrics scrape dropped: %s", exc)

    listeners = await trio.open_tcp_listeners(port, host=host)
    log.info("Prometheus metrics on http://%s:%d/metrics", host, port)
    await trio.serve_listeners(handle, listeners, task_status=task_status)
