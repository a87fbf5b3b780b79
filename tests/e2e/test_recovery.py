"""Crash-proofing: restarts lose no container, and hostile state or runtimes do not stop the daemon."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import trio
from support.bundles import make_bundle
from support.daemon import start_daemon, stop_daemon, unique_id
from support.event_waits import journal_events
from support.restarts import server_pid, wait_for_new_server

from containerd_actors.client import Client, RequestFailed
from containerd_actors.protocol import ErrorCode, EventType

#: A container whose init exits with 7 on SIGUSR1 (a pid-1 shell needs a handler to see signals).
#: Exits with 7 on SIGUSR1 once it has said ready (``trapping``): a SIGUSR1 that came before the
#: trap was set killed it with 138 instead, which a busy host made happen.
TRAPPER = ["sh", "-c", "trap 'exit 7' USR1; echo ready; while :; do sleep 0.05; done"]


async def test_corrupt_and_foreign_state_is_quarantined(state_dir: Path, sleep_bundle: Path) -> None:
    containers = state_dir / "containers"
    containers.mkdir(parents=True)
    (containers / "torn").mkdir()
    (containers / "torn" / "container.json").write_text('{"id": "torn", "bund')
    (containers / "stray-file").write_text("not a container")
    (containers / "..weird name").mkdir()
    (containers / "liar").mkdir()
    (containers / "liar" / "container.json").write_text(
        json.dumps({"id": "someone-else", "bundle": "/x", "pid": 1234, "created": 1.0})
    )
    handle = await start_daemon(state_dir)
    try:
        async with Client.connect(handle.address) as client:
            assert await client.containers() == []
            cid = unique_id("after")
            await client.create_container(cid, str(sleep_bundle))  # and it serves as usual
            await client.signal(cid, signal.SIGKILL)
    finally:
        await stop_daemon(handle)
    log = handle.log_text()
    for name in ("torn", "stray-file", "..weird name", "liar"):
        assert f"quarantined {containers / name}" in log
    assert sorted(p.name.split(".")[0] for p in (state_dir / "quarantine").iterdir() if p.name[0] != ".") == [
        "liar",
        "stray-file",
        "torn",
    ]
    assert not (containers / "torn").exists()


async def test_sigterm_then_restart_adopts_running_containers(state_dir: Path, sleep_bundle: Path) -> None:
    handle = await start_daemon(state_dir)
    ids = [unique_id("keep") for _ in range(3)]
    try:
        async with Client.connect(handle.address) as client:
            pids = {cid: await client.create_container(cid, str(sleep_bundle)) for cid in ids}
    finally:
        assert await stop_daemon(handle) == 0
    for pid in pids.values():
        os.kill(pid, 0)  # SIGTERM left every container running

    handle = await start_daemon(state_dir)
    try:
        async with Client.connect(handle.address) as client:
            listed = {c.id: c for c in await client.containers()}
            assert {cid: info.pid for cid, info in listed.items()} == pids
            assert all(info.bundle == str(sleep_bundle) for info in listed.values())
            async with client.subscribe() as events:
                await client.signal(ids[0], signal.SIGKILL)
                with trio.fail_after(30):
                    async for event in events:
                        if event.type == EventType.EXIT:
                            break
            # The previous reaper is gone, so nobody could wait for this process: the status is
            # reported as unknown, with the reason, never made up.
            assert (event.id, event.pid, event.status) == (ids[0], pids[ids[0]], None)
            assert event.reason and "reaper" in event.reason
            assert {c.id for c in await client.containers()} == set(ids[1:])
            for cid in ids[1:]:
                await client.signal(cid, signal.SIGKILL)
    finally:
        await stop_daemon(handle)


async def exec_output(client: Client, cid: str, args: list[str]) -> bytes:
    pid = await client.add_process(cid, args)
    out = b""
    with trio.fail_after(30):
        async for chunk in client.follow_output(cid, pid):
            out += chunk.stdout
    return out


async def test_processes_execd_into_an_adopted_container_keep_the_bundles_privileges(
    state_dir: Path, sleep_bundle: Path
) -> None:
    """An exec'd process's spec starts from the bundle's process (capabilities, rlimits), also
    after a restart; an adopted container that forgot it ran its exec'd processes with none."""
    privileges = ["sh", "-c", "grep -E '^(Cap(Eff|Bnd)|NoNewPrivs)' /proc/self/status; ulimit -n"]
    handle = await start_daemon(state_dir)
    cid = unique_id("privileged")
    try:
        async with Client.connect(handle.address) as client:
            await client.create_container(cid, str(sleep_bundle))
            before = await exec_output(client, cid, privileges)
    finally:
        assert await stop_daemon(handle) == 0
    # `runc spec`'s bundle: some capabilities, no_new_privs set, and at most 1024 open files.
    assert b"CapEff:\t0000000000000000" not in before and b"NoNewPrivs:\t1" in before, before
    assert before.endswith(b"\n1024\n"), before

    handle = await start_daemon(state_dir)
    try:
        async with Client.connect(handle.address) as client:
            assert await exec_output(client, cid, privileges) == before
            await client.signal(cid, signal.SIGKILL)
    finally:
        await stop_daemon(handle)


