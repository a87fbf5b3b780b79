"""Names imported on first use (PEP 562), for the modules whose import must cost little.

``containerd_actors.protocol`` and ``containerd_actors.client`` re-export many names, but the reaper
parsing its flags and ``actr --help`` must not pay for cattrs or trio; each package names where its
names live and gets its ``__getattr__`` and ``__dir__`` from here. ``replies`` and ``requests`` get
theirs from ``names_from_elsewhere``: the wire types of other modules that their unions list.
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


def names_from_elsewhere(
    namespace: dict[str, Any],
    elsewhere: Mapping[str, tuple[str, ...]],
    derived: Mapping[str, Callable[[], Any]],
) -> Callable[[str], Any]:
    """``__getattr__`` for a module that names classes of other modules without importing them:
    on the first use of one of those names, or of a name in ``derived`` (a value made from them,
    like a union), every module of ``elsewhere`` (module: the names it defines) is imported and
    its names put in ``namespace``, then each ``derived`` value is made, in order, and kept.

    Why: the tagged unions of requests and replies list the migration messages, and replies'
    fields name the stats and event records; defining those ~30 classes is ~7 ms of every one-shot
    ``actr`` command, which sends a ``State`` or an ``AddProcess``. The names land in the module's
    own namespace because that is where ``typing.get_type_hints`` resolves its classes' fields.
    """
    package = namespace["__name__"]
    wanted = {name for names in elsewhere.values() for name in names} | set(derived)

    def __getattr__(name: str) -> Any:
        if name not in wanted:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        for module, names in elsewhere.items():
            loaded = importlib.import_module(module)
            for each in names:
                namespace[each] = getattr(loaded, each)
        for each, make in derived.items():
            namespace[each] = make()
        return namespace[name]

    return __getattr__
