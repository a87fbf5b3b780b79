"""A bytecode cache for the methods attrs generates, so that defining the wire types costs less.

Why: attrs writes each class's ``__init__``, ``__eq__``, ``__hash__`` and ``__repr__`` as Python
source and compiles it when the class is defined. For the ~55 wire classes that is about half of
what importing them costs (~12 ms of a one-shot ``actr`` command on a loaded machine, whose whole
budget is ~60 ms), paid again by every process, because, unlike a module's, that bytecode is not
cached. Here it is: the code objects are kept in one file beside this module's own bytecode
(``__pycache__``), keyed by attrs' file name and the exact source, and used instead of compiling
that same source again. A class whose source changed simply misses and is compiled as before.

attrs compiles methods for classes of its own too, as it is imported (its validators: ~30
compilations, ~3 ms). Those come from the cache as well when this module is imported before attrs:
``compile`` is then replaced for the length of that import, for attrs' generated sources only.

Only the source of ``__hash__`` is not the same from one process to the next: attrs seeds it with
``hash()`` of the class's file name, which string hashing randomizes per process. That seed only
has to differ between classes and stay fixed within a process; the cached code keeps the one of
the process that compiled it, which does both.

The file is written, like Python's own bytecode, unless ``PYTHONDONTWRITEBYTECODE`` is set; then
``python -m containerd_actors.protocol.attrs_code [MODULE ...]`` writes it, for the wire types
and the attrs classes of the modules named (``scripts/setup`` does, as it compiles the sources).
Without the file, or with an attrs whose internals differ from what this expects, classes are
defined exactly as attrs does by itself.
"""

from __future__ import annotations

import atexit
import builtins
import marshal
import os
import re
import sys
import threading
from collections.abc import Mapping
from types import CodeType, FunctionType, ModuleType
from typing import Any

#: attrs' seed of a generated ``__hash__``: the first item of the tuple it hashes.
_HASH_SEED = re.compile(r"(return hash\(\(\s*)-?\d+,")
#: Entries beyond this many (sources of classes since changed) are dropped when the file is written.
_MAX_ENTRIES = 2000

#: Whose classes are cached (attrs names the code ``<attrs generated methods MODULE.CLASS>``): a
#: client's, which every one-shot command defines. Not the daemon's or trio's, which would make the
#: file several times longer for every command to read, to save the daemon a few ms once.
_CACHED = (
    " attr.",
    " containerd_actors.protocol.",
    " containerd_actors.client.",
    " containerd_actors.transport.",
)
#: How attrs names the code it generates.
_ATTRS_FILENAME = "<attrs generated "

_Key = tuple[str, str]

_PATH = os.path.join(
    os.path.dirname(__file__),
    "__pycache__",
    # No attrs version in the name: asking attrs for it imports importlib.metadata (~30 ms), and
    # entries are keyed by their source, which is all that the code compiled from it depends on.
    f"attrs-code-2.{sys.implementation.cache_tag}.marshal",
)
#: Each code object as marshal wrote it: read only when its class is defined, since a process
#: defines few of the classes that others (under trio, say) have added to the file.
_cache: dict[_Key, bytes] = {}
_compiled: dict[_Key, CodeType] = {}
_used: set[_Key] = set()


def _load() -> None:
    """Read the cache; a file that is not what this module writes is ignored (and replaced later)."""
    try:
        with open(_PATH, "rb") as file:
            loaded = marshal.loads(file.read())  # load(file) reads it piecemeal: 10x slower
    except (OSError, EOFError, ValueError, TypeError):
        return
    if isinstance(loaded, dict) and all(type(value) is bytes for value in loaded.values()):
        _cache.update(loaded)


def _cached_code(key: _Key) -> CodeType | None:
    cached = _cache.get(key)
    if cached is None:
        return None
    try:
        code = marshal.loads(cached)
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(code, CodeType):
        return None
    _used.add(key)
    return code


