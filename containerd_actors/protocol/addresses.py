"""Where a daemon listens unless told otherwise, and how its other sockets follow from that.

The daemon and every client share these defaults, so ``actr`` with no ``--address`` finds a daemon
started with no ``--listen``. The events and batch sockets are derived from the address before
them in the same way on both sides: a file beside an IPC socket, the next port for TCP.
"""

from __future__ import annotations

import os

DEFAULT_STATE_DIR = "/run/containerd-actors"
#: The request socket (nng Rep0) of a daemon started without ``--listen``.
DEFAULT_ADDRESS = f"ipc://{DEFAULT_STATE_DIR}/containerd.sock"
#: The events socket's file name beside an IPC request socket.
EVENTS_SOCKET = "events.sock"
#: The batch stream's file name beside an IPC events socket.
EVENTS_BATCH_SOCKET = "events-batch.sock"
#: The schemes that carry the API across hosts; plain ``tcp://`` needs ``--insecure-tcp``.
TLS_SCHEME = "tls+tcp://"
PLAIN_TCP_SCHEME = "tcp://"


def normalize_address(address: str) -> str:
    """An nng URL as given, or a bare socket path (as the original's flags took) as an absolute ``ipc://``."""
    if "://" in address:
        return address
    return "ipc://" + os.path.abspath(address)


def address_beside(address: str, socket_name: str) -> str | None:
    """The socket ``socket_name`` beside an IPC ``address``, or the next port of a TCP one.

    None when ``address`` is neither (a TCP address without a numeric port, say): the caller must
    then be told the address explicitly.
    """
    scheme, _, rest = address.partition("://")
    if scheme == "ipc":
        return f"ipc://{os.path.join(os.path.dirname(rest), socket_name)}"
    host, _, port = rest.rpartition(":")
    if port.isdigit():
        return f"{scheme}://{host}:{int(port) + 1}"
    return None


def is_tls(address: str) -> bool:
    return address.startswith(TLS_SCHEME)


def is_plain_tcp(address: str) -> bool:
    return address.startswith(PLAIN_TCP_SCHEME)


def host_of(address: str) -> str:
    """The host part of a ``tls+tcp://HOST:PORT`` address: the name the server's certificate must carry."""
    rest = address.split("://", 1)[1]
    host, _, _port = rest.rpartition(":")
    return host.strip("[]")
