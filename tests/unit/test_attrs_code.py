"""``protocol.attrs_code``: attrs' generated methods come from the cache, and behave the same.

A fresh interpreter per case (the cache is read at import), on a private copy of the cache file, so
that the checkout's own file is neither read nor written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Defines a class the cache cannot know yet, then reports what the cache did and how it behaves.
PROBE = """
import json, sys
from containerd_actors.protocol import attrs_code
attrs_code._PATH = sys.argv[1]
attrs_code._CACHED = (" __main__.",)
attrs_code._cache.clear()
attrs_code._compiled.clear()  # attrs' own classes, defined as attrs_code imported it
attrs_code._used.clear()
attrs_code._load()
from attrs import frozen

@frozen
class Probe:
    a: int
    b: str = "x"

value = Probe(1)
print(json.dumps({
    "compiled": len(attrs_code._compiled),
    "from_cache": len(attrs_code._used),
    "repr": repr(value),
    "equal": value == Probe(1, "x") and value != Probe(2),
    "hashes_equal": hash(value) == hash(Probe(1)),
}))
"""


def probe(cache: Path, *, write: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if not write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(cache)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=True,
    )
    return json.loads(result.stdout)


def test_a_class_is_compiled_once_then_comes_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "attrs-code.marshal"
    first = probe(cache, write=True)
    assert first["compiled"] == 1 and first["from_cache"] == 0
    assert cache.exists()
    # Another process: string hashing (the seed of __hash__) differs, the cached code serves all the same.
    second = probe(cache, write=True)
    assert second["compiled"] == 0 and second["from_cache"] == 1
    for outcome in (first, second):
        assert outcome["repr"] == "Probe(a=1, b='x')"
        assert outcome["equal"] is True
        assert outcome["hashes_equal"] is True


def test_nothing_is_written_where_python_writes_no_bytecode(tmp_path: Path) -> None:
    cache = tmp_path / "attrs-code.marshal"
    assert probe(cache, write=False)["compiled"] == 1
    assert not cache.exists()


def test_a_file_it_did_not_write_is_ignored(tmp_path: Path) -> None:
    cache = tmp_path / "attrs-code.marshal"
    cache.write_bytes(b"not marshal at all")
    outcome = probe(cache, write=True)
    assert outcome["compiled"] == 1 and outcome["repr"] == "Probe(a=1, b='x')"


def test_attrs_own_classes_go_through_the_cache_when_it_is_imported_first() -> None:
    """attrs compiles methods of its own classes as it is imported; those are cached too."""
    code = (
        "import json\n"
        "from containerd_actors.protocol import attrs_code\n"
        "keys = [*attrs_code._used, *attrs_code._compiled]\n"
        "print(json.dumps(sum(' attr.' in filename for filename, _ in keys)))\n"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # the checkout's cache is read, not written
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, check=True
    )
    assert json.loads(result.stdout) > 10


#: Reports what a fresh interpreter's deferred modules are before and after their first real use.
DEFERRED_PROBE = """
import json, sys
from containerd_actors.protocol import attrs_code
kinds = lambda: {name: type(sys.modules[name]).__name__ for name in ("platform", "tokenize")}
before = kinds()
import platform, tokenize
known = platform.python_implementation()
still = kinds()
machine = platform.machine()
tokens = [t.string for t in tokenize.generate_tokens(iter(["a = 1\\n"]).__next__)][:3]
print(json.dumps({
    "before": before, "after_known": still, "after_use": kinds(), "implementation": known,
    "same_as_real": known == platform.python_implementation(), "machine": machine, "tokens": tokens,
    "attrs_works": attrs_code.imported_attrs,
}))
"""


def test_platform_and_tokenize_run_only_when_used_and_then_are_the_real_modules() -> None:
    """attrs imports them, for a PyPy check and tracebacks; ``python_implementation()`` is answered
    without running platform, any other name runs it (and its own answer is the same)."""
    result = subprocess.run(
        [sys.executable, "-c", DEFERRED_PROBE], capture_output=True, text=True, cwd=REPO, check=True
    )
    seen = json.loads(result.stdout)
    real = subprocess.run(
        [
            sys.executable,
            "-c",
            "import platform; print(platform.python_implementation(), platform.machine())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert seen["before"] == {"platform": "_Deferred", "tokenize": "_Deferred"}
    assert seen["after_known"] == {"platform": "_Deferred", "tokenize": "_Deferred"}
    assert seen["after_use"] == {"platform": "module", "tokenize": "module"}
    assert [seen["implementation"], seen["machine"]] == real
    assert seen["same_as_real"]
    assert seen["tokens"] == ["a", "=", "1"]
    assert seen["attrs_works"]


INSPECT_PROBE = """
import json, sys
from containerd_actors.protocol import attrs_code
import attrs
before = type(sys.modules["inspect"]).__name__
# attrs' own reading of converters still sees annotations (the real signature, inspect runs then)
def unannotated(value):
    return value
def annotated(value: int) -> str:
    return str(value)
plain_first = attrs.Converter(unannotated)._first_param_type
still = type(sys.modules["inspect"]).__name__
import inspect
signature = inspect.signature(unannotated)
first = attrs.Converter(annotated)._first_param_type
@attrs.define
class Thing:
    x = attrs.field(converter=annotated)
print(json.dumps({
    "before": before, "after_unannotated": still, "after_use": type(sys.modules["inspect"]).__name__,
    "signature": str(signature), "plain_first": repr(plain_first), "first": repr(first),
    "thing": Thing(3).x, "x_type": repr(Thing.__init__.__annotations__["x"]),
    "attrs_works": attrs_code.imported_attrs,
}))
"""


def test_inspect_runs_only_when_used_and_then_is_the_real_module() -> None:
    """attrs reads one converter's signature as it is imported, a function without annotations:
    that answer (none) is given without running inspect; after the import every caller, attrs'
    own included, gets the real ``inspect.signature``."""
    result = subprocess.run(
        [sys.executable, "-c", INSPECT_PROBE], capture_output=True, text=True, cwd=REPO, check=True
    )
    seen = json.loads(result.stdout)
    assert seen == {
        "before": "_Deferred",
        "after_unannotated": "module",  # after the import, attrs' question goes to the real one
        "after_use": "module",
        "signature": "(value)",
        "plain_first": "None",
        "first": "<class 'int'>",
        "thing": "3",
        "x_type": "<class 'int'>",
        "attrs_works": True,
    }