def _code(script: str, filename: str) -> CodeType:
    """``compile(script, filename, "exec")``, from the cache where ``filename`` is of a class cached."""
    if not any(owner in filename for owner in _CACHED):
        return _builtin_compile(script, filename, "exec")
    key = (filename, _HASH_SEED.sub(r"\1#,", script))
    code = _cached_code(key) or _compiled.get(key)
    if code is None:
        code = _compiled[key] = _builtin_compile(script, filename, "exec")
        if not sys.dont_write_bytecode and len(_compiled) == 1:
            atexit.register(save)
    return code


def _compile_and_eval(
    script: str,
    globs: dict[str, Any] | None,
    locs: Mapping[str, object] | None = None,
    filename: str = "",
) -> None:
    """attrs' own ``_compile_and_eval``, with the compiling cached."""
    eval(_code(script, filename), globs, locs)


_builtin_compile = builtins.compile


def _compile_while_attrs_imports(source: Any, filename: Any, mode: str, *args: Any, **kwargs: Any) -> Any:
    """``compile``, while attrs is being imported: its generated methods through ``_code``."""
    if (
        mode == "exec"
        and not args
        and not kwargs
        and type(source) is str
        and type(filename) is str
        and filename.startswith(_ATTRS_FILENAME)
    ):
        return _code(source, filename)
    return _builtin_compile(source, filename, mode, *args, **kwargs)


def _cpython() -> str:
    """``platform.python_implementation()`` of CPython (the only interpreter it stands in for)."""
    return "CPython"


def _signature_while_attrs_imports(obj: Any, *args: Any, **kwargs: Any) -> Any:
    """``inspect.signature``, while attrs is being imported: None (what attrs' ``_compat`` makes of
    a signature it cannot read: no annotations) where attrs asks it of a plain function that has no
    annotations, as its own ``validators`` do of a converter; else the real one (which imports
    ``inspect`` then). The answer attrs draws is the same: that function annotates nothing."""
    caller = sys._getframe(1).f_globals.get("__name__")
    plain = not args and not kwargs and type(obj) is FunctionType
    if caller == "attr._compat" and plain and not obj.__annotations__:
        return None
    real = sys.modules["inspect"]
    if isinstance(real, _Deferred) and "signature" in real.__dict__:
        del real.__dict__["signature"]  # from here on the real one: inspect runs now
    return real.signature(obj, *args, **kwargs)


#: Modules attrs imports but needs nothing of, or one answer that is known without them, for the
#: wire types: each put in ``sys.modules`` unexecuted (with those answers) until something else
#: uses it. ``tokenize`` (through ``linecache``) reads a real source file, for a traceback (~0.7 ms
#: of every one-shot command); of ``platform`` attrs asks only ``python_implementation()``, once, to
#: know whether it runs on PyPy (~1.2 ms, most of it compiling regular expressions); of ``inspect``
#: (with ``ast`` and ``dis``: ~36M instructions, ~6 ms) the signature of one converter of its own,
#: without annotations, and only while it is imported (``_import_attrs`` takes that answer back).
_DEFERRED_FOR_ATTRS: dict[str, dict[str, Any]] = {
    "tokenize": {},
    **({"platform": {"python_implementation": _cpython}} if sys.implementation.name == "cpython" else {}),
    "inspect": {"signature": _signature_while_attrs_imports},
}


class _Deferred(ModuleType):
    """A module whose code runs on the first use of a name it defines (and has not been given).

    Not ``importlib.util.LazyLoader``: its module loads on any attribute look-up, and an ``import``
    statement of a module already in ``sys.modules`` looks up ``__spec__`` (is it still
    initialising?), so the next ``import tokenize`` would load it at once. Here
    ``__getattr__`` runs only for names not in the namespace yet, and ``__spec__``, ``__name__``
    and the import system's other attributes are there from the start.
    """

    def __getattr__(self, name: str) -> Any:
        spec = self.__spec__
        if spec is None or spec.loader is None:
            raise AttributeError(name)
        with _deferred_lock:
            if type(self) is _Deferred:  # not run by another thread meanwhile
                self.__class__ = ModuleType
                try:
                    spec.loader.exec_module(self)
                except BaseException:
                    sys.modules.pop(spec.name, None)  # as a failed import leaves it
                    raise
        return getattr(self, name)


