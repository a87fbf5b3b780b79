"""The runc driver against the real runc: every container runs under a private ``--root`` in a temp
dir and is force-deleted by id when the test ends (the ``runc_root`` fixture)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support.bundles import make_bundle
from support.criu import criu_path, last_error_line
from support.daemon import unique_id

from containerd_actors.host.cgroup_paths import resolve_cgroup_paths
from containerd_actors.host.fds import close_quietly
from containerd_actors.runc.driver import CriuOptions, Runc, RuncError, RuncTimeout, Stdio

#: Container ids: runc names each container's cgroups after its id, machine-wide, so two test runs
#: on one machine must never share one (a fixed id let ``runc ps`` list another run's processes).
DRIVER_RUN = unique_id("driver-run")
DRIVER_HANG = unique_id("driver-hang")
DRIVER_SILENT = unique_id("driver-silent")
DRIVER_CR_FAIL = unique_id("driver-cr-fail")
DRIVER_CR = unique_id("driver-cr")
DRIVER_LIST = unique_id("driver-list")
DRIVER_CREATED = unique_id("driver-created")
DRIVER_BAD = unique_id("driver-bad")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runc") is None, reason="needs root and runc to run containers"
)


@pytest.fixture(scope="module")
def sleep_forever(bundles_dir: Path) -> Path:
    return make_bundle(bundles_dir / "driver-sleep", ["sleep", "1000000"])


@pytest.fixture
def null_stdio() -> Iterator[Stdio]:
    fds = [os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC) for _ in range(3)]
    yield Stdio(*fds)
    close_quietly(*fds)


def runc_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runc", "--root", str(root), *args], capture_output=True, text=True, check=False)


def runc_state(root: Path, container_id: str) -> dict[str, object] | None:
    """What ``runc state`` says, read with the CLI so that the driver is not checked by itself."""
    result = runc_cli(root, "state", container_id)
    return json.loads(result.stdout) if result.returncode == 0 else None


def frozen(pid: int) -> bool:
    """Whether the container's freezer cgroup is frozen, read from cgroupfs (v1 or v2)."""
    paths = resolve_cgroup_paths(pid)
    if "freezer" in paths.v1_dirs:
        return (paths.v1_dirs["freezer"] / "freezer.state").read_text().strip() == "FROZEN"
    assert paths.unified is not None, "no freezer: neither a v1 freezer nor a cgroup2 directory"
    return (paths.unified / "cgroup.freeze").read_text().strip() == "1"


async def start(runc: Runc, container_id: str, bundle: Path, stdio: Stdio, work: Path) -> int:
    return await runc.run_detached(
        container_id, bundle, work / f"{container_id}.pid", work / f"{container_id}.log", stdio
    )