async def test_server_kill_9_is_survived_with_real_exit_statuses(state_dir: Path, bundles_dir: Path) -> None:
    trapper = make_bundle(bundles_dir / "trapper", TRAPPER)
    handle = await start_daemon(state_dir)
    reaper = handle.process.pid
    try:
        async with Client.connect(handle.address) as client:
            ids = [unique_id(f"r{n}") for n in range(20)]
            pids: dict[str, int] = {}
            async with trio.open_nursery() as nursery:
                for cid in ids:

                    async def start(cid: str = cid) -> None:
                        pids[cid] = await client.create_container(cid, str(trapper))

                    nursery.start_soon(start)
            for cid in (*ids[:3], ids[5]):  # those told SIGUSR1 below must have set their trap
                await wait_until_ready(client, cid, pids[cid])
        old_server = server_pid(handle)

        # Freeze the reaper so that nothing restarts or reaps, kill the server outright, and let 5
        # containers exit while no server runs: 3 with status 7, 2 killed (137).
        os.kill(reaper, signal.SIGSTOP)
        try:
            os.kill(old_server, signal.SIGKILL)
            for cid in ids[:3]:
                os.kill(pids[cid], signal.SIGUSR1)
            for cid in ids[3:5]:
                os.kill(pids[cid], signal.SIGKILL)
        finally:
            os.kill(reaper, signal.SIGCONT)
        await wait_for_new_server(handle, old_server)

        async with Client.connect(handle.address) as client:
            with trio.fail_after(30):
                while len(listed := {c.id: c for c in await client.containers()}) != 15:
                    await trio.sleep(0.05)  # the new server reports the 5 exits as it adopts
            assert {cid: info.pid for cid, info in listed.items()} == {cid: pids[cid] for cid in ids[5:]}
            exits = {
                e.id: e
                for e in await journal_events(client)
                if e.type == EventType.EXIT and e.id in set(ids[:5])
            }
            assert {cid: e.status for cid, e in exits.items()} == {
                **{cid: 7 for cid in ids[:3]},
                **{cid: 137 for cid in ids[3:5]},
            }
            # The adopted containers are fully supervised: their exits are reaped with real statuses.
            async with client.subscribe() as events:
                os.kill(pids[ids[5]], signal.SIGUSR1)
                with trio.fail_after(30):
                    async for event in events:
                        if event.type == EventType.EXIT and event.id == ids[5]:
                            assert event.status == 7
                            break
            for cid in ids[6:]:
                await client.signal(cid, signal.SIGKILL)
    finally:
        await stop_daemon(handle)


async def test_whole_tree_killed_new_daemon_adopts_and_reports_unknown_exits(
    state_dir: Path, bundles_dir: Path
) -> None:
    trapper = make_bundle(bundles_dir / "trapper", TRAPPER)
    handle = await start_daemon(state_dir)
    ids = [unique_id(f"t{n}") for n in range(5)]
    async with Client.connect(handle.address) as client:
        pids = {cid: await client.create_container(cid, str(trapper)) for cid in ids}
    # The reaper and the server both die, as in a `kill -9` of the whole process tree.
    os.kill(server_pid(handle), signal.SIGKILL)
    os.kill(handle.process.pid, signal.SIGKILL)
    await handle.process.wait()
    for cid in ids[:2]:
        os.kill(pids[cid], signal.SIGUSR1)  # exits nobody can wait for: the reaper is gone

    handle = await start_daemon(state_dir)
    try:
        async with Client.connect(handle.address) as client:
            with trio.fail_after(30):
                while len(await client.containers()) != 3:
                    await trio.sleep(0.05)  # the two dead containers are reported as they are found
            listed = {c.id: c.pid for c in await client.containers()}
            assert listed == {cid: pids[cid] for cid in ids[2:]}
            exits = {e.id: e for e in await journal_events(client) if e.type == EventType.EXIT}
            assert set(exits) == set(ids[:2])
            for cid in ids[:2]:
                assert exits[cid].pid == pids[cid]
                assert exits[cid].status is None  # unknown, and never made up
                assert "reaper" in exits[cid].reason
            for cid in ids[2:]:
                await client.signal(cid, signal.SIGKILL)
    finally:
        await stop_daemon(handle)


