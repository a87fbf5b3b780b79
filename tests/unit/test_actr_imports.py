"""What ``actr`` imports to run a one-shot command: no trio, no rich, no pynng package.

A one-shot command's time is mostly its imports (scripts/bench_cli.py measures it), and a single
module-level ``import trio`` anywhere on the path would add ~50 ms to every command without any
test failing. So a fresh interpreter imports ``ctl.main``, parses a command line of each one-shot
command, and reports what got imported; the streaming commands are the control, showing that the
check sees trio when it is there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynng
import pytest
from support.rep_server import server

from containerd_actors import protocol as wire
from containerd_actors.protocol.stats import CounterSnapshot

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
    ["containers", "exec", "--id", "web", "-a", "--", "true"],
    ["containers", "start", "-a", "web", "/tmp/bundle"],
    ["containers", "logs", "--tail", "3", "web"],
    ["containers", "logs", "-f", "web"],
    ["checkpoints", "web"],
    ["checkpoints", "create", "web", "cp1"],
    ["checkpoints", "delete", "web", "cp1"],
    ["metrics"],
    ["metrics", "--prometheus"],
]


def imported_after(argv: list[str], *, run: bool, check: bool = True, modules: bool = False) -> list[str]:
    """The packages (or with ``modules``, the modules) a fresh ``actr`` has imported after parsing
    ``argv`` (and running it).

    With ``run``, the command must succeed: its stdout (a pipe) gets what it prints.
    """
    code = (
        "import json, sys\n"
        "import ctl.main\n"
        "from ctl import checkpoints\n"
        f"argv = {argv!r}\n"
        "args = ctl.main.build_parser().parse_args(checkpoints.original_form(argv))\n"
        f"if {run!r}:\n"
        "    code = ctl.main.run(args)\n"
        f"    assert code == 0 or not {check!r}, code\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    # Without these, rich styles even a pipe, so actr hands such tables to rich (see ctl.render).
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=True,
    )
    loaded = json.loads(result.stdout.splitlines()[-1])
    if modules:
        return loaded
    return sorted({name.split(".")[0] for name in loaded if not name.startswith(BINDINGS)})


def canned_reply(request: Any) -> Any:
    """What a daemon with one running container, ``web``, would answer (enough to render)."""
    process = wire.ProcessInfo(42, ["sleep", "1000"], ["PATH=/bin"], "/", wire.User())
    web = wire.ContainerInfo("web", "/tmp/bundle", "running", 42, [process])
    snapshot = wire.MetricsSnapshot(timestamp=0.0, counters=[CounterSnapshot("events", count=3)])
    replies: dict[type, Any] = {
        wire.State: lambda r: wire.StateReply(r.request_id, [web], wire.MachineInfo("m", 2, 1 << 30)),
        wire.Signal: lambda r: wire.SignalReply(r.request_id),
        wire.UpdateContainer: lambda r: wire.UpdateContainerReply(r.request_id),
        wire.CreateContainer: lambda r: wire.CreateContainerReply(r.request_id, 43),
        wire.AddProcess: lambda r: wire.AddProcessReply(r.request_id, 44),
        wire.Ping: lambda r: wire.PingReply(
            r.request_id, "d", "0", "ipc:///nowhere", 0, 0, protocol_version=wire.PROTOCOL_VERSION
        ),
        wire.ReadOutput: lambda r: wire.ReadOutputReply(
            r.request_id, b"", b"", 0, 0, 0, 0, exited=True, status=0
        ),
        wire.WriteInput: lambda r: wire.WriteInputReply(r.request_id, 0),
        wire.ListCheckpoints: lambda r: wire.ListCheckpointsReply(
            r.request_id, [wire.Checkpoint("cp1", False, False, False, False, 0.0)]
        ),
        wire.CreateCheckpoint: lambda r: wire.CreateCheckpointReply(
            r.request_id, wire.Checkpoint("cp1", False, False, False, False, 0.0)
        ),
        wire.DeleteCheckpoint: lambda r: wire.DeleteCheckpointReply(r.request_id),
        wire.Metrics: lambda r: wire.MetricsReply(r.request_id, snapshot),
    }
    return replies[type(request)](request)


@pytest.fixture(scope="module")
def daemon_address() -> Iterator[str]:
    """A Rep0 answering every one-shot request with ``canned_reply``, in a thread."""
    address = f"ipc:///tmp/actr-imports-test-{threading.get_native_id()}.sock"

    def answer(socket: pynng.Rep0, request: bytes) -> None:
        socket.send(wire.encode_reply(canned_reply(wire.decode_request(request))))

    try:
        with server(address, answer):
            yield address
    finally:
        Path(address.removeprefix("ipc://")).unlink(missing_ok=True)


@pytest.mark.parametrize("argv", ONE_SHOT, ids=" ".join)
def test_a_one_shot_command_imports_no_trio_nor_rich(argv: list[str], daemon_address: str) -> None:
    """Through the request and the rendering of its reply (to a pipe, as in a script)."""
    loaded = imported_after(["--address", daemon_address, *argv], run=True)
    assert "containerd_actors" in loaded  # it did get as far as the client
    assert [name for name in HEAVY if name in loaded] == []


@pytest.mark.parametrize("argv", [argv for argv in ONE_SHOT if "--json" not in argv], ids=" ".join)
def test_a_one_shot_command_imports_no_cattrs(argv: list[str], daemon_address: str) -> None:
    """Its requests and replies go through ``protocol.plain_codec`` (~20 ms less); only ``--json``
    renderings, and a message the plain codec is not sure of, still need the converter."""
    loaded = imported_after(["--address", daemon_address, *argv], run=True)
    assert "containerd_actors" in loaded
    assert "cattrs" not in loaded


#: Modules no one-shot command needs: ctypes serves a stream of big frames (``transport.memory``),
#: secrets (with hmac, OpenSSL's hashlib and random: ~4 ms) once made ``OrderedInput``'s writer id;
#: base64 (~1.6M instructions) only bytes that are not empty (``plain_hooks``: exec -a's EOF and an
#: empty read are "").
UNNEEDED = ("ctypes", "secrets", "hashlib", "random", "base64")


@pytest.mark.parametrize("argv", [argv for argv in ONE_SHOT if "--json" not in argv], ids=" ".join)
def test_a_one_shot_command_runs_neither_ctypes_nor_tokenize_nor_platform_nor_inspect(
    argv: list[str], daemon_address: str
) -> None:
    """ctypes serves only a stream of big frames (``transport.memory``, ~1.3 ms); tokenize,
    platform and inspect, which attrs imports, only a traceback's source lines, a PyPy check whose
    answer is known, and the signature of a converter without annotations (``attrs_code`` defers
    them, ~2 ms and ~15M instructions).
    And attrs itself was imported by ``attrs_code`` (its own ~30 methods from the cache, ~3 ms):
    ``containers state``, ``checkpoints`` and ``metrics`` once imported it before, by way of
    ``protocol.replies``."""
    loaded = imported_after(["--address", daemon_address, *argv], run=True, modules=True)
    assert [name for name in UNNEEDED if name in loaded] == []
    ran = ran_after(["--address", daemon_address, *argv])
    assert ran == {"attrs_code imported attrs": True, "tokenize": False, "platform": False, "inspect": False}


def ran_after(argv: list[str]) -> dict[str, bool]:
    """After running ``argv``: whether ``attrs_code`` imported attrs, and whether tokenize and
    platform ran."""
    code = (
        "import json, sys\n"
        "import ctl.main\n"
        "from ctl import checkpoints\n"
        f"args = ctl.main.build_parser().parse_args(checkpoints.original_form({argv!r}))\n"
        "assert ctl.main.run(args) == 0\n"
        "from containerd_actors.protocol import attrs_code\n"
        "ran = lambda name: name in sys.modules and type(sys.modules[name]).__name__ != '_Deferred'\n"
        "print(json.dumps({'attrs_code imported attrs': attrs_code.imported_attrs,\n"
        "                  'tokenize': ran('tokenize'), 'platform': ran('platform'),\n"
        "                  'inspect': ran('inspect')}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


#: Wire types that a command defines only when it sends or reads one of them (``protocol.lazy``).
LATER_WIRE_MODULES = (
    "containerd_actors.protocol.migration",
    "containerd_actors.protocol.stats",
    "containerd_actors.protocol.events",
)


@pytest.mark.parametrize("argv", [argv for argv in ONE_SHOT if "--json" not in argv], ids=" ".join)
def test_a_one_shot_command_defines_only_the_wire_types_it_uses(argv: list[str], daemon_address: str) -> None:
    """Migration, stats and event classes cost ~7 ms to define: only ``metrics`` reads stats.
    (``--json`` renders with the converter, which knows every type.)"""
    loaded = imported_after(["--address", daemon_address, *argv], run=True, modules=True)
    assert "containerd_actors.protocol.replies" in loaded
    needed = {"containerd_actors.protocol.stats"} if argv[0] == "metrics" else set()
    assert {name for name in LATER_WIRE_MODULES if name in loaded} == needed


@pytest.mark.parametrize("argv", [argv for argv in ONE_SHOT if "--json" not in argv], ids=" ".join)
def test_a_one_shot_command_defines_no_request_class(argv: list[str], daemon_address: str) -> None:
    """Its requests are written from their fields (``plain_requests``: the same bytes and checks),
    so the ~16 request classes are never defined (~20M instructions); the replies are read as
    their classes."""
    loaded = imported_after(["--address", daemon_address, *argv], run=True, modules=True)
    assert "containerd_actors.protocol.replies" in loaded
    assert "containerd_actors.protocol.requests" not in loaded


SENT_EARLY = [
    (["containers", "exec", "--id", "web", "-a", "--", "true"], "AddProcess"),
    (["containers", "exec", "--id", "web", "--", "true"], "AddProcess"),
    (["--json", "containers", "exec", "--id", "web", "--", "true"], "AddProcess"),
    (["containers", "start", "web", "/tmp/bundle"], "CreateContainer"),
    (["containers", "start", "-a", "web", "/tmp/bundle"], "CreateContainer"),
]


@pytest.mark.parametrize(("argv", "kind"), SENT_EARLY, ids=[" ".join(argv) for argv, _ in SENT_EARLY])
def test_exec_and_start_send_their_request_before_attrs_and_the_wire_classes(
    argv: list[str], kind: str, daemon_address: str
) -> None:
    """The daemon's ``runc exec`` or ``runc run`` and the import of attrs and the wire classes
    (~20 ms) overlap (``client.early``): the request is on its way first. Without a terminal,
    ``-a`` also never imports trio (``ctl.attach_blocking``), nor ``signal`` (its IntEnums: ~3M
    instructions; the parser of the chosen group only, as ``actr`` builds it)."""
    argv = ["--address", daemon_address, *argv]
    code = (
        "import json, sys\n"
        "import ctl.main\n"
        "from containerd_actors.transport import blocking\n"
        "first = []\n"
        "send = blocking.BlockingRequestSocket._send\n"
        "def noting(self, body, deadline):\n"
        "    if not first:\n"
        "        first.append([json.loads(body)['type'],\n"
        "                      sorted(m for m in ('attrs', 'containerd_actors.protocol.requests',\n"
        "                             'containerd_actors.protocol.replies',\n"
        "                             'containerd_actors.client.calls') if m in sys.modules)])\n"
        "    return send(self, body, deadline)\n"
        "blocking.BlockingRequestSocket._send = noting\n"
        f"argv = {argv!r}\n"
        "args = ctl.main.build_parser(ctl.main.chosen_group(argv)).parse_args(argv)\n"
        "assert ctl.main.run(args) == 0\n"
        "print(json.dumps([first[0], [m for m in ('trio', 'signal') if m in sys.modules]]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    (sent, imported), later = json.loads(result.stdout.splitlines()[-1])
    assert (sent, imported, later) == (kind, [], [])


def test_parsing_alone_imports_neither_the_codec_nor_attrs() -> None:
    """``actr --help``, ``-v`` and usage errors cost the parser only."""
    loaded = imported_after(["--address", ADDRESS, "containers", "kill", "web"], run=False)
    assert [name for name in (*HEAVY, "cattrs", "attr", "attrs") if name in loaded] == []


@pytest.mark.parametrize("argv", [["events"]], ids=["events"])
def test_a_stream_does_run_under_trio(argv: list[str]) -> None:
    """The control: the check sees trio where a command needs it (here it fails to connect)."""
    assert "trio" in imported_after(["--address", ADDRESS, *argv], run=True, check=False)


@pytest.mark.parametrize("catalogues", ["missing", "present"])
def test_argparse_messages_are_looked_up_only_where_catalogues_are(catalogues: str, tmp_path: Path) -> None:
    """Without a directory of catalogues, every message is its own translation: no lookups, no
    ``locale``; with one, each message is looked up (once), as gettext would."""
    where = tmp_path / "locale"
    if catalogues == "present":
        where.mkdir()
    code = (
        "import argparse, gettext, json, sys\n"
        f"gettext._default_localedir = {str(where)!r}\n"
        "import ctl.main\n"
        "ctl.main.build_parser().parse_args(['containers', 'state', 'web'])\n"
        "print(json.dumps([argparse._ is ctl.main._untranslated, 'locale' in sys.modules]))\n"
    )
    env = {**os.environ, "LANG": "C.UTF-8"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, check=True
    )
    untranslated, imported_locale = json.loads(result.stdout)
    assert untranslated is (catalogues == "missing")
    assert imported_locale is (catalogues == "present")
