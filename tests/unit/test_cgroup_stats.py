"""Reading container statistics from cgroupfs: real runc containers on this host, and fabricated v1 and v2
trees for the layouts this host does not have (a pure v2 host, a bind-mounted subtree)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
import trio
from support.bundles import make_bundle
from support.runc import detached_container, runc

from containerd_actors.host.cgroup_paths import (
    CgroupGone,
    cgroup_paths_from,
    parse_cgroup_mounts,
    parse_proc_cgroup,
    proc_cgroup_of_dirs,
    read_cgroup_mounts,
    resolve_cgroup_paths,
)
from containerd_actors.host.cgroup_stats import read_cgroup_stats, sample_container, stream_stats
from containerd_actors.protocol import stats as wire
from containerd_actors.protocol.codec import converter
from containerd_actors.protocol.schema import class_schema
from containerd_actors.runc.state_file import cgroup_dirs

MEMORY_LIMIT = 64 << 20
NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")

needs_runc = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runc") is None, reason="needs root and runc to run containers"
)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


# --------------------------------------------------------------------------- parsing


def test_parse_mounts_and_proc_cgroup_of_a_hybrid_host() -> None:
    mountinfo = (
        "25 1 0:23 / / rw - ext4 /dev/vda rw\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 /docker/abc /mnt/my\\040cgroups rw - cgroup cgroup rw,memory\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    mounts = parse_cgroup_mounts(mountinfo)
    assert [(str(m.mount_point), m.root, m.version) for m in mounts] == [
        ("/sys/fs/cgroup/cpu,cpuacct", "/", 1),
        ("/mnt/my cgroups", "/docker/abc", 1),
        ("/sys/fs/cgroup/systemd", "/", 1),
        ("/sys/fs/cgroup/unified", "/", 2),
    ]
    assert {"cpu", "cpuacct"} <= mounts[0].options
    assert "name=systemd" in mounts[2].options

    v1, unified = parse_proc_cgroup(
        "9:name=systemd:/user.slice\n2:cpu,cpuacct:/ctr\n4:memory:/docker/abc/ctr\n0::/ctr\n"
    )
    assert v1 == {
        "name=systemd": "/user.slice",
        "cpu": "/ctr",
        "cpuacct": "/ctr",
        "memory": "/docker/abc/ctr",
    }
    assert unified == "/ctr"
    assert parse_proc_cgroup("0::/system.slice/x.service\n") == ({}, "/system.slice/x.service")


def test_fabricated_v1_tree_with_a_bind_mounted_subtree(tmp_path: Path) -> None:
    cpu_mount, memory_mount = tmp_path / "cpu,cpuacct", tmp_path / "mem"
    write_tree(
        cpu_mount / "ctr",
        {
            "cpuacct.usage": "300\n",
            "cpuacct.usage_percpu": "100 200 \n",
            "cpuacct.stat": "user 2\nsystem 1\n",
            "cpu.stat": "nr_periods 7\nnr_throttled 3\nthrottled_time 999\n",
        },
    )
    write_tree(
        memory_mount / "ctr",  # the mount shows the hierarchy from /docker/abc down
        {
            "memory.usage_in_bytes": "4096\n",
            "memory.max_usage_in_bytes": "8192\n",
            "memory.failcnt": "1\n",
            "memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
            "memory.stat": "cache 12\nrss 34\ntotal_cache 12\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        },
    )
    mounts = parse_cgroup_mounts(
        f"32 31 0:29 / {cpu_mount} rw - cgroup cgroup rw,cpu,cpuacct\n"
        f"35 31 0:32 /docker/abc {memory_mount} rw - cgroup cgroup rw,memory\n"
        f"36 31 0:33 /elsewhere {tmp_path / 'pids'} rw - cgroup cgroup rw,pids\n"
    )
    paths = cgroup_paths_from(
        1, "2:cpu,cpuacct:/ctr\n4:memory:/docker/abc/ctr\n5:pids:/docker/abc/ctr\n", mounts
    )
    assert paths.v1_dirs == {
        "cpu": cpu_mount / "ctr",
        "cpuacct": cpu_mount / "ctr",
        "memory": memory_mount / "ctr",
    }
    assert paths.pids is None  # that mount does not show /docker/abc
    assert read_cgroup_stats(paths) == wire.CgroupStats(
        cpu=wire.CpuStats(
            wire.CpuUsage(total=300, per_cpu=[100, 200], kernel=NS_PER_TICK, user=2 * NS_PER_TICK),
            wire.Throttling(periods=7, throttled_periods=3, throttled_time=999),
        ),
        memory=wire.MemoryStats(
            cache=12,
            usage=wire.MemoryData(usage=4096, max_usage=8192, failcnt=1, limit=0),
            oom_kills=2,
            stats={"cache": 12, "rss": 34, "total_cache": 12},
        ),
    )


def test_fabricated_pure_v2_tree(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    write_tree(
        mount / "ctr",
        {
            "cgroup.controllers": "cpu io memory pids hugetlb\n",
            "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"
            "nr_periods 10\nnr_throttled 2\nthrottled_usec 30\n",
            "memory.current": "4096\n",
            "memory.peak": "8192\n",
            "memory.max": "1048576\n",
            "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
            "memory.stat": "anon 4000\nfile 96\nkernel 50\n",
            "memory.swap.current": "10\n",
            "memory.swap.max": "max\n",
            "io.stat": "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
            "pids.current": "3\n",
            "pids.max": "max\n",
            "hugetlb.2MB.current": "2097152\n",
            "hugetlb.2MB.max": "max\n",
            "hugetlb.2MB.events": "max 4\n",
            "hugetlb.2MB.rsvd.current": "0\n",
        },
    )
    mounts = parse_cgroup_mounts(f"30 23 0:27 / {mount} rw - cgroup2 cgroup2 rw\n")
    paths = cgroup_paths_from(1, "0::/ctr\n", mounts)
    assert paths.hugetlb_sizes == ("2MB",)
    assert read_cgroup_stats(paths) == wire.CgroupStats(
        cpu=wire.CpuStats(
            wire.CpuUsage(total=1_500_000, kernel=500_000, user=1_000_000),
            wire.Throttling(periods=10, throttled_periods=2, throttled_time=30_000),
        ),
        memory=wire.MemoryStats(
            cache=96,
            usage=wire.MemoryData(usage=4096, max_usage=8192, failcnt=3, limit=1048576),
            swap_usage=wire.MemoryData(usage=4106, limit=0),
            kernel_usage=wire.MemoryData(usage=50),
            oom_kills=1,
            stats={"anon": 4000, "file": 96, "kernel": 50},
        ),
        blkio=wire.BlkioStats(
            io_service_bytes_recursive=[
                wire.BlkioEntry(8, 0, "Read", 10),
                wire.BlkioEntry(8, 0, "Write", 20),
                wire.BlkioEntry(8, 0, "Discard", 0),
            ],
            io_serviced_recursive=[
                wire.BlkioEntry(8, 0, "Read", 1),
                wire.BlkioEntry(8, 0, "Write", 2),
                wire.BlkioEntry(8, 0, "Discard", 0),
            ],
        ),
        pids=wire.PidsStats(current=3, limit=0),
        hugetlb={"2MB": wire.HugetlbStats(usage=2097152, failcnt=4, limit=0)},
    )
    shutil.rmtree(mount / "ctr")
    with pytest.raises(CgroupGone):
        read_cgroup_stats(paths)


def test_missing_optional_files_read_as_zero(tmp_path: Path) -> None:
    write_tree(
        tmp_path / "cg" / "ctr", {"memory.current": "5\n", "memory.stat": "garbage line here\nfile 7\n"}
    )
    mounts = parse_cgroup_mounts(f"30 23 0:27 / {tmp_path / 'cg'} rw - cgroup2 cgroup2 rw\n")
    stats = read_cgroup_stats(cgroup_paths_from(1, "0::/ctr\n", mounts))
    assert stats.memory == wire.MemoryStats(cache=7, usage=wire.MemoryData(usage=5), stats={"file": 7})
    assert (stats.cpu, stats.blkio, stats.pids, stats.hugetlb) == (None, None, None, {})


# --------------------------------------------------------------------------- real containers


@pytest.fixture(scope="module")
def busy_bundle(bundles_dir: Path) -> Path:
    return make_bundle(bundles_dir / "busy", ["sh", "-c", "while :; do :; done"], memory_limit=MEMORY_LIMIT)


def wait_for(predicate, timeout: float, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll until predicate() returns something truthy, and return it; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


@needs_runc
def test_samples_a_running_container(runc_root: Path, busy_bundle: Path) -> None:
    with detached_container(runc_root, busy_bundle, "cg") as (container_id, pid):
        paths = resolve_cgroup_paths(pid)
        # runc's default spec has no cgroupsPath: each cgroup is named after the container, under runc's
        # own cgroup of that controller.
        assert all(d.name == container_id for d in paths.v1_dirs.values())
        assert paths.unified is None or paths.unified.name == container_id
        first = read_cgroup_stats(paths)
        assert first.cpu is not None and first.memory is not None and first.pids is not None

        # The busy loop burns a CPU: wait for 300 ms more of it rather than sleeping a fixed time.
        second = wait_for(
            lambda: (
                (s := read_cgroup_stats(paths)).cpu.usage.total >= first.cpu.usage.total + 300_000_000 and s
            ),
            timeout=20,
        )
        assert second.cpu.usage.user + second.cpu.usage.kernel > 0
        if paths.cpu is not None and paths.cpu.version == 1:
            assert len(second.cpu.usage.per_cpu) >= 1
            assert sum(second.cpu.usage.per_cpu) >= second.cpu.usage.total  # per-CPU is read after total

        memory = second.memory
        assert memory.usage.limit == MEMORY_LIMIT
        assert 0 < memory.usage.usage <= MEMORY_LIMIT
        assert memory.usage.max_usage >= memory.usage.usage or memory.usage.max_usage == 0
        assert memory.stats  # memory.stat is never empty
        assert second.pids.current >= 1

        sample = sample_container(container_id, paths)
        assert abs(sample.timestamp - time.time()) < 5
        as_json = json.loads(json.dumps(converter.unstructure(sample)))
        assert converter.structure(as_json, wire.ContainerStats) == sample
        jsonschema.validate(as_json, class_schema(wire.ContainerStats, tagged=False))


@needs_runc
def test_cgroup_gone_after_delete(runc_root: Path, busy_bundle: Path) -> None:
    with detached_container(runc_root, busy_bundle, "cg") as (container_id, pid):
        paths = resolve_cgroup_paths(pid)
        read_cgroup_stats(paths)
        deleted = runc(runc_root, "delete", "-f", container_id)
        assert deleted.returncode == 0, deleted.stderr
        with pytest.raises(CgroupGone):
            read_cgroup_stats(paths)


def test_resolving_a_dead_process_is_a_lookup_error() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    with pytest.raises(ProcessLookupError):
        resolve_cgroup_paths(pid_max + 1)


def test_an_exited_process_is_not_resolved_to_the_root_cgroups() -> None:
    """A zombie's /proc/PID/cgroup names every hierarchy's root: taken for the container's cgroups,
    it made the daemon count OOM kills in the host's root memory cgroup (none) and missed the one."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # a zombie now, not yet reaped
        with pytest.raises(ProcessLookupError):
            resolve_cgroup_paths(pid)
    finally:
        os.waitpid(pid, 0)


