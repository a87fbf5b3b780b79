"""Live migration between two real daemons over mutual TLS, with real runc and CRIU.

Daemons A and B each run in a network namespace the test makes, joined by a veth pair with
198.18.0.0/15 addresses (``support.netns``); they talk tls+tcp, each with its own certificate, and
the test reaches both through their local sockets.
Both share this host's cgroup tree, so B restores under its own cgroup parent (from its --id).
The tests skip only when `criu check` fails, saying CRIU's reason, or when no namespace can be made.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from support import netns
from support.bundles import make_bundle, shared_rootfs
from support.certs import free_port_run, make_ca, sign
from support.criu import criu_path, last_error_line
from support.daemon import (
    DaemonHandle,
    remove_containers,
    short_temp_dir,
    start_daemon,
    stop_daemon,
    unique_id,
)

from containerd_actors.client import Client, DaemonUnreachable, RequestFailed, TlsFiles
from containerd_actors.protocol import Event, EventType

#: Prints 0, 1, 2, ... about every 10 ms.
COUNTER = ["sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); usleep 10000; done"]
#: A ``memory_counter`` size whose pages stream (over ``source.STREAM_MIN_BYTES``, with room).
STREAMED_MIB = 160


@pytest.fixture(scope="module", autouse=True)
def working_criu() -> None:
    result = subprocess.run([criu_path(), "check"], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.skip(f"criu check failed: {last_error_line(result.stdout + result.stderr)}")


@pytest.fixture(scope="module")
def hosts() -> Iterator[netns.NetnsPair]:
    """Two network namespaces, one per daemon, joined by a veth pair."""
    try:
        made = netns.create_pair()
    except netns.NetnsRefused as refused:
        pytest.skip(f"cannot make network namespaces here: {refused}")
    try:
        yield made
    finally:
        netns.remove_pair(made)
        assert netns.pair_leftovers(made) == [], "a namespace outlived the tests"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory, hosts: netns.NetnsPair) -> dict[str, TlsFiles]:
    directory = tmp_path_factory.mktemp("migrate-certs")
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    return {
        "a": sign(directory, "ca", "a", "daemon-a", ips=(hosts.a_address,)),
        "b": sign(directory, "ca", "b", "daemon-b", ips=(hosts.b_address,)),
        "b-stranger": sign(directory, "other-ca", "b-stranger", "daemon-b", ips=(hosts.b_address,)),
    }


@attrs.frozen
class Pair:
    a: DaemonHandle
    b: DaemonHandle
    #: Where each listens for the other.
    a_remote: str
    b_remote: str


def tls_args(files: TlsFiles) -> list[str]:
    return ["--tls-cert", str(files.cert), "--tls-key", str(files.key), "--tls-ca", str(files.ca)]


#: Runs runc, but while the file named by $FAIL_DUMP exists a dump is asked to be a pre-copy round's
#: successor (``--parent-path``), which makes CRIU itself refuse it on this kernel ("Tracking memory
#: is not available"), leaving the container as it was. (A dump pointed at a page server nobody
#: listens on also fails, but CRIU's parasite then dies with its victim: the container is lost.)
FAILING_DUMP_RUNC = """#!/bin/sh
if [ -e "$FAIL_DUMP" ]; then
  for arg; do
    shift
    if [ "$arg" = checkpoint ]; then set -- "$@" checkpoint --parent-path ..; else set -- "$@" "$arg"; fi
  done
