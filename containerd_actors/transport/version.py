"""The nng release line transport/ was tested with, checked when transport/ is imported.

``request`` and ``reply`` call nng's C API through pynng's private bindings and rely on how nng 1.11
behaves where no API promises anything: a raw Req0 reports ``NNG_EAGAIN`` while its pipe is writing,
a raw Rep0 drops replies that do not fit its per-pipe queue, a non-blocking context send on a busy
pipe forgets the request it answers, and ``recv_fd`` stays raised after a pipe with a queued
request closes. Another minor release may change any of these without notice, and the failure
would be a hang or a crash of the API server rather than an error. So an nng of another
major.minor refuses to import until it has been tested and ``TESTED_NNG`` moved.
"""

from __future__ import annotations

from containerd_actors.transport.bindings import ffi, lib

#: The major.minor of nng (bundled by pynng 0.9) that the transport's behaviour was measured on.
TESTED_NNG = (1, 11)


class NngVersionError(ImportError):
    """The nng pynng bundles is not the release line transport/ was tested with."""


def installed_nng_version() -> str:
    """nng's version as the loaded library reports it (not the headers pynng was built against)."""
    return ffi.string(lib.nng_version()).decode()


def _pynng_version() -> str:
    """pynng's own version, for an error message only: importing pynng costs asyncio's ~25 ms."""
    import pynng

    return str(pynng.__version__)


def check_nng_version(found: str) -> None:
    """Raise ``NngVersionError`` unless ``found`` (such as "1.11.0") is of the tested major.minor."""
    expected = ".".join(map(str, TESTED_NNG))
    remedy = (
        f"install a pynng that bundles nng {expected} (pyproject.toml pins it), or test the transport "
        "with this nng and update TESTED_NNG in containerd_actors/transport/version.py"
    )
    try:
        major, minor = (int(part) for part in found.split(".")[:2])
    except ValueError:
        raise NngVersionError(
            f"containerd_actors.transport cannot read nng's version {found!r} "
            f"(pynng {_pynng_version()}); it was tested with nng {expected}: {remedy}"
        ) from None
    if (major, minor) != TESTED_NNG:
        raise NngVersionError(
            f"containerd_actors.transport was tested with nng {expected}, but pynng "
            f"{_pynng_version()} bundles nng {found}: {remedy}"
        )
