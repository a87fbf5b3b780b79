"""``ClosedOnExit``: ``with`` support for whatever owns something of nng's, in one place.

Its own module because ``blocking`` must not import ``nng`` (that loads the pynng package).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class ClosedOnExit:
    """``with`` support for an owner of something nng holds: leaving the block, however, closes it."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