@needs_runc
def test_runc_state_names_the_same_cgroups_as_the_init(runc_root: Path, busy_bundle: Path) -> None:
    """What the daemon falls back on when the init exited before its cgroups were looked for."""
    with detached_container(runc_root, busy_bundle, "cg") as (container_id, pid):
        from_init = resolve_cgroup_paths(pid)
        mounts = read_cgroup_mounts()
        text = proc_cgroup_of_dirs(cgroup_dirs(runc_root, container_id), mounts)
        from_state = cgroup_paths_from(pid, text, mounts)
        assert from_state.v1_dirs == from_init.v1_dirs
        assert from_state.unified == from_init.unified
        assert from_state.memory == from_init.memory and from_state.cpu == from_init.cpu
        assert from_state.memory is not None


@needs_runc
async def test_stream_ends_when_the_container_is_deleted(runc_root: Path, busy_bundle: Path) -> None:
    with detached_container(runc_root, busy_bundle, "cg") as (container_id, pid):
        paths = resolve_cgroup_paths(pid)
        send, receive = trio.open_memory_channel[wire.ContainerStats](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: stream_stats(container_id, paths, send, interval=0.05))
            samples = [await receive.receive() for _ in range(3)]
            assert [s.id for s in samples] == [container_id] * 3
            assert samples[0].timestamp < samples[1].timestamp < samples[2].timestamp
            await trio.run_process(["runc", "--root", str(runc_root), "delete", "-f", container_id])
            with trio.fail_after(5):
                async for _ in receive:  # at most one sample taken before the delete
                    pass


@needs_runc
def test_direct_reads_are_far_cheaper_than_runc_events(runc_root: Path, busy_bundle: Path) -> None:
    """The reason this module exists; prints both costs (run with -s to see them)."""
    with detached_container(runc_root, busy_bundle, "cg") as (container_id, pid):
        paths = resolve_cgroup_paths(pid)
        start = time.perf_counter()
        for _ in range(200):
            read_cgroup_stats(paths)
        direct = (time.perf_counter() - start) / 200
        start = time.perf_counter()
        for _ in range(20):
            out = subprocess.run(
                ["runc", "--root", str(runc_root), "events", "--stats", container_id],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                check=True,
            ).stdout
            json.loads(out)
        spawned = (time.perf_counter() - start) / 20
        print(f"one sample: direct reads {direct * 1e6:.0f} us, runc events --stats {spawned * 1e6:.0f} us")
        assert direct * 5 < spawned
