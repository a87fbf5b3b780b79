"""The README's ```console examples, run in order against a real daemon, so that they cannot drift.

One test per block, named by its line in README.md, sharing one daemon (later blocks use what earlier
ones started, as a reader typing them would). Each command runs in bash at the repository root, with
the checkout's ``actr`` and ``containerd-actors`` first on PATH and ``ACTR_ADDRESS`` naming the test's
daemon. Paths under /tmp in the README are bundles a reader makes; they are moved into a private
directory, in the commands and in the output expected of them. A command must exit 0 unless the
block shows its status with ``echo $?``. Blocks marked ``readme-test: skip`` are reported as skipped
with the README's reason; blocks marked ``readme-test: requires: criu`` are skipped with CRIU's own
reason where ``criu check`` fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support import criu, readme
from support.daemon import DaemonHandle, remove_containers, short_temp_dir, start_daemon, stop_daemon

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BLOCKS = readme.parse(README)
COMMAND_TIMEOUT_S = 30.0
# A reader's path under /tmp (`/tmp/busybox`), not the container's own /tmp (`--cwd /tmp`).
READER_TMP = re.compile(r"(?<![\w/.])/tmp/(?=\w)")


class SharedDaemon:
    """A daemon for the whole module, run by trio in a thread of its own (pytest-trio's fixtures live
    for one test), stopped, with every container it made deleted by id, when the module is done."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._handle: DaemonHandle | None = None
        self._error: BaseException | None = None
        self.left_behind: list[str] = []
        self._thread = threading.Thread(target=self._run, name="readme-daemon", daemon=True)

    def start(self) -> DaemonHandle:
        self._thread.start()
        self._ready.wait()
        if self._handle is None:
            raise RuntimeError("the daemon did not start") from self._error
        return self._handle

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        handle = await start_daemon(self.top / "state")
        self._handle = handle
        self._ready.set()
        try:
            await trio.to_thread.run_sync(self._stop.wait)
        finally:
            with trio.CancelScope(shield=True):
                remove_containers(handle.runc_root)
                self.left_behind = handle.runc_ids()
                await stop_daemon(handle)


@pytest.fixture(scope="module")
def workspace() -> Iterator[tuple[DaemonHandle, Path]]:
    top = short_temp_dir("ca-readme-")
    shared = SharedDaemon(top)
    handle = shared.start()
    try:
        yield handle, top / "tmp"
    finally:
        shared.stop()
        print(f"---- daemon log ({handle.log_path}) ----\n{handle.log_text()}")
        shutil.rmtree(top, ignore_errors=True)
    assert not shared.left_behind, f"containers left after deleting each by id: {shared.left_behind}"


def environment(handle: DaemonHandle) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    env = {key: value for key, value in os.environ.items() if not key.startswith("ACTR_")}
    return env | {
        "ACTR_ADDRESS": handle.address,
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        "LC_ALL": "C.UTF-8",
        "COLUMNS": "120",
    }


def criu_problem() -> str | None:
    """Why CRIU cannot checkpoint here, in CRIU's words; None when `criu check` is happy."""
    if shutil.which("criu") is None:
        return "criu is not installed (scripts/install-criu)"
    result = subprocess.run(["criu", "check"], capture_output=True, text=True)
    if result.returncode != 0:
        return f"criu check failed: {criu.last_error_line(result.stdout + result.stderr)}"
    return None


HOST_PROBLEMS = {"criu": criu_problem}


def block_id(block: readme.Block) -> str:
    return f"README.md:{block.line}"


def run_step(step: readme.Step, private_tmp: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    command = READER_TMP.sub(f"{private_tmp}/", step.command)
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    return result.returncode, result.stdout.splitlines()


def test_readme_has_runnable_examples() -> None:
    """The runner found the README's examples, so a renamed fence cannot silently turn it into a no-op."""
    runnable = [block for block in BLOCKS if block.skip is None]
    assert len(runnable) >= 4, BLOCKS
    commands = " ".join(step.command for block in runnable for step in block.steps)
    for must in ("containers start", "containers exec", "containers logs", "checkpoints", "events"):
        assert must in commands, f"no runnable README example of `actr {must}`"


@pytest.mark.parametrize("block", BLOCKS, ids=block_id)
def test_readme_block(block: readme.Block, workspace: tuple[DaemonHandle, Path]) -> None:
    if block.skip is not None:
        pytest.skip(f"README.md:{block.line}: {block.skip}")
    for need in block.requires:
        if need not in HOST_PROBLEMS:
            pytest.fail(f"README.md:{block.line}: unknown readme-test requirement {need!r}")
        problem = HOST_PROBLEMS[need]()
        if problem is not None:
            pytest.skip(f"README.md:{block.line} needs {need}: {problem}")
    handle, private_tmp = workspace
    private_tmp.mkdir(exist_ok=True)
    env = environment(handle)
    status = 0
    for index, step in enumerate(block.steps):
        expected = [READER_TMP.sub(f"{private_tmp}/", line) for line in step.expected]
        if step.asks_status:
            # Compared exactly: a status is no number that varies from run to run.
            assert [line.strip() for line in expected if line.strip()] == [str(status)], (
                f"README.md:{step.line}: the previous command exited {status}, the README shows {expected}"
            )
            continue
        status, output = run_step(step, private_tmp, env)
        next_asks_status = index + 1 < len(block.steps) and block.steps[index + 1].asks_status
        shown = "\n".join(output)
        if not next_asks_status:
            assert status == 0, f"README.md:{step.line}: `{step.command}` exited {status}:\n{shown}"
        assert readme.output_matches(expected, output), (
            f"README.md:{step.line}: `{step.command}` printed\n{shown}\n---- the README shows ----\n"
            + "\n".join(expected)
        )