async def test_run_detached_exec_pause_resume_delete(
    runc_root: Path, sleep_forever: Path, null_stdio: Stdio, tmp_path: Path
) -> None:
    runc = Runc(runc_root)
    pid = await start(runc, DRIVER_RUN, sleep_forever, null_stdio, tmp_path)
    state = runc_state(runc_root, DRIVER_RUN)
    assert state is not None and state["status"] == "running" and state["pid"] == pid

    # exec -d: the process inherits the given stdio, so its output arrives in our pipe.
    process_file = tmp_path / "process.json"
    process_file.write_text(
        json.dumps(
            {"args": ["echo", "from exec"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
        )
    )
    out_read, out_write = os.pipe()
    try:
        exec_pid = await runc.exec_detached(
            DRIVER_RUN,
            process_file,
            tmp_path / "exec.pid",
            tmp_path / "exec.log",
            Stdio(null_stdio.stdin, out_write, null_stdio.stderr),
        )
        assert exec_pid > 0 and exec_pid != pid
        os.close(out_write)
        out_write = -1
        with trio.fail_after(10):
            await trio.lowlevel.wait_readable(out_read)
        assert os.read(out_read, 100) == b"from exec\n"
    finally:
        close_quietly(out_read, out_write)

    await runc.pause(DRIVER_RUN)
    assert runc_state(runc_root, DRIVER_RUN)["status"] == "paused"  # type: ignore[index]
    assert frozen(pid)
    await runc.resume(DRIVER_RUN)
    assert runc_state(runc_root, DRIVER_RUN)["status"] == "running"  # type: ignore[index]
    assert not frozen(pid)

    with pytest.raises(RuncError) as refused:
        await runc.delete(DRIVER_RUN)  # without force, runc refuses a running container
    assert refused.value.command == "delete" and "running" in refused.value.message
    await runc.delete(DRIVER_RUN, force=True)
    assert runc_state(runc_root, DRIVER_RUN) is None


async def test_a_bad_bundle_fails_with_runcs_own_message(
    runc_root: Path, bundles_dir: Path, null_stdio: Stdio, tmp_path: Path
) -> None:
    bundle = make_bundle(bundles_dir / "driver-bad", ["/no/such/binary"])
    with pytest.raises(RuncError) as failed:
        await start(Runc(runc_root), DRIVER_BAD, bundle, null_stdio, tmp_path)
    assert failed.value.command == "run" and failed.value.returncode != 0
    # runc's error, from its JSON log: it names the missing binary.
    assert "/no/such/binary" in failed.value.message, failed.value.message
    assert not isinstance(failed.value, RuncTimeout)


@pytest.fixture
def hanging_runc(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A stand-in for runc that never answers; it writes its pid so the test can see it reaped."""
    pid_file = tmp_path / "stand-in.pid"
    script = tmp_path / "hanging-runc"
    script.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 1000\n")
    script.chmod(0o755)
    yield script, pid_file
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), 9)
        except (ProcessLookupError, ValueError):
            pass


@pytest.mark.parametrize("command", ["run", "pause"])
async def test_a_runc_that_hangs_times_out_and_is_reaped(
    command: str, hanging_runc: tuple[Path, Path], sleep_forever: Path, null_stdio: Stdio, tmp_path: Path
) -> None:
    script, pid_file = hanging_runc
    runc = Runc(tmp_path / "root", binary=str(script), timeout=0.5)
    with trio.fail_after(10), pytest.raises(RuncTimeout) as timed_out:
        if command == "run":
            await start(runc, DRIVER_HANG, sleep_forever, null_stdio, tmp_path)
        else:
            await runc.pause(DRIVER_HANG)
    assert timed_out.value.command == command
    assert "0.5 s" in timed_out.value.message
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left as a zombie
        os.kill(int(pid_file.read_text()), 0)


def stand_in_runc(tmp_path: Path, body: str) -> Path:
    """A script given as the runc binary: it sees runc's arguments and does only ``body``."""
    script = tmp_path / "stand-in-runc"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return script


#: Creates its log file (``--log FILE``) and leaves it empty.
EMPTY_LOG = """while [ "$1" != --log ]; do shift; done
: > "$2"
"""
#: Writes one line of runc's JSON log to the file after ``--log``, as runc does before it fails.
LOGS_A_FATAL_LINE = """while [ "$1" != --log ]; do shift; done
printf '{"level":"fatal","msg":"runc run failed: cannot allocate tty"}\\n' > "$2"
exit 1"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (EMPTY_LOG + "exit 1", "runc exited with status 1 and wrote nothing to {log}"),
        ("kill -KILL $$", "runc was killed by SIGKILL and left no log at {log} (No such file or directory)"),
        (LOGS_A_FATAL_LINE, "cannot allocate tty"),
    ],
)
async def test_a_failed_start_says_what_is_known_and_runc_s_reason_once(
    body: str, expected: str, sleep_forever: Path, null_stdio: Stdio, tmp_path: Path
) -> None:
    runc = Runc(tmp_path / "root", binary=str(stand_in_runc(tmp_path, body)))
    with pytest.raises(RuncError) as failed:
        await start(runc, DRIVER_SILENT, sleep_forever, null_stdio, tmp_path)
    assert failed.value.message == expected.format(log=tmp_path / f"{DRIVER_SILENT}.log")
    assert str(failed.value).count("runc run failed") == 1, str(failed.value)


async def test_a_silent_failure_of_a_captured_command_gives_its_status(tmp_path: Path) -> None:
    runc = Runc(tmp_path / "root", binary=str(stand_in_runc(tmp_path, "exit 3")))
    with pytest.raises(RuncError) as failed:
        await runc.pause(DRIVER_SILENT)
    assert failed.value.message == "runc exited with status 3 and printed nothing"


@pytest.fixture(scope="module")
def criu_works() -> None:
    result = subprocess.run([criu_path(), "check"], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.skip(f"criu check failed: {last_error_line(result.stdout + result.stderr)}")


async def test_checkpoint_and_restore(
    criu_works: None, runc_root: Path, sleep_forever: Path, tmp_path: Path
) -> None:
    """CRIU maps the recorded stdio pipes onto the restoring runc's fds 0-2, as the daemon does."""
    runc = Runc(runc_root)
    pipes = [os.pipe() for _ in range(3)]
    child_ends = Stdio(pipes[0][0], pipes[1][1], pipes[2][1])
    try:
        await start(runc, DRIVER_CR, sleep_forever, child_ends, tmp_path)
        images = tmp_path / "images"
        await runc.checkpoint(DRIVER_CR, images, tmp_path / "dump-work", CriuOptions(), leave_running=False)
        assert (images / "inventory.img").is_file()
        assert runc_state(runc_root, DRIVER_CR) is None  # the dump ended the container

        restored = await runc.restore_detached(
            DRIVER_CR,
            sleep_forever,
            images,
            tmp_path / "restore-work",
            tmp_path / "restore.pid",
            tmp_path / "restore.log",
            child_ends,
            CriuOptions(),
        )
        state = runc_state(runc_root, DRIVER_CR)
        assert state is not None and state["status"] == "running" and state["pid"] == restored
    finally:
        close_quietly(*(fd for pair in pipes for fd in pair))


async def test_a_failed_checkpoint_carries_criu_s_reason(
    criu_works: None, runc_root: Path, sleep_forever: Path, null_stdio: Stdio, tmp_path: Path
) -> None:
    """A unix socket to the host as stdin is an external socket, which CRIU refuses without --ext-unix-sk."""
    runc = Runc(runc_root)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        stdio = Stdio(theirs.fileno(), null_stdio.stdout, null_stdio.stderr)
        await start(runc, DRIVER_CR_FAIL, sleep_forever, stdio, tmp_path)
    with pytest.raises(RuncError) as failed:
        await runc.checkpoint(DRIVER_CR_FAIL, tmp_path / "images", tmp_path / "work", CriuOptions(), False)
    # runc itself only says "criu failed"; the reason comes from the tail of CRIU's dump log.
    assert failed.value.command == "checkpoint" and "; criu: " in failed.value.message
    assert "Dumping FAILED" in failed.value.message, failed.value.message


def test_restore_repeats_the_checkpoints_switches_except_shell_job() -> None:
    options = CriuOptions(tcp_established=True, ext_unix_sk=True, shell_job=True)
    assert options.checkpoint_flags() == ["--tcp-established", "--ext-unix-sk", "--shell-job"]
    assert options.restore_flags() == ["--tcp-established", "--ext-unix-sk"]
    assert CriuOptions().checkpoint_flags() == CriuOptions().restore_flags() == []


async def test_list_ps_and_the_runc_commands_working_under_the_root(
    runc_root: Path, sleep_forever: Path, null_stdio: Stdio, tmp_path: Path
) -> None:
    """What the start-up reconcile reads: runc's containers, their processes, and runc still at work."""
    runc = Runc(runc_root)
    assert await runc.list() == []
    pid = await start(runc, DRIVER_LIST, sleep_forever, null_stdio, tmp_path)
    # Its stdio must not be pipes we read: the waiting "runc init" holds them.
    created = subprocess.run(
        ["runc", "--root", str(runc_root), "create", "--bundle", str(sleep_forever), DRIVER_CREATED],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    assert created.returncode == 0
    listed = {c.id: (c.status, c.bundle) for c in await runc.list()}
    assert listed == {
        DRIVER_LIST: ("running", str(sleep_forever)),
        DRIVER_CREATED: ("created", str(sleep_forever)),
    }
    assert [c.pid for c in await runc.list() if c.id == DRIVER_LIST] == [pid]
    assert await runc.ps(DRIVER_LIST) == [pid]

    assert runc.working_processes() == []
    # A runc command that keeps working: a foreground exec, as a killed server's runc run would.
    working = subprocess.Popen(
        ["runc", "--root", str(runc_root), "exec", DRIVER_LIST, "sleep", "1000"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(10):
            while runc.working_processes() != [working.pid]:
                await trio.sleep(0.01)  # runc's own children ("runc init") do not name the root
            while len(await runc.ps(DRIVER_LIST)) != 2:
                await trio.sleep(0.01)  # the init, and the exec'd sleep once runc has started it
        assert Runc(tmp_path / "other-root").working_processes() == []
    finally:
        working.kill()
        working.wait()
