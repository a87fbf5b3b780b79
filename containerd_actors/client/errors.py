"""What the client library raises on purpose: one base class, so a caller can catch all of it."""

from __future__ import annotations

from containerd_actors.protocol import ErrorReply


class ClientError(Exception):
    """Base of everything this library raises on purpose."""


class DaemonUnreachable(ClientError):
    """No answer: nothing listens at the address, the connection dropped, or the reply timed out.

    The request may or may not have been carried out; only a daemon that answered says which.
    """

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot reach containerd-actors at {address}: {reason}")
        self.address = address
        self.reason = reason


def unreachable_reason(message: str, *, crypto: bool) -> str:
    """nng's text, plus what a TLS failure usually means (mbedTLS says only 'Cryptographic error')."""
    if not crypto:
        return message
    return (
        f"TLS handshake failed ({message}): the daemon did not accept this client's certificate "
        "(not signed by its CA, or expired), or its own certificate is not signed by --tls-ca or "
        "does not name this host"
    )


class RequestFailed(ClientError):
    """The daemon answered with an ErrorReply: ``code`` says why, for a program to act on."""

    def __init__(self, error: ErrorReply) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.code = error.code
        self.message = error.message
        self.details = error.details