fi
exec runc "$@"
"""


@attrs.frozen
class Hidden:
    """A directory daemon B does not see: a tmpfs over it in B's own mount namespace, holding an
    empty ``rootfs`` directory with ``fake_rootfs``."""

    path: Path
    fake_rootfs: bool = False

    def prefix(self) -> tuple[str, ...]:
        script = 'mount -t tmpfs migrate-test "$0" || exit 1; '
        if self.fake_rootfs:
            script += 'mkdir -p "$0/rootfs/proc" "$0/rootfs/dev" "$0/rootfs/sys" "$0/rootfs/tmp" || exit 1; '
        script += 'exec "$@"'
        return ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(self.path))


@asynccontextmanager
async def two_daemons(
    hosts: netns.NetnsPair,
    certs: dict[str, TlsFiles],
    b_cert: str = "b",
    hidden: Hidden | None = None,
    top: Path | None = None,
    a_args: tuple[str, ...] = (),
    b_args: tuple[str, ...] = (),
    b_env: tuple[str, ...] = (),
) -> AsyncIterator[Pair]:
    """Daemons A and B; ``b_env`` (``NAME=VALUE``) is B's environment beside the inherited one."""
    top = top or short_temp_dir("ca-mig-")
    tag = uuid.uuid4().hex[:6]
    a_remote = f"tls+tcp://{hosts.a_address}:{free_port_run(3)}"
    b_remote = f"tls+tcp://{hosts.b_address}:{free_port_run(3)}"
    handles: list[DaemonHandle] = []
    try:
        a = await start_daemon(
            top / "a",
            "--id",
            f"mig-a-{tag}",
            "--listen",
            a_remote,
            *tls_args(certs["a"]),
            *a_args,
            prefix=hosts.enter_argv(hosts.a),
        )
        handles.append(a)
        b = await start_daemon(
            top / "b",
            "--id",
            f"mig-b-{tag}",
            "--listen",
            b_remote,
            *tls_args(certs[b_cert]),
            *b_args,
            prefix=(
                *hosts.enter_argv(hosts.b),
                *(("env", *b_env) if b_env else ()),
                *(hidden.prefix() if hidden else ()),
            ),
        )
        handles.append(b)
        yield Pair(a, b, a_remote, b_remote)
    finally:
        for handle in handles:
            remove_containers(handle.runc_root)
            await stop_daemon(handle)
            print(f"---- {handle.state_dir.name} log ----\n{handle.log_text()}")
        subprocess.run(["rm", "-rf", str(top)], check=False)


