"""OOM notification: a real container that exceeds its memory limit, and the v2 watcher on a fabricated
memory.events (this host's memory controller is on cgroup v1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import trio
from support.bundles import make_bundle
from support.runc import detached_container

from containerd_actors.host.cgroup_paths import CgroupGone, resolve_cgroup_paths
from containerd_actors.host.oom import watch_oom, watch_oom_v1, watch_oom_v2

MEMORY_LIMIT = 16 << 20


def swap_enabled() -> bool:
    with open("/proc/swaps") as f:
        return len(f.read().strip().splitlines()) > 1


needs_runc = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runc") is None, reason="needs root and runc to run containers"
)
needs_no_swap = pytest.mark.skipif(
    swap_enabled(), reason="swap is enabled: the container would swap instead of being OOM-killed"
)


@pytest.fixture(scope="module")
def oom_bundle(bundles_dir: Path) -> Path:
    # The shell waits for a line on stdin, so the watcher is armed before the allocation begins; busybox
    # tail then buffers /dev/zero looking for a newline that never comes.
    return make_bundle(bundles_dir / "oom", ["sh", "-c", "read x; tail /dev/zero"], memory_limit=MEMORY_LIMIT)


@pytest.fixture(scope="module")
def sleep_bundle_limited(bundles_dir: Path) -> Path:
    return make_bundle(bundles_dir / "sleep-limited", ["sleep", "1000000"], memory_limit=MEMORY_LIMIT)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def runc_async(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        ["runc", "--root", str(root), *args], capture_stdout=True, capture_stderr=True, check=False
    )


async def wait_running(root: Path, container_id: str) -> int:
    """The init pid once runc reports the container running; polled, since runc has no such event."""
    with trio.fail_after(20):
        while True:
            state = await runc_async(root, "state", container_id)
            if state.returncode == 0 and json.loads(state.stdout)["status"] == "running":
                return json.loads(state.stdout)["pid"]
            await trio.sleep(0.02)


@needs_runc
@needs_no_swap
async def test_oom_kill_is_notified_and_the_process_dies_with_137(runc_root: Path, oom_bundle: Path) -> None:
    container_id = f"oom-{uuid.uuid4().hex[:10]}"
    # Foreground `runc run` exits with the container's status (128 + SIGKILL). --keep: the cgroup
    # stays until the delete below, as the daemon deletes a container only after its init's exit
    # is handled. Without it runc removed the cgroup as the init died, and a watcher that woke
    # after that (a busy host) found one signal and no directory: the documented "reported as the
    # end" case, so the notification never came.
    with open(runc_root / "runc.stderr", "wb") as stderr:
        process = await trio.lowlevel.open_process(
            ["runc", "--root", str(runc_root), "run", "--keep", "--bundle", str(oom_bundle), container_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        paths = resolve_cgroup_paths(await wait_running(runc_root, container_id))
        assert paths.memory is not None
        notices, received = trio.open_memory_channel[None](16)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(watch_oom, paths, notices)
                assert process.stdin is not None
                await process.stdin.send_all(b"go\n")
                with trio.fail_after(20):
                    await received.receive()
                assert await process.wait() == 137
                deleted = await runc_async(runc_root, "delete", container_id)
                assert deleted.returncode == 0, deleted.stderr
            # The nursery closed because the watcher saw the cgroup go away with the container.
        extra = 0
        while True:
            try:
                received.receive_nowait()
                extra += 1
            except trio.WouldBlock:
                break
        assert extra <= 2, "one kill should not become a stream of notifications"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await runc_async(runc_root, "delete", "-f", container_id)


@needs_runc
async def test_watcher_ends_quietly_when_the_container_is_deleted(
    runc_root: Path, sleep_bundle_limited: Path
) -> None:
    fds_before = fd_count()
    with detached_container(runc_root, sleep_bundle_limited, "oom") as (container_id, pid):
        paths = resolve_cgroup_paths(pid)
        notified: list[None] = []
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: watch_oom(
                        paths, lambda: notified.append(None), v2_interval=0.05, task_status=task_status
                    )
                )
                deleted = await runc_async(runc_root, "delete", "-f", container_id)
                assert deleted.returncode == 0, deleted.stderr
        assert notified == []
        assert fd_count() == fds_before  # the eventfd is closed


@needs_runc
async def test_cancelled_watcher_closes_its_eventfd(runc_root: Path, sleep_bundle_limited: Path) -> None:
    with detached_container(runc_root, sleep_bundle_limited, "oom") as (_container_id, pid):
        paths = resolve_cgroup_paths(pid)
        fds_before = fd_count()
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_oom, paths, lambda: None)
            assert fd_count() == fds_before + (1 if paths.memory and paths.memory.version == 1 else 0)
            nursery.cancel_scope.cancel()
        assert fd_count() == fds_before


async def test_watching_a_missing_cgroup_raises_cgroup_gone(tmp_path: Path) -> None:
    with pytest.raises(CgroupGone):
        await watch_oom_v1(tmp_path / "absent", lambda: None)
    with pytest.raises(CgroupGone):
        await watch_oom_v2(tmp_path / "absent", lambda: None)


async def test_v2_watcher_reports_rising_oom_kills_until_the_cgroup_goes(tmp_path: Path) -> None:
    cgroup = tmp_path / "ctr"
    cgroup.mkdir()
    events = cgroup / "memory.events"

    def write(oom_kill: int) -> None:
        events.write_text(f"low 0\nhigh 0\nmax 5\noom 2\noom_kill {oom_kill}\noom_group_kill 0\n")

    write(2)  # kills before the watcher started are not news
    notices, received = trio.open_memory_channel[None](16)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: watch_oom_v2(cgroup, notices, interval=0.01, task_status=task_status)
            )
            await trio.sleep(0.05)
            assert received.statistics().current_buffer_used == 0
            write(3)
            await received.receive()
            write(5)  # two kills within one interval make one notification
            await received.receive()
            await trio.sleep(0.05)
            assert received.statistics().current_buffer_used == 0
            shutil.rmtree(cgroup)
        # returned on its own once memory.events was gone