_deferred_lock = threading.RLock()


def _defer(name: str, known: dict[str, Any]) -> None:
    """Put ``name`` in ``sys.modules`` as a ``_Deferred`` module holding ``known`` (names whose
    values are the module's own, as it would define them), unless it is imported already or is not
    an ordinary module of source or bytecode. Whoever uses another name gets the real module then,
    at the cost its import would have had, and its own definitions of ``known`` too."""
    if name in sys.modules:
        return
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not isinstance(
        spec.loader, importlib.machinery.SourceFileLoader | importlib.machinery.SourcelessFileLoader
    ):
        return
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(known)
    module.__class__ = _Deferred
    sys.modules[name] = module


def defer_module(name: str) -> None:
    """``name`` in ``sys.modules`` unexecuted until a name of it is used (see ``_Deferred``): for a
    module that a library imports at its top and this process may never use (the API server runs
    pynng under trio, never its asyncio support)."""
    _defer(name, {})


#: Whether attrs was imported here (its own classes' methods from the cache), not before this
#: module: every module of ours that imports attrs imports this first (a test checks it per command).
imported_attrs = False


def _import_attrs() -> ModuleType:
    """``attr._make``, imported (if attrs is not yet) with its own classes' methods from the cache,
    and without executing ``_DEFERRED_FOR_ATTRS`` until something uses them."""
    global imported_attrs
    if "attr" in sys.modules:
        import attr._make

        return attr._make
    imported_attrs = True
    for name, known in _DEFERRED_FOR_ATTRS.items():
        _defer(name, known)
    builtins.compile = _compile_while_attrs_imports
    try:
        import attr._make
    finally:
        builtins.compile = _builtin_compile
        inspect = sys.modules.get("inspect")
        if isinstance(inspect, _Deferred):
            inspect.__dict__.pop("signature", None)  # the next caller gets the real one
    return attr._make


def save(*, everything_used: bool = False) -> None:
    """Write the cache with what this process compiled (quietly not, where it cannot).

    ``everything_used``: write exactly the entries this process used, dropping any other.
    """
    if not _compiled and not everything_used:
        return
    if everything_used or len(_cache) + len(_compiled) > _MAX_ENTRIES:
        kept = {key: _cache[key] for key in _used}
    else:
        kept = _cache
    entries = {**kept, **{key: marshal.dumps(code) for key, code in _compiled.items()}}
    tmp = f"{_PATH}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(_PATH), exist_ok=True)
        with open(tmp, "wb") as file:
            marshal.dump(entries, file)
        os.replace(tmp, _PATH)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _install() -> None:
    """Read the cache, import attrs with it, then take over attrs' compiling, if its internals are
    the ones this module was written for (else attrs is left to itself, and the cache unread)."""
    _load()
    make = _import_attrs()
    original = getattr(make, "_compile_and_eval", None)
    code = getattr(original, "__code__", None)
    if code is None or code.co_varnames[:4] != ("script", "globs", "locs", "filename"):
        _cache.clear()
        return
    make._compile_and_eval = _compile_and_eval


def write(modules: list[str]) -> None:
    """Define every wire type (and the attrs classes of ``modules``), then write the cache: for
    setups where Python writes no bytecode. Only what they define is kept."""
    import importlib

    for module in ["containerd_actors.protocol.codec", "containerd_actors.protocol.schema", *modules]:
        importlib.import_module(module)
    save(everything_used=True)


if __name__ == "__main__":
    from containerd_actors.protocol import attrs_code

    attrs_code.write(sys.argv[1:])
else:
    _install()
