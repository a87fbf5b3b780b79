"""How a migration's files are cut into checksummed chunks, and how the whole is checked.

Each chunk carries the sha256 of its bytes (checked on arrival by the codec), and ``seq``, its
number in the order the source cut them. The whole is checked at the commit by the sha256 of the
chunks' hex digests joined in ``seq`` order: it proves that every chunk arrived, once, as cut,
without hashing the files a second time (a 256 MiB dump costs ~0.4 s more to re-hash here).
Chunks may arrive out of order (several are in flight at once), so each names its file and offset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import attrs

from containerd_actors.protocol import MAX_MESSAGE_BYTES

#: The daemon refuses messages over ``MAX_MESSAGE_BYTES``; a chunk leaves room for its header.
CHUNK_BYTES = MAX_MESSAGE_BYTES - 16 * 1024


@attrs.frozen
class SourceFile:
    """One file to send: ``kind`` and ``name`` as the destination files it, ``path`` here."""

    kind: str
    name: str
    path: Path


@attrs.frozen
class ChunkPlan:
    """One chunk to send: which bytes of which file, and its number."""

    seq: int
    file: SourceFile
    offset: int
    length: int


def plan_chunks(files: list[SourceFile], chunk_bytes: int = CHUNK_BYTES) -> list[ChunkPlan]:
    """Every chunk of ``files`` in order; an empty file still gets one (empty) chunk, so it exists."""
    plans: list[ChunkPlan] = []
    for source in files:
        size = source.path.stat().st_size
        offset = 0
        while True:
            length = min(chunk_bytes, size - offset)
            plans.append(ChunkPlan(len(plans), source, offset, length))
            offset += length
            if offset >= size:
                break
    return plans


def image_files(images: Path) -> list[SourceFile]:
    """CRIU's image files (it writes no subdirectories), in name order."""
    return [SourceFile("image", entry.name, entry) for entry in sorted(images.iterdir()) if entry.is_file()]


def digest_of_digests(digests: Iterator[str] | list[str]) -> str:
    """The whole's checksum: sha256 of the chunks' hex digests, in ``seq`` order."""
    whole = hashlib.sha256()
    for digest in digests:
        whole.update(digest.encode())
    return whole.hexdigest()