def numbers(daemon: DaemonHandle, cid: str) -> list[int]:
    path = daemon.state_dir / "logs" / cid / "stdout.log"
    try:
        return [int(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


async def wait_for_numbers(daemon: DaemonHandle, cid: str, count: int) -> list[int]:
    """The container's own output is the state under test; nothing else announces it."""
    with trio.fail_after(30):
        while len(found := numbers(daemon, cid)) < count:
            await trio.sleep(0.02)
    return found


async def next_event(events: AsyncIterator[Event], cid: str, kinds: set[str]) -> Event:
    with trio.fail_after(60):
        async for event in events:
            if event.id == cid and event.type in kinds:
                return event
    raise AssertionError("the event stream ended")


@attrs.frozen
class Counting:
    """Two daemons, a client of each, and container ``cid`` counting at A."""

    pair: Pair
    a: Client
    b: Client
    cid: str


@asynccontextmanager
async def counting_at_a(
    hosts: netns.NetnsPair,
    certs: dict[str, TlsFiles],
    bundle: Path,
    numbers_first: int = 5,
    memory_mib: int = 0,
    **daemons: Any,
) -> AsyncIterator[Counting]:
    """``two_daemons(**daemons)`` with a container of ``bundle`` that has printed ``numbers_first``
    numbers at A, and holds ``memory_mib`` of a ``memory_counter`` (which decides whether its pages
    stream): where every test of a migration starts."""
    cid = unique_id("mig")
    async with (
        two_daemons(hosts, certs, **daemons) as pair,
        Client.connect(pair.a.address, timeout=60) as a,
        Client.connect(pair.b.address, timeout=60) as b,
    ):
        await a.create_container(cid, str(bundle))
        await wait_for_numbers(pair.a, cid, numbers_first)
        await wait_for_memory(a, cid, max(0, memory_mib - 4) << 20)  # a little slack
        yield Counting(pair, a, b, cid)


async def wait_for_memory(client: Client, cid: str, size: int) -> None:
    """Until the container holds ``size`` bytes besides page cache (as the source daemon counts)."""
    with trio.fail_after(60):
        while True:
            memory = (await client.stats(cid)).cgroup.memory
            if size == 0 or (memory is not None and memory.usage.usage - memory.cache >= size):
                return
            await trio.sleep(0.05)


async def refused_migration(run: Counting, **options: Any) -> str:
    """Migrate ``run.cid`` from A to B, which must fail; the reason."""
    with pytest.raises(RequestFailed) as failed:
        await run.a.migrate_container(run.cid, run.pair.b_remote, **options)
    return failed.value.message


async def migration_broken_midway(run: Counting, breaker: Callable[[], Awaitable[None]]) -> str:
    """Migrate, call ``breaker`` once B is receiving, and return why the migration failed."""
    failure: list[str] = []

    async def migrate() -> None:
        failure.append(await refused_migration(run))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(migrate)
        await wait_until_receiving(run.pair.b)
        await breaker()
    return failure[0]


@pytest.fixture
def counter_bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "counter", COUNTER)


async def test_a_counter_moves_to_b_and_back_without_losing_a_number(
    hosts: netns.NetnsPair, certs: dict[str, TlsFiles], tmp_path: Path
) -> None:
    # Enough memory that its pages stream to B's page server while A dumps (STREAM_MIN_BYTES).
    bundle = make_bundle(tmp_path / "memory", memory_counter(STREAMED_MIB))
    async with counting_at_a(hosts, certs, bundle, numbers_first=20, memory_mib=STREAMED_MIB) as run:
        pair, a, b, cid = run.pair, run.a, run.b, run.cid
        async with a.subscribe() as a_events, b.subscribe() as b_events:
            moved = await a.migrate_container(cid, pair.b_remote)
            assert moved.frozen_s > 0 and moved.total_s >= moved.frozen_s and moved.bytes_sent > 0
            assert "chunks arrived on the bulk channel" in pair.b.log_text()
            # The pages went to B's page server while A dumped (the streamed path).
            assert moved.pages_streamed and moved.kept_checkpoint is None
            assert "of pages arrived through the page server" in pair.b.log_text()
            out = await next_event(a_events, cid, {EventType.MIGRATE_OUT})
            assert out.reason is not None and f"to={pair.b_remote}" in out.reason and "frozen=" in out.reason
            arrived = await next_event(b_events, cid, {EventType.MIGRATE_IN})
            assert (
                arrived.pid == moved.pid and arrived.by == "daemon-a" and "frozen=" in (arrived.reason or "")
            )
            await next_event(a_events, cid, {EventType.EXIT})  # the frozen copy at A is gone
            assert cid not in [c.id for c in await a.containers()]
            assert [c.id for c in await b.containers()] == [cid]
            last_at_a = numbers(pair.a, cid)[-1]
            at_b = await wait_for_numbers(pair.b, cid, 10)
            assert at_b[0] == last_at_a + 1, (last_at_a, at_b[:5])
            assert at_b == list(range(at_b[0], at_b[0] + len(at_b)))

            # And back: B drives it now, dialing A with its own certificate.
            back = await b.migrate_container(cid, pair.a_remote)
            assert back.pid > 0 and back.pages_streamed
            await next_event(b_events, cid, {EventType.MIGRATE_OUT})
            await next_event(a_events, cid, {EventType.MIGRATE_IN})
            await next_event(b_events, cid, {EventType.EXIT})
            assert [c.id for c in await b.containers()] == []
            assert list((pair.b.state_dir / "migrated").iterdir()) == []  # B's bundle of it left with it
            assert [c.id for c in await a.containers()] == [cid]
            last_at_b = numbers(pair.b, cid)[-1]
            with trio.fail_after(30):
                while last_at_b + 5 not in numbers(pair.a, cid):
                    await trio.sleep(0.02)
            again = numbers(pair.a, cid)
            tail = again[again.index(last_at_b + 1) :]
            assert tail == list(range(last_at_b + 1, last_at_b + 1 + len(tail)))
            await a.signal(cid, signal=9)
            await next_event(a_events, cid, {EventType.EXIT})
        assert not list((pair.b.state_dir / "incoming").iterdir())


async def test_a_destination_with_a_certificate_the_source_does_not_trust_changes_nothing(
    hosts: netns.NetnsPair, certs: dict[str, TlsFiles], counter_bundle: Path
) -> None:
    async with counting_at_a(hosts, certs, counter_bundle, b_cert="b-stranger") as run:
        assert "migration not started" in await refused_migration(run)
        await still_counting_at_a_only(run)
        # Nobody listens there: refused at once, and the daemon was never stalled by the dial.
        closed_port = run.pair.b_remote.rpartition(":")[0] + ":1"
        with pytest.raises(RequestFailed) as unreachable:
            await run.a.migrate_container(run.cid, closed_port)
        assert "cannot reach the destination" in unreachable.value.message, unreachable.value.message
        await still_counting_at_a_only(run)
        pre_dump = await refused_migration(run, pre_dump=2)
        checked = subprocess.run(
            [criu_path(), "check", "--feature", "mem_dirty_track"], capture_output=True, text=True
        )
        if "Dirty tracking is OFF" in checked.stdout + checked.stderr:  # this kernel: the reason is said
            assert "Dirty tracking is OFF" in pre_dump, pre_dump
        else:
            assert "not implemented" in pre_dump, pre_dump


async def still_counting_at_a_only(run: Counting) -> None:
    """The failure left the container running (and counting) at A, and nothing at B."""
    pair, cid = run.pair, run.cid
    listed = [(c.id, c.status) for c in await run.a.containers()]
    assert listed == [(cid, "running")]
    count = len(numbers(pair.a, cid))
    await wait_for_numbers(pair.a, cid, count + 10)
    assert await run.b.containers() == []
    assert not list((pair.b.state_dir / "incoming").iterdir())
    assert not list((pair.b.state_dir / "migrated").iterdir())
    assert pair.b.runc_ids() == []
    assert os.path.exists(pair.a.state_dir)


def hidden_counter_bundle(top: Path) -> tuple[Path, Hidden]:
    """A counter whose rootfs is a copy under ``top/hidden`` (which B may be made not to see)."""
    hidden = top / "hidden"
    hidden.mkdir()
    subprocess.run(["cp", "-a", str(shared_rootfs()), str(hidden / "rootfs")], check=True)
    bundle = make_bundle(top / "bundle", COUNTER)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["root"]["path"] = str(hidden / "rootfs")
    config_path.write_text(json.dumps(config))
    return bundle, Hidden(hidden)


async def test_a_rootfs_missing_at_the_destination_is_found_before_the_freeze(
    hosts: netns.NetnsPair, certs: dict[str, TlsFiles]
) -> None:
    top = short_temp_dir("ca-mig-")
    bundle, hidden = hidden_counter_bundle(top)
    async with (
        counting_at_a(hosts, certs, bundle, hidden=hidden, top=top) as run,
        run.a.subscribe() as a_events,
    ):
        failed = await refused_migration(run)
        assert "does not exist on this host" in failed, failed
        assert "migration not started" in failed
        await still_counting_at_a_only(run)
        # Never frozen: no pause, checkpoint or exit was announced.
        await run.a.signal(run.cid, signal=9)
        first = await next_event(a_events, run.cid, {EventType.PAUSE, EventType.CHECKPOINT, EventType.EXIT})
        assert first.type == EventType.EXIT


async def test_with_rootfs_copy_the_rootfs_goes_along(
    hosts: netns.NetnsPair, certs: dict[str, TlsFiles]
) -> None:
    top = short_temp_dir("ca-mig-")
    bundle, hidden = hidden_counter_bundle(top)
    async with counting_at_a(hosts, certs, bundle, hidden=hidden, top=top) as run:
        moved = await run.a.migrate_container(run.cid, run.pair.b_remote, rootfs_copy=True, keep_source=True)
        assert moved.bytes_sent > 1 << 20  # busybox itself went along
        [arrived] = await run.b.containers()
        assert arrived.bundle.startswith(str(run.pair.b.state_dir / "migrated"))
        last_at_a = numbers(run.pair.a, run.cid)[-1]
        at_b = await wait_for_numbers(run.pair.b, run.cid, 5)
        assert at_b[0] == last_at_a + 1
        # --keep-source: the dump stays a checkpoint of the bundle at A (the reply names it), and can
        # be restored there: so it is dumped to disk whole, its pages not streamed to B.
        [kept] = await run.a.list_checkpoints(bundle=str(bundle))
        assert kept.name.startswith("migrated-") and kept.exit and kept.name == moved.kept_checkpoint
        assert not moved.pages_streamed


async def test_a_failed_restore_at_the_destination_leaves_it_running_at_the_source(
    hosts: netns.NetnsPair, certs: dict[str, TlsFiles]
) -> None:
    """B has a directory at the rootfs path, but an empty one: CRIU cannot restore there."""
    top = short_temp_dir("ca-mig-")
    bundle, hidden = hidden_counter_bundle(top)
    async with (
        counting_at_a(hosts, certs, bundle, hidden=attrs.evolve(hidden, fake_rootfs=True), top=top) as run,
        run.a.subscribe() as a_events,
    ):
        failed = await refused_migration(run)
        assert "restore at the destination failed" in failed, failed
        await still_counting_at_a_only(run)
        assert await run.a.list_checkpoints(run.cid) == []  # the failed migration's dump is gone
        await run.a.signal(run.cid, signal=9)
        assert (
            await next_event(a_events, run.cid, {EventType.MIGRATE_OUT, EventType.EXIT})
        ).type == EventType.EXIT


async def test_a_failed_dump_at_the_source_thaws_it(
    hosts: netns.NetnsPair, certs: dict[str, TlsFiles], counter_bundle: Path
) -> None:
    top = short_temp_dir("ca-mig-")
    wrapper = top / "failing-dump-runc"
    wrapper.write_text(FAILING_DUMP_RUNC)
    wrapper.chmod(0o755)
    marker = top / "fail-dump"
    marker.touch()
    os.environ["FAIL_DUMP"] = str(marker)  # inherited by daemon A, read by its runc wrapper
    try:
        async with counting_at_a(
            hosts, certs, counter_bundle, top=top, a_args=("--runtime", str(wrapper))
        ) as run:
            failed = await refused_migration(run)
            assert "migration failed at the dump" in failed, failed
            assert "Tracking memory is not available" in failed  # CRIU's own words
            await still_counting_at_a_only(run)
            marker.unlink()  # and the next attempt goes through
            moved = await run.a.migrate_container(run.cid, run.pair.b_remote)
            assert [c.id for c in await run.b.containers()] == [run.cid]
            # A container this small is dumped to disk and sent after: streaming would cost more.
            assert not moved.pages_streamed and "the dump goes to disk" in run.pair.a.log_text()
    finally:
        del os.environ["FAIL_DUMP"]


#: Stands for ``criu`` on daemon B's PATH. With ``PAGE_SERVER_FAILS=start`` a page server fails to
#: start; with ``PAGE_SERVER_FAILS=midway`` it may write 4 MiB and dies at the next byte (SIGXFSZ,
#: which the daemon restores to its default for it), in the middle of the stream. Everything else
#: is the real CRIU.
FAILING_PAGE_SERVER_CRIU = """#!/bin/bash
if [ "$1" = page-server ]; then
  case "$PAGE_SERVER_FAILS" in
    start) echo "Error (test): this page server does not start" >&2; exit 1;;
    midway) ulimit -f 4096;;
  esac
fi
exec {criu} "$@"
"""


def failing_page_server_env(top: Path, how: str) -> tuple[str, ...]:
    """B's environment for ``FAILING_PAGE_SERVER_CRIU`` failing ``how``."""
    bin_dir = top / "criu-bin"
    bin_dir.mkdir()
    (bin_dir / "criu").write_text(FAILING_PAGE_SERVER_CRIU.format(criu=criu_path()))
    (bin_dir / "criu").chmod(0o755)
    return (f"PATH={bin_dir}:{os.environ['PATH']}", f"PAGE_SERVER_FAILS={how}")


async def test_a_page_server_failing_midway_leaves_it_running_at_the_source(
    hosts: netns.NetnsPair, certs: dict[str, TlsFiles], tmp_path: Path
) -> None:
    """The stream breaks while CRIU dumps: the dump fails, the container was never stopped at A
    (frozen, with its pages still its own), and A thaws it."""
    top = short_temp_dir("ca-mig-")
    bundle = make_bundle(tmp_path / "memory", memory_counter(STREAMED_MIB))
    env = failing_page_server_env(top, "midway")
    async with counting_at_a(hosts, certs, bundle, memory_mib=STREAMED_MIB, top=top, b_env=env) as run:
        failed = await refused_migration(run)
        assert "migration failed at the dump" in failed, failed
        assert "page relay" in failed, failed
        await still_counting_at_a_only(run)
        assert "the page server failed" in run.pair.b.log_text()


async def test_a_page_server_that_cannot_start_sends_the_dump_the_old_way(
    hosts: netns.NetnsPair, certs: dict[str, TlsFiles], tmp_path: Path
) -> None:
    """Found before the freeze: A dumps to disk and sends the pages with the other images, and says so."""
    top = short_temp_dir("ca-mig-")
    bundle = make_bundle(tmp_path / "memory", memory_counter(STREAMED_MIB))
    env = failing_page_server_env(top, "start")
    async with counting_at_a(hosts, certs, bundle, memory_mib=STREAMED_MIB, top=top, b_env=env) as run:
        moved = await run.a.migrate_container(run.cid, run.pair.b_remote)
        assert not moved.pages_streamed
        assert "the dump goes to disk" in run.pair.a.log_text()
        assert "criu page-server did not start" in run.pair.b.log_text()
        assert [c.id for c in await run.b.containers()] == [run.cid]
        last_at_a = numbers(run.pair.a, run.cid)[-1]
        assert (await wait_for_numbers(run.pair.b, run.cid, 5))[0] == last_at_a + 1


def memory_counter(mib: int) -> list[str]:
    """A counter beside ``dd``, which holds ``mib`` MiB of anonymous memory (its block buffer,
    filled from /dev/zero) while it waits to write into a pipe nobody reads."""
    return [
        "sh",
        "-c",
        f"dd if=/dev/zero bs={mib << 20} count=1 2>/dev/null | sleep 1000000 & "
        "i=0; while :; do echo $i; i=$((i+1)); usleep 10000; done",
    ]


async def wait_until_receiving(daemon: DaemonHandle, at_least: int = 8 << 20) -> None:
    """Until the destination has received ``at_least`` bytes of images (the transfer is under way)."""
    with trio.fail_after(60):
        while True:
            received = sum(
                path.stat().st_size
                for path in (daemon.state_dir / "incoming").glob("*/images/*")
                if path.is_file()
            )
            if received >= at_least:
                return
            await trio.sleep(0.005)


def api_server_pid(reaper_pid: int) -> int:
    children = Path(f"/proc/{reaper_pid}/task/{reaper_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


async def test_the_destination_dying_midway_leaves_it_running_at_the_source(
    hosts: netns.NetnsPair, certs: dict[str, TlsFiles], tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "memory", memory_counter(256))
    async with counting_at_a(hosts, certs, bundle, memory_mib=256) as run:
        server = api_server_pid(run.pair.b.pid)

        async def kill_b() -> None:
            # Meanwhile A's actor serves what a frozen container can answer, and refuses the rest.
            assert (await run.a.stats(run.cid)).id == run.cid
            with pytest.raises(RequestFailed) as refused:
                await run.a.signal(run.cid, signal=9)
            assert "is migrating" in refused.value.message
            os.kill(server, signal.SIGKILL)  # the reaper starts a new API server

        failed = await migration_broken_midway(run, kill_b)
        # The pages stream while CRIU dumps: the dump is what fails.
        assert "migration failed at the dump" in failed and "page relay" in failed, failed
        with trio.fail_after(30):
            while True:  # the new server is up once it answers
                try:
                    async with Client.connect(run.pair.b.address, timeout=5) as b:
                        await b.ping()
                        break
                except (DaemonUnreachable, RequestFailed):
                    await trio.sleep(0.05)
        async with Client.connect(run.pair.b.address) as b:
            await still_counting_at_a_only(attrs.evolve(run, b=b))


async def test_a_dropped_connection_leaves_it_running_at_the_source(
    hosts: netns.NetnsPair, certs: dict[str, TlsFiles], tmp_path: Path
) -> None:
    """Both ends of B's connections are reset by B's own firewall (in its namespace only).

    B learns of it when it next sends on the connection, or, if it has nothing to send, when the
    source has been quiet for --migration-idle-timeout (short here).
    """
    bundle = make_bundle(tmp_path / "memory", memory_counter(256))
    # Every TCP port of B towards A: the API's, the bulk channel's and the page relay's.
    rules = [
        ["INPUT", "!", "-i", "lo", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
        ["OUTPUT", "!", "-o", "lo", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
    ]

    async def firewall() -> None:
        for rule in rules:
            subprocess.run(hosts.exec_argv(hosts.b, "iptables", "-I", *rule), check=True)

    async with counting_at_a(
        hosts, certs, bundle, memory_mib=256, b_args=("--migration-idle-timeout", "3s")
    ) as run:
        try:
            failed = await migration_broken_midway(run, firewall)
        finally:
            for rule in rules:
                subprocess.run(hosts.exec_argv(hosts.b, "iptables", "-D", *rule), check=False)
        # The pages stream while CRIU dumps: the dump is what fails.
        assert "migration failed at the dump" in failed, failed
        with trio.fail_after(30):  # B drops what it received once it sees the connection closed
            while list((run.pair.b.state_dir / "incoming").iterdir()):
                await trio.sleep(0.05)
        await still_counting_at_a_only(run)


async def test_a_firewall_that_lets_only_the_api_through_sends_the_images_over_the_api(
    hosts: netns.NetnsPair, certs: dict[str, TlsFiles], counter_bundle: Path
) -> None:
    """B's firewall resets every TCP port but the API's (from A): neither the bulk channel nor the
    page relay can connect, so the source says so in its log, dumps to disk and sends the chunks
    over the API, and the migration succeeds."""
    async with counting_at_a(hosts, certs, counter_bundle) as run:
        port = run.pair.b_remote.rpartition(":")[2]
        # From the other host only (not on lo, which the restore uses).
        rule = ["INPUT", "!", "-i", "lo", "-p", "tcp", "!", "--dport", port]
        rule += ["-j", "REJECT", "--reject-with", "tcp-reset"]
        subprocess.run(hosts.exec_argv(hosts.b, "iptables", "-I", *rule), check=True)
        try:
            moved = await run.a.migrate_container(run.cid, run.pair.b_remote)
            assert moved.pid > 0 and not moved.pages_streamed
            assert "the images go over the API instead" in run.pair.a.log_text()
            assert "bulk channel" not in run.pair.b.log_text().replace("no bulk channel", "")
            assert [c.id for c in await run.b.containers()] == [run.cid]
            await wait_for_numbers(run.pair.b, run.cid, 5)
            await run.b.signal(run.cid, signal=9)
        finally:
            subprocess.run(hosts.exec_argv(hosts.b, "iptables", "-D", *rule), check=False)


#: The counter's numbers go through an established TCP connection inside the container (its own
#: network namespace, over lo) to ``nc -l``, which prints them.
TCP_COUNTER = [
    "sh",
    "-c",
    "(sleep 1000000 | nc -l -p 5000 &); sleep 0.3; "
    "i=0; while :; do echo $i; i=$((i+1)); usleep 10000; done | nc 127.0.0.1 5000",
]


async def test_an_established_tcp_connection_stops_a_migration_without_tcp(
    hosts: netns.NetnsPair, certs: dict[str, TlsFiles], tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "tcp", TCP_COUNTER)
    async with counting_at_a(hosts, certs, bundle) as run:
        failed = await refused_migration(run)
        assert "migration failed at the dump" in failed, failed
        assert "consider using --tcp-established" in failed  # CRIU's advice, via runc
        await still_counting_at_a_only(run)
        # With tcp=True this container dumps, but CRIU 4.2 fails its restore here (raw runc too):
        # "pipes.c: Can't send file descriptor: Connection refused" for the pipes between the shells.
