"""pynng's compiled nng bindings (``lib``, ``ffi``), loaded without importing the pynng package.

Why: ``import pynng`` also imports asyncio (pynng's async support, ~25 ms here), and a one-shot
``actr`` command that sends one request and prints the reply has ~60 ms in all. The compiled
module (``pynng._nng``) needs nothing of the package, so it is loaded from its file and
registered under its own name: a later ``import pynng`` finds it in ``sys.modules`` and uses the
very same ``lib`` and ``ffi``, so both ways share one nng.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

_NAME = "pynng._nng"


def _load() -> ModuleType:
    """pynng's own ``lib`` and ``ffi`` if it is imported already, else its compiled module's."""
    for name in ("pynng", _NAME):
        loaded = sys.modules.get(name)
        if loaded is not None:
            return loaded
    package = importlib.util.find_spec("pynng")  # finds the package without running it
    if package is None or not package.submodule_search_locations:
        raise ImportError("pynng is not installed", name="pynng")
    for directory in package.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(directory, "_nng" + suffix)
            if os.path.exists(path):
                loader = importlib.machinery.ExtensionFileLoader(_NAME, path)
                spec = importlib.util.spec_from_file_location(_NAME, path, loader=loader)
                assert spec is not None
                module = importlib.util.module_from_spec(spec)
                loader.exec_module(module)
                sys.modules[_NAME] = module
                return module
    raise ImportError(f"pynng's compiled module {_NAME} was not found", name=_NAME)


_module = _load()
lib: Any = _module.lib
ffi: Any = _module.ffi
