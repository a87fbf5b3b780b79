"""Which way imports run between the rooms of the tree (docs/ARCHITECTURE.md, "Import rules").

The rules keep a request's path one-way: ctl -> client -> transport -> protocol on the client side,
api -> supervisor -> container actor -> runc driver and host helpers on the daemon side. An AST scan
of every source module finds each import of ours (absolute or relative, at any depth of the module,
so an import inside a function counts too) and checks it against the rules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "containerd_actors"

#: For each room, the rooms of ours it may import (besides itself). Rooms are matched by the
#: longest prefix, so ``containerd_actors.daemon`` covers every actor package below it.
ALLOWED: dict[str, set[str]] = {
    "containerd_actors.protocol": set(),
    "containerd_actors.transport": {"containerd_actors.protocol"},
    "containerd_actors.client": {"containerd_actors.protocol", "containerd_actors.transport"},
    "ctl": {"containerd_actors.client"},
    "containerd_actors.host": {"containerd_actors.protocol"},
    "containerd_actors.runc": {"containerd_actors.host", "containerd_actors.protocol"},
    "containerd_actors.reaper": {"containerd_actors.host"},
    "containerd_actors.daemon": {
        "containerd_actors.protocol",
        "containerd_actors.transport",
        "containerd_actors.host",
        "containerd_actors.runc",
        "containerd_actors.reaper",
    },
}
#: The package's face: only its version string, importable from anywhere.
SHARED = {"containerd_actors"}

#: pynng's private C bindings: one mistake with them is a segfault, so they stay in one room.
PRIVATE_PYNNG = {"pynng.ffi", "pynng.lib", "pynng._nng"}
PRIVATE_PYNNG_ROOM = "containerd_actors.transport"


def source_modules() -> list[tuple[str, Path]]:
    modules = []
    for top in (PACKAGE, "ctl"):
        for path in sorted((REPO / top).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules.append((".".join(parts), path))
    return modules


def room_of(module: str) -> str | None:
    matches = [room for room in ALLOWED if module == room or module.startswith(room + ".")]
    return max(matches, key=len) if matches else None


def imported_names(module: str, path: Path) -> list[tuple[int, str]]:
    """Every module (and ``module.name`` for a from-import) this file imports, made absolute."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target in SHARED or not ours(target):
                # ``from containerd_actors import spawn``, ``from pynng import lib``: the names matter.
                found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
            found.append((node.lineno, target))
    return found


def ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".") or name == "ctl" or name.startswith("ctl.")


def violations() -> list[str]:
    problems = []
    for module, path in source_modules():
        room = room_of(module)
        where = path.relative_to(REPO)
        for line, name in imported_names(module, path):
            if name in PRIVATE_PYNNG and room != PRIVATE_PYNNG_ROOM:
                problems.append(f"{where}:{line}: {name} is pynng's private binding; only transport/ uses it")
            if (name == "rich" or name.startswith("rich.")) and room != "ctl":
                problems.append(f"{where}:{line}: only ctl/ renders with rich")
            if not ours(name) or room is None or name in SHARED:
                continue
            target_room = room_of(name)
            if target_room is None:
                # ``from containerd_actors import x``: judge by the submodule it names.
                continue
            if target_room == room or target_room in ALLOWED[room]:
                continue
            problems.append(f"{where}:{line}: {room} must not import {name}")
    return problems


def test_every_module_belongs_to_a_room() -> None:
    homeless = [m for m, _ in source_modules() if room_of(m) is None and m not in SHARED]
    assert not homeless, f"modules outside every room of the import rules: {homeless}"


def test_imports_run_one_way() -> None:
    problems = violations()
    assert not problems, "import rules broken:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("containerd_actors.protocol.codec", "from ..daemon import api", "containerd_actors.daemon"),
        ("containerd_actors.protocol", "from .codec import x", "containerd_actors.protocol.codec"),
        ("ctl.main", "import containerd_actors.runc.driver", "containerd_actors.runc.driver"),
    ],
)
def test_the_scan_resolves_relative_and_absolute_imports(
    tmp_path: Path, module: str, source: str, expected: str
) -> None:
    """The checker itself must see what it checks, or the rule test above proves nothing."""
    path = tmp_path / ("__init__.py" if module == "containerd_actors.protocol" else "m.py")
    path.write_text(source + "\n")
    assert expected in [name for _, name in imported_names(module, path)]


def test_a_broken_rule_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "containerd_actors" / "protocol"
    bad.mkdir(parents=True)
    (bad / "leak.py").write_text("from containerd_actors.daemon import api\nfrom pynng import lib\n")
    (tmp_path / "ctl").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    problems = violations()
    assert any("protocol must not import containerd_actors.daemon" in p for p in problems), problems
    assert any("pynng.lib is pynng's private binding" in p for p in problems), problems