def trapping(status: int) -> list[str]:
    """A process that exits with ``status`` on SIGUSR1, and says ``ready`` once its trap is set."""
    return ["sh", "-c", f"trap 'exit {status}' USR1; echo ready; while :; do sleep 0.05; done"]


async def wait_until_ready(client: Client, cid: str, pid: int) -> None:
    with trio.fail_after(30):
        async for chunk in client.follow_output(cid, pid):
            if b"ready" in chunk.stdout:
                return
    raise AssertionError(f"process {pid} ended before it was ready")


async def test_execd_processes_are_tracked_again_after_a_server_crash(
    state_dir: Path, sleep_bundle: Path
) -> None:
    handle = await start_daemon(state_dir)
    cid = unique_id("exec-survivor")
    try:
        async with Client.connect(handle.address) as client:
            await client.create_container(cid, str(sleep_bundle))
            ticker = await client.add_process(cid, trapping(5))
            quitter = await client.add_process(cid, trapping(6))
            # A signal before its trap is set would kill sh (138) instead of ending it with its status.
            await wait_until_ready(client, cid, ticker)
            await wait_until_ready(client, cid, quitter)
        old_server = server_pid(handle)
        reaper = handle.process.pid
        os.kill(reaper, signal.SIGSTOP)
        try:
            os.kill(old_server, signal.SIGKILL)
            os.kill(quitter, signal.SIGUSR1)  # exits while no server runs
        finally:
            os.kill(reaper, signal.SIGCONT)
        await wait_for_new_server(handle, old_server)
        async with Client.connect(handle.address) as client:
            with trio.fail_after(30):
                while True:
                    [info] = await client.containers()
                    if sorted(p.pid for p in info.processes) == sorted([info.pid, ticker]):
                        break
                    await trio.sleep(0.05)  # the new server re-tracks the survivor and reports the other
            async with client.subscribe() as events:
                await client.signal(cid, signal.SIGUSR1, pid=ticker)  # signals reach the adopted process
                with trio.fail_after(30):
                    async for event in events:
                        if event.type == EventType.EXIT and event.pid == ticker:
                            assert event.status == 5
                            break
            exits = {e.pid: e.status for e in await journal_events(client) if e.type == EventType.EXIT}
            assert exits[quitter] == 6
            await client.signal(cid, signal.SIGKILL)
        assert not list((state_dir / "containers" / cid).glob("exec-*.process.json"))
    finally:
        await stop_daemon(handle)


HANGING_RUNC = """#!/bin/sh
# Hangs for bundles whose path contains "hang"; otherwise it is runc.
case "$*" in *hang*) exec sleep 1000 ;; esac
exec runc "$@"
"""


async def test_hung_runtime_start_times_out_while_others_succeed(
    state_dir: Path, bundles_dir: Path, sleep_bundle: Path
) -> None:
    wrapper = state_dir.parent / "hanging-runc"
    wrapper.write_text(HANGING_RUNC)
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    hang = make_bundle(bundles_dir / "hang", ["sleep", "1000000"])
    handle = await start_daemon(state_dir, "--runtime", str(wrapper), "--start-timeout", "2s", "-c", "4")
    try:
        async with Client.connect(handle.address) as client:
            results: dict[str, object] = {}

            async def start(cid: str, bundle: Path) -> None:
                try:
                    results[cid] = await client.create_container(cid, str(bundle))
                except RequestFailed as failure:
                    results[cid] = failure

            stuck = unique_id("stuck")
            fine = [unique_id("fine") for _ in range(10)]
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(start, stuck, hang)
                    for cid in fine:
                        nursery.start_soon(start, cid, sleep_bundle)
            failure = results[stuck]
            assert isinstance(failure, RequestFailed)
            assert failure.code == ErrorCode.RUNTIME_FAILED
            assert "2 s" in failure.message
            assert all(isinstance(results[cid], int) for cid in fine)
            assert {c.id for c in await client.containers()} == set(fine)
            assert stuck not in handle.runc_ids()
            assert not (state_dir / "containers" / stuck).exists()
            for cid in fine:
                await client.signal(cid, signal.SIGKILL)
    finally:
        await stop_daemon(handle)
