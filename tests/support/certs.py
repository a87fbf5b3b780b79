"""Certificates for the TLS tests, made with the openssl command: a CA, the daemon's certificate,
clients signed by the CA (one of them expired), and a client signed by a CA the daemon does not know.

The openssl command rather than a Python crypto library: it is on every Debian machine and this is
the tool an operator would use, so the tests exercise certificates made the usual way.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from containerd_actors.client import TlsFiles


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _key_and_request(directory: Path, name: str, common_name: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name}",
        cwd=directory,
    )  # fmt: skip


def make_ca(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "30", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt"


def sign(
    directory: Path, ca: str, name: str, common_name: str, days: int = 30, ips: tuple[str, ...] = ()
) -> TlsFiles:
    """A key and a certificate for ``common_name`` signed by ``ca``; ``days=-1`` makes it expired.

    It names localhost and 127.0.0.1, and ``ips`` too (a daemon's other listening addresses: a
    client checks that the daemon's certificate names the address it dialed).
    """
    _key_and_request(directory, name, common_name)
    names = ",".join(["DNS:localhost", "IP:127.0.0.1", *(f"IP:{ip}" for ip in ips)])
    (directory / f"{name}.ext").write_text(f"subjectAltName={names}\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", str(days), "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip
    return TlsFiles(directory / f"{name}.crt", directory / f"{name}.key", directory / f"{ca}.crt")


def make_test_certs(directory: Path) -> dict[str, TlsFiles]:
    """The certificates the TLS tests share, by role: one set, so that every test meets the same cases.

    ``server`` and ``renewed`` for the daemon, ``admin`` and ``reader`` for clients the daemon trusts,
    ``expired`` for one it must refuse, and ``stranger`` signed by a CA the daemon does not know.
    """
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    return {
        "server": sign(directory, "ca", "server", "localhost"),
        "renewed": sign(directory, "ca", "renewed", "localhost"),
        "admin": sign(directory, "ca", "admin", "admin"),
        "reader": sign(directory, "ca", "reader", "reader"),
        "expired": sign(directory, "ca", "expired", "admin", days=-1),
        "stranger": sign(directory, "other-ca", "stranger", "admin"),
    }


def free_port_run(count: int) -> int:
    """A port P such that P .. P+count-1 were all free a moment ago (the API and its two streams)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        taken = []
        try:
            for port in range(first, first + count):
                held = socket.socket()
                taken.append(held)
                held.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for held in taken:
                held.close()
        return first
    raise RuntimeError(f"no run of {count} free ports found")
