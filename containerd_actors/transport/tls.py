"""Mutual TLS for the API and the event streams on ``tls+tcp://``: the certificates, read from files.

nng (with the mbedTLS that pynng links in) does the handshake and the crypto; this module only
turns three PEM files into its configuration, with errors that name the file at fault. Both sides
always verify: the server requires a client certificate signed by its CA (``AUTH_MODE_REQUIRED``),
and the client requires the server's. Identity is the certificate's common name (CN), which nng
reports per pipe; what a CN may do is the daemon's business (``--read-only-client``).

The files are read into memory at each ``server_config``/``client_config`` call rather than handed
to nng by path, so that a reload reads renewed files, and a file that cannot be read fails with
its path here instead of with mbedTLS's bare "cryptographic error" at the first connection.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
import attrs

# The schemes (``addresses``) and the files' checks (``pem``) live apart, for the reaper and for
# clients that need no attrs; named here too.
from containerd_actors.protocol.addresses import host_of as host_of
from containerd_actors.protocol.addresses import is_plain_tcp as is_plain_tcp
from containerd_actors.protocol.addresses import is_tls as is_tls
from containerd_actors.transport.pem import TlsFilesError as TlsFilesError
from containerd_actors.transport.pem import read_pem_files

if TYPE_CHECKING:
    from pathlib import Path

    import pynng


@attrs.frozen
class TlsFiles:
    cert: Path
    key: Path
    ca: Path

    def pem(self) -> tuple[str, str, str]:
        """The certificate, key and CA as PEM text (read now, so a renewal is seen)."""
        return self._pem()

    def _pem(self) -> tuple[str, str, str]:
        return read_pem_files(self.cert, self.key, self.ca)

    def check(self) -> None:
        """Raise ``TlsFilesError`` naming the first file that cannot serve (before any listener).

        Without pynng; the reaper, which must not load attrs either, checks through ``pem``.
        """
        self._pem()

    def server_config(self) -> pynng.TLSConfig:
        import pynng

        return self._config(pynng.TLSConfig.MODE_SERVER)

    def client_config(self, server_name: str) -> pynng.TLSConfig:
        import pynng

        return self._config(pynng.TLSConfig.MODE_CLIENT, server_name=server_name)

    def _config(self, mode: int, **extra: str) -> pynng.TLSConfig:
        """Mutual TLS either way: our certificate and key, and the peer's must be signed by the CA."""
        import pynng

        cert, key, ca = self._pem()
        return pynng.TLSConfig(
            mode,
            **extra,
            ca_string=ca,
            own_cert_string=cert,
            own_key_string=key,
            auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED,
        )

    def stamp(self) -> tuple[float, ...]:
        """The files' modification times: a reload is due when this changes."""
        stamps = []
        for path in (self.cert, self.key, self.ca):
            try:
                stamps.append(os.stat(path).st_mtime)
            except OSError:
                stamps.append(-1.0)
        return tuple(stamps)


class TlsListeners:
    """A socket's ``tls+tcp://`` listeners, which share its one TLS configuration, and their reload.

    nng fixes a listener's TLS configuration when it starts, so serving renewed files means new
    listeners: each is closed and opened again on the same address. The socket's other listeners
    (ipc) and their pipes are untouched; remote clients' connections may drop, and their dialers
    reconnect with the new certificate. The files are read before anything is closed, so a renewal
    caught half-written raises here and the old listeners keep serving.
    """

    def __init__(self, socket: pynng.Socket, addresses: list[str], files: TlsFiles) -> None:
        self._socket = socket
        self._addresses = addresses
        self._files = files
        socket.tls_config = files.server_config()
        self._listeners = [socket.listen(address) for address in addresses]

    def reload(self) -> None:
        config = self._files.server_config()
        for listener in self._listeners:
            listener.close()
        self._socket.tls_config = config
        self._listeners = [self._socket.listen(address) for address in self._addresses]
