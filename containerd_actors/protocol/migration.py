"""Live migration on the wire: the request a client sends the source daemon, and the requests the
source daemon sends the destination daemon (with its own client certificate), with their replies.

A migration, as the destination sees it (``token`` names it from the first request to the last):

1. ``MigrationBegin``: the container's id and bundle paths; the destination refuses at once if the
   id is in use or (without ``rootfs_copy``) the rootfs is not at the same path. Nothing is frozen yet.
2. ``MigrationChunk`` (a binary frame only, see ``proto_schemas/README.md``): ``length`` bytes of
   ``file`` at ``offset``, the bytes in the blob ``data``, their sha256 in the header. ``seq``
   numbers the chunks of a migration from 0, in the order the source cut them.
3. ``MigrationCommit``: every chunk is in (``chunks`` of them, and ``sha256`` is the sha256 of their
   hex digests joined in ``seq`` order); the destination restores the container and answers only
   once it runs.
4. ``MigrationAbort``: the source gave up; the destination removes what it received, and the
   container too if the commit had restored it (a reply lost on the way).

These types live in their own module so that the requests' and replies' modules only list them.
"""

from __future__ import annotations

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
from attrs import field, frozen

from containerd_actors.protocol.validators import InvalidField, non_negative, valid_id

#: Where checkpoint images, the bundle's config.json and the rootfs tar go in a migration.
FILE_KINDS = ("image", "config", "rootfs")
#: The one blob of a ``MigrationChunk`` frame.
CHUNK_BLOB = "data"


def file_kind(instance: object, attribute: object, value: str) -> None:
    if value not in FILE_KINDS:
        raise InvalidField(f"kind must be one of {', '.join(FILE_KINDS)}, got {value!r}")


def file_name(instance: object, attribute: object, value: str) -> None:
    """A plain file name: CRIU writes its images into one directory, and nothing else is sent."""
    if not value or value in (".", "..") or "/" in value or "\0" in value or len(value) > 255:
        raise InvalidField(f"name must be a plain file name (no '/'), got {value!r}")


def hex_sha256(instance: object, attribute: object, value: str) -> None:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise InvalidField(f"sha256 must be 64 lowercase hex digits, got {value[:80]!r}")


@frozen
class MigrateContainer:
    """Move a running container to the daemon at ``to`` (a ``tls+tcp://`` address).

    This daemon drives it, with its own TLS certificate as the client's: it checkpoints the
    container (frozen, not stopped), sends the images and ``config.json`` (and a tar of the rootfs
    with ``rootfs_copy``; otherwise the rootfs must be at the same path there, which is checked
    before anything is frozen), and the destination restores it under the same id. Once it runs
    there, this daemon deletes its copy, or with ``keep_source`` keeps the checkpoint in the
    bundle. ``tcp`` keeps established TCP connections (CRIU's ``--tcp-established``). Any failure
    before the destination confirms leaves the container running here.
    """

    request_id: str
    id: str = field(validator=valid_id)
    to: str
    tcp: bool = False
    keep_source: bool = False
    rootfs_copy: bool = False
    #: ``--pre-dump N``: rounds of pre-copy. Refused on a kernel without dirty memory tracking.
    pre_dump: int = field(default=0, validator=non_negative)


@frozen
class MigrateContainerReply:
    """Where the container runs now, and where the time went (seconds).

    ``frozen_s`` runs from the freeze at the source to the restored process running at the
    destination; ``dump_s``, ``transfer_s`` and ``restore_s`` are its parts; ``total_s`` also
    counts the checks before the freeze and the deletion after. With ``pages_streamed`` the
    memory pages went to the destination during the dump (CRIU's page server), so ``dump_s``
    includes their transfer and ``transfer_s`` counts only the other images.
    """

    request_id: str
    pid: int
    frozen_s: float
    total_s: float
    dump_s: float
    transfer_s: float
    restore_s: float
    bytes_sent: int
    #: With ``keep_source``: the checkpoint of the bundle the dump was kept as (None: not kept).
    kept_checkpoint: str | None = None
    #: The pages streamed to the destination's page server while CRIU dumped (false: the dump
    #: went to the source's disk and was sent after it, as when the page relay cannot be set up).
    pages_streamed: bool = False


@frozen
class MigrationBegin:
    """Source to destination: a migration of container ``id`` starts (see the module docstring).

    ``bundle`` is the source's bundle directory and ``rootfs`` its rootfs, resolved to an absolute
    path; without ``rootfs_copy`` the destination must have that path. ``terminal``: the init has a pty.
    """

    request_id: str
    token: str = field(validator=valid_id)
    id: str = field(validator=valid_id)
    bundle: str
    rootfs: str
    rootfs_copy: bool = False
    tcp: bool = False
    terminal: bool = False


@frozen
class MigrationBeginReply:
    request_id: str
    #: Where the destination keeps the container's bundle once it is restored.
    bundle: str
    #: The port of the bulk channel on the host the source reached (0: none, send chunks over
    #: the API), and the one-time secret a connection to it must present first
    #: (``daemon/migration/bulk.py``).
    bulk_port: int = 0
    bulk_secret: str = ""
    #: The port of the page relay on the same host (0: none, the source dumps to disk and sends
    #: the pages with the other images); its connections present ``bulk_secret`` too
    #: (``daemon/migration/pagerelay.py``).
    page_server_port: int = 0


@frozen
class MigrationChunk:
    """Part of one file of a migration; sent only as a binary frame whose blob ``data`` holds the bytes."""

    request_id: str
    token: str = field(validator=valid_id)
    seq: int = field(validator=non_negative)
    kind: str = field(validator=file_kind)
    #: The image file's name (``image``: CRIU writes no subdirectories); ``config.json``; ``rootfs.tar``.
    name: str = field(validator=file_name)
    offset: int = field(validator=non_negative)
    sha256: str = field(validator=hex_sha256)


@frozen
class MigrationChunkReply:
    request_id: str


@frozen
class MigrationCommit:
    """Every chunk is sent: check them, restore the container, and answer once it runs.

    ``frozen_at`` is the source's clock (seconds since the epoch) when it froze the container: the
    destination's ``migrate-in`` event reports the frozen time from it (hosts' clocks should agree).
    """

    request_id: str
    token: str = field(validator=valid_id)
    chunks: int = field(validator=non_negative)
    sha256: str = field(validator=hex_sha256)
    frozen_at: float = 0.0


@frozen
class MigrationCommitReply:
    request_id: str
    pid: int
    #: How long the restore took at the destination.
    restore_s: float


@frozen
class MigrationAbort:
    """The source gives up: remove what was received, and a container the commit restored."""

    request_id: str
    token: str = field(validator=valid_id)
    reason: str = ""


@frozen
class MigrationAbortReply:
    request_id: str
    #: True when a container restored by this migration's commit was removed.
    removed_container: bool = False
