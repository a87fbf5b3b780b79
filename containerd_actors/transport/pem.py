"""The TLS flags' files, checked with nothing heavier than the standard library.

Apart from ``tls`` (which builds nng's configuration and imports attrs) because the reaper checks
the ``--tls-*`` files too, so that a missing one fails the start naming it, and the reaper must
stay small: it lives as long as the host's containers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class TlsFilesError(ValueError):
    """A certificate, key or CA file is missing, unreadable, or not PEM."""


def read_pem(path: Path, what: str, marker: str) -> str:
    """The PEM text of ``path``, or ``TlsFilesError`` naming the file and what it should have been."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TlsFilesError(f"cannot read the TLS {what} {path}: {exc}") from None
    if f"-----BEGIN {marker}" not in text and not (marker == "KEY" and "PRIVATE KEY-----" in text):
        raise TlsFilesError(f"the TLS {what} {path} is not a PEM {marker.lower()}")
    return text


def read_pem_files(cert: Path, key: Path, ca: Path) -> tuple[str, str, str]:
    """The certificate, key and CA as PEM text; ``TlsFilesError`` names the first that cannot serve."""
    return (
        read_pem(cert, "certificate", "CERTIFICATE"),
        read_pem(key, "key", "KEY"),
        read_pem(ca, "CA", "CERTIFICATE"),
    )
