"""A client on another host, run as its own process (inside a network namespace, by the tests).

    python remote_client.py lifecycle ADDRESS CERT KEY CA BUNDLE ID
        start ID from BUNDLE, list, exec, kill, all while subscribed to the events over TLS
    python remote_client.py refused ADDRESS CERT KEY CA
        try a Ping with these files (another CA's, say)
    python remote_client.py no-cert ADDRESS CA
        try the handshake with no client certificate at all (raw pynng: the client library
        refuses to dial tls+tcp:// without one)

Each prints one JSON object on stdout, what it saw, for the test to judge; the test decides what
should have happened.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from containerd_actors.client import Client, ClientError, TlsFiles
from containerd_actors.protocol import EventType

TIMEOUT_S = 30.0


async def lifecycle(address: str, tls: TlsFiles, bundle: str, id: str) -> dict[str, Any]:
    async with Client.connect(address, timeout=TIMEOUT_S, tls=tls) as client:
        ping = await client.ping()
        streams = await client.event_streams()
        async with client.subscribe() as events:
            pid = await client.create_container(id, bundle)
            listed = [c.id for c in await client.containers()]
            exec_pid = await client.add_process(id, ["true"])
            seen: list[dict[str, Any]] = []
            killed = False
            with trio.fail_after(TIMEOUT_S):
                async for event in events:
                    if event.id != id:
                        continue
                    seen.append(
                        {"type": event.type, "pid": event.pid, "status": event.status, "by": event.by}
                    )
                    if event.type == EventType.EXIT and event.pid == exec_pid and not killed:
                        killed = True  # the exec'd process is done: kill the container
                        await client.signal(id, signal.SIGKILL)
                    if event.type == EventType.EXIT and event.pid == pid:
                        break
        after = [c.id for c in await client.containers()]
    return {
        "daemon_id": ping.daemon_id,
        "events_address": streams[0],
        "pid": pid,
        "exec_pid": exec_pid,
        "listed": listed,
        "listed_after": after,
        "events": seen,
    }


async def refused(address: str, tls: TlsFiles) -> dict[str, Any]:
    try:
        async with Client.connect(address, timeout=10, tls=tls) as client:
            await client.ping()
    except ClientError as exc:
        return {"refused": True, "error": str(exc)}
    return {"refused": False, "error": None}


def no_cert(address: str, ca: Path) -> dict[str, Any]:
    import pynng

    from containerd_actors.transport.tls import host_of

    config = pynng.TLSConfig(
        pynng.TLSConfig.MODE_CLIENT,
        server_name=host_of(address),
        ca_string=ca.read_text(),
        auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED,
    )
    with pynng.Req0(tls_config=config, send_timeout=5000, recv_timeout=5000) as socket:
        try:
            socket.dial(address, block=True)
        except pynng.NNGException as exc:
            return {"refused": True, "error": f"dial: {exc}"}
        try:
            socket.send(b'{"type":"Ping","request_id":"1"}')
            socket.recv()
        except pynng.NNGException as exc:
            return {"refused": True, "error": f"request: {exc}"}
    return {"refused": False, "error": None}


def main(argv: list[str]) -> None:
    mode, address, *rest = argv
    if mode == "lifecycle":
        cert, key, ca, bundle, id = rest
        result = trio.run(lifecycle, address, TlsFiles(Path(cert), Path(key), Path(ca)), bundle, id)
    elif mode == "refused":
        cert, key, ca = rest
        result = trio.run(refused, address, TlsFiles(Path(cert), Path(key), Path(ca)))
    elif mode == "no-cert":
        (ca,) = rest
        result = no_cert(address, Path(ca))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
