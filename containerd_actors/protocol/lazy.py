"""Re-exports imported on first use (PEP 562), for the packages whose import must cost nothing.

``containerd_actors.protocol`` and ``containerd_actors.client`` re-export many names, but the reaper
parsing its flags and ``actr --help`` must not pay for cattrs or trio; each package names where its
names live and gets its ``__getattr__`` and ``__dir__`` from here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    namespace: dict[str, Any], homes: Mapping[str, tuple[str, ...]], prefix: str = ""
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the module whose globals are ``namespace``: a name of
    ``homes`` (module ``prefix + key``: the names it defines) is imported on first use, then kept."""
    home_of = {name: prefix + module for module, names in homes.items() for name in names}
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = home_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return [*namespace, *sorted(home_of)]

    return __getattr__, __dir__
