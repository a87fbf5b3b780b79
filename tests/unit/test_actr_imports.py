"""What ``actr`` imports before it runs a one-shot command: no trio, no rich, no pynng package.

A one-shot command's time is mostly its imports (scripts/bench_cli.py measures it), and a single
module-level ``import trio`` anywhere on the path would add ~50 ms to every command without any
test failing. So a fresh interpreter imports ``ctl.main``, parses a command line of each one-shot
command, and reports what got imported; the streaming commands are the control, showing that the
check sees trio when it is there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ADDRESS = "ipc:///tmp/actr-imports-test-nothing-here.sock"

#: Packages a one-shot command must not import: trio and pynng's package (which imports asyncio)
#: belong to the streams, rich to the terminal and the live tables. pynng's compiled bindings
#: (``pynng._nng`` and the ``pynng._nng.lib`` cffi registers) are what the blocking client calls.
HEAVY = ("trio", "rich", "pynng", "asyncio")
BINDINGS = "pynng._nng"

ONE_SHOT = [
    ["containers"],
    ["--json", "containers", "list"],
    ["containers", "state", "web"],
    ["containers", "kill", "-s", "KILL", "web"],
    ["containers", "pause", "web"],
    ["containers", "resume", "web"],
    ["containers", "start", "web", "/tmp/bundle"],
    ["containers", "exec", "--id", "web", "--", "true"],
    ["containers", "logs", "--tail", "3", "web"],
    ["checkpoints", "web"],
    ["checkpoints", "create", "web", "cp1"],
    ["checkpoints", "delete", "web", "cp1"],
    ["metrics"],
    ["metrics", "--prometheus"],
]


def imported_after(argv: list[str], *, run: bool) -> list[str]:
    """The packages a fresh ``actr`` has imported after parsing ``argv`` (and running it).

    Running it against an address where nothing listens goes through the whole command path up
    to the dial, which fails at once.
    """
    code = (
        "import json, sys\n"
        "import ctl.main\n"
        "from ctl import checkpoints\n"
        f"argv = {argv!r}\n"
        "args = ctl.main.build_parser().parse_args(checkpoints.original_form(argv))\n"
        f"if {run!r}:\n"
        "    ctl.main.run(args)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60, check=True
    )
    modules = json.loads(result.stdout.splitlines()[-1])
    return sorted({name.split(".")[0] for name in modules if not name.startswith(BINDINGS)})


@pytest.mark.parametrize("argv", ONE_SHOT, ids=" ".join)
def test_a_one_shot_command_imports_no_trio_nor_rich(argv: list[str]) -> None:
    loaded = imported_after(["--address", ADDRESS, *argv], run=True)
    assert "containerd_actors" in loaded  # it did get as far as the client
    assert [name for name in HEAVY if name in loaded] == []


def test_parsing_alone_imports_neither_the_codec_nor_attrs() -> None:
    """``actr --help``, ``-v`` and usage errors cost the parser only."""
    loaded = imported_after(["--address", ADDRESS, "containers", "kill", "web"], run=False)
    assert [name for name in (*HEAVY, "cattrs", "attr", "attrs") if name in loaded] == []


@pytest.mark.parametrize("argv", [["events"], ["containers", "logs", "-f", "web"]], ids=["events", "logs -f"])
def test_a_stream_does_run_under_trio(argv: list[str]) -> None:
    """The control: the check sees trio where a command needs it."""
    assert "trio" in imported_after(["--address", ADDRESS, *argv], run=True)
