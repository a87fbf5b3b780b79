"""exec (AddProcess), attach and logs, end to end: the real daemon, real runc, and `actr` as a process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import trio
from support.daemon import DaemonHandle, unique_id
from test_bad_input import raw_request

from containerd_actors.client import Client, RequestFailed
from containerd_actors.protocol import ErrorCode, Event, EventType, User

ACTR = [sys.executable, "-m", "ctl.main"]
FIFTY_MB = 50 * 1024 * 1024
#: Writes 50 MB of random bytes to stdout and their md5 to stderr (the rootfs is read-only; /dev/shm is not).
FIFTY_MB_SCRIPT = (
    f"head -c {FIFTY_MB} /dev/urandom > /dev/shm/blob && md5sum /dev/shm/blob >&2 && cat /dev/shm/blob"
)


async def actr(
    daemon: DaemonHandle, *args: str, stdin: bytes = b"", timeout: float = 60
) -> tuple[int, bytes, bytes]:
    with trio.fail_after(timeout):
        result = await trio.run_process(
            [*ACTR, "--address", daemon.address, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout, result.stderr


async def started(client: Client, bundle) -> str:
    cid = unique_id("ex")
    await client.create_container(cid, str(bundle))
    return cid


async def output_of(client: Client, cid: str, pid: int) -> tuple[bytes, bytes, int | None]:
    out, err, status = b"", b"", None
    with trio.fail_after(30):
        async for chunk in client.follow_output(cid, pid):
            out += chunk.stdout
            err += chunk.stderr
            status = chunk.status
    return out, err, status


async def events_until(events, predicate) -> list[Event]:
    seen: list[Event] = []
    with trio.fail_after(30):
        async for event in events:
            seen.append(event)
            if predicate(event):
                return seen
    return seen


# --------------------------------------------------------------------------- exec


async def test_exec_echo_returns_output_events_and_state(client: Client, sleep_bundle) -> None:
    cid = await started(client, sleep_bundle)
    async with client.subscribe() as events:
        pid = await client.add_process(cid, ["sh", "-c", "echo hello; echo oops >&2; read x; exit 3"])
        [info] = await client.containers()
        assert [p.args for p in info.processes] == [
            ["sleep", "1000000"],
            ["sh", "-c", "echo hello; echo oops >&2; read x; exit 3"],
        ]
        assert info.processes[1].pid == pid
        await client.write_input(cid, b"\n", pid)
        out, err, status = await output_of(client, cid, pid)
        seen = await events_until(events, lambda e: e.type == EventType.EXIT and e.pid == pid)
    assert (out, err, status) == (b"hello\n", b"oops\n", 3)
    assert [(e.type, e.id, e.pid, e.status) for e in seen if e.pid == pid] == [
        (EventType.START_PROCESS, cid, pid, None),
        (EventType.EXIT, cid, pid, 3),
    ]
    [info] = await client.containers()
    assert info.status == "running" and [p.pid for p in info.processes] == [info.pid]


async def test_exec_through_actr_passes_output_and_exit_status(
    daemon: DaemonHandle, client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    code, out, err = await actr(
        daemon, "containers", "exec", "--id", cid, "-a", "--", "sh", "-c", "echo hi; exit 7"
    )
    assert (code, out) == (7, b"hi\n"), err
    code, out, err = await actr(daemon, "containers", "exec", "--id", cid, "--", "sleep", "1000")
    assert code == 0, err
    pid = int(out)
    code, out, err = await actr(daemon, "containers", "state", cid)
    assert code == 0, err
    assert any(line.split()[:2] == [str(pid), "exec"] for line in out.decode().splitlines())
    async with client.subscribe() as events:
        code, _, err = await actr(daemon, "containers", "kill", "-p", str(pid), "-s", "KILL", cid)
        assert code == 0, err
        seen = await events_until(events, lambda e: e.type == EventType.EXIT)
    assert (seen[-1].pid, seen[-1].status) == (pid, 137)
    [info] = await client.containers()
    assert info.status == "running"


async def test_state_of_one_container_carries_only_that_one(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    first, second = await started(client, sleep_bundle), await started(client, sleep_bundle)
    assert [c.id for c in (await client.state(second)).containers] == [second]
    assert (await client.state(unique_id("absent"))).containers == []
    assert {first, second} <= {c.id for c in (await client.state()).containers}
    code, out, err = await actr(daemon, "--json", "containers", "state", first)
    assert code == 0, err
    assert json.loads(out)["id"] == first


async def test_env_cwd_uid_gid_are_applied(daemon: DaemonHandle, client: Client, sleep_bundle) -> None:
    cid = await started(client, sleep_bundle)
    script = 'id -u; id -g; id -G; pwd; echo "$FOO"; echo "$PATH"'
    code, out, err = await actr(
        daemon, "containers", "exec", "--id", cid, "-a", "-u", "1000", "-g", "1001",
        "--additional-gids", "10,20", "--cwd", "/tmp", "-e", "FOO=bar baz", "--", "sh", "-c", script,
    )  # fmt: skip
    assert code == 0, err
    lines = out.decode().splitlines()
    assert lines[:2] == ["1000", "1001"]
    assert set(lines[2].split()) == {"1001", "10", "20"}
    assert lines[3:5] == ["/tmp", "bar baz"]
    assert "/bin" in lines[5]  # the container's own environment is kept
    pid = await client.add_process(cid, ["id", "-u"], user=User(uid=65534, gid=65534))
    assert (await output_of(client, cid, pid))[0] == b"65534\n"


async def test_tty_gets_a_pty(daemon: DaemonHandle, client: Client, sleep_bundle) -> None:
    cid = await started(client, sleep_bundle)
    code, out, err = await actr(daemon, "containers", "exec", "--id", cid, "-a", "-t", "--", "tty")
    assert code == 0, err
    assert out.decode().strip().startswith("/dev/pts/")
    pid = await client.add_process(
        cid, ["sh", "-c", "stty size; read x; stty size"], terminal=True, rows=33, cols=111
    )
    with trio.fail_after(10):
        out = b""
        async for chunk in client.follow_output(cid, pid):
            out += chunk.stdout
            if b"33 111" in out:
                break
    await client.resize_terminal(cid, 50, 150, pid)
    await client.write_input(cid, b"\r", pid)
    out, _, status = await output_of(client, cid, pid)
    assert status == 0
    assert out.replace(b"\r", b"").split(b"\n")[-2] == b"50 150"


async def test_stdin_round_trip_through_cat(daemon: DaemonHandle, client: Client, sleep_bundle) -> None:
    cid = await started(client, sleep_bundle)
    data = os.urandom(300_000) + b"end\n"  # more than one WriteInput chunk and one pipe buffer
    code, out, err = await actr(daemon, "containers", "exec", "--id", cid, "-a", "--", "cat", stdin=data)
    assert code == 0, err
    assert out == data


async def test_a_devnull_stdin_is_closed_at_once(daemon: DaemonHandle, client: Client, sleep_bundle) -> None:
    """``exec -a`` with stdin /dev/null (as from a script) closes the process's stdin itself, with
    no forwarding thread: ``cat`` sees EOF and the exit status comes back."""
    cid = await started(client, sleep_bundle)
    with trio.fail_after(60):
        result = await trio.run_process(
            [*ACTR, "--address", daemon.address, "containers", "exec", "--id", cid, "-a", "--",
             "sh", "-c", "cat; echo eof; exit 7"],
            stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    assert result.returncode == 7, result.stderr
    assert result.stdout == b"eof\n"


# --------------------------------------------------------------------------- 50 MB, byte-exact


async def test_fifty_megabytes_via_attach_and_via_logs(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    cid = await started(client, sleep_bundle)
    started_at = trio.current_time()
    code, out, err = await actr(
        daemon, "containers", "exec", "--id", cid, "-a", "--", "sh", "-c", FIFTY_MB_SCRIPT, timeout=120
    )
    attach_s = trio.current_time() - started_at
    assert code == 0, err
    assert len(out) == FIFTY_MB
    assert hashlib.md5(out).hexdigest() == err.split()[0].decode()
    [info] = await client.containers()
    assert len(info.processes) == 1
    pid = int(
        (daemon.state_dir / "logs" / cid)
        .glob("exec-*.stdout.log")
        .__next__()
        .name.split("-")[1]
        .split(".")[0]
    )
    started_at = trio.current_time()
    code, logged, logged_err = await actr(daemon, "containers", "logs", "-p", str(pid), cid, timeout=120)
    logs_s = trio.current_time() - started_at
    assert code == 0, logged_err
    assert hashlib.md5(logged).hexdigest() == hashlib.md5(out).hexdigest()
    assert logged_err == err
    print(f"50 MB: attach {attach_s:.2f} s (including generating it), logs {logs_s:.2f} s")


# --------------------------------------------------------------------------- attach


async def test_killed_attached_client_leaves_the_container_running(
    daemon: DaemonHandle, client: Client, bundle_factory
) -> None:
    bundle = bundle_factory(
        "sh", "-c", "echo started; while read line; do echo got-$line; done; sleep 1000000"
    )
    cid = unique_id("att")
    process = await trio.lowlevel.open_process(
        [*ACTR, "--address", daemon.address, "containers", "start", "-a", cid, str(bundle)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        with trio.fail_after(30):
            seen = b""
            while b"started" not in seen:
                seen += await process.stdout.receive_some()
            await process.stdin.send_all(b"one\n")
            while b"got-one" not in seen:
                seen += await process.stdout.receive_some()
    finally:
        process.kill()  # SIGKILL
        await process.wait()
    assert process.returncode == -signal.SIGKILL
    [info] = await client.containers()
    assert (info.id, info.status) == (cid, "running")
    os.kill(info.pid, 0)
    # A second client attaches later; the later output reaches the logs and that client.
    await client.write_input(cid, b"two\n")
    with trio.fail_after(10):
        out = b""
        async for chunk in client.follow_output(cid):
            out += chunk.stdout
            if b"got-two" in out:
                break
    assert out == b"started\ngot-one\ngot-two\n"
    assert (daemon.state_dir / "logs" / cid / "stdout.log").read_bytes() == out


async def test_logs_tail_and_after_exit(daemon: DaemonHandle, client: Client, bundle_factory) -> None:
    bundle = bundle_factory("sh", "-c", "seq 1 100; echo problem >&2")
    cid = unique_id("logs")
    async with client.subscribe() as events:
        await client.create_container(cid, str(bundle))
        await events_until(events, lambda e: e.type == EventType.EXIT and e.id == cid)
    code, out, err = await actr(daemon, "containers", "logs", cid)
    assert (code, out, err) == (0, "".join(f"{n}\n" for n in range(1, 101)).encode(), b"problem\n")
    code, out, err = await actr(daemon, "containers", "logs", "--tail", "3", cid)
    assert (code, out) == (0, b"98\n99\n100\n"), err
    code, out, _ = await actr(daemon, "containers", "logs", "-f", "--tail", "0", cid)
    assert (code, out) == (0, b"")
    # start -a of an exited-at-once container still shows all of it, and its status.
    cid2 = unique_id("logs")
    code, out, err = await actr(daemon, "containers", "start", "-a", cid2, str(bundle))
    assert (code, out, err) == (0, "".join(f"{n}\n" for n in range(1, 101)).encode(), b"problem\n")


async def test_init_exit_ends_exec_processes_first(client: Client, sleep_bundle) -> None:
    cid = await started(client, sleep_bundle)
    pids = [await client.add_process(cid, ["sleep", "1000"]) for _ in range(2)]
    [info] = await client.containers()
    async with client.subscribe() as events:
        await client.signal(cid, signal.SIGKILL)
        seen = await events_until(events, lambda e: e.type == EventType.EXIT and e.pid == info.pid)
    exits = [(e.pid, e.status) for e in seen if e.type == EventType.EXIT]
    assert sorted(exits[:2]) == sorted((pid, 137) for pid in pids)
    assert exits[2] == (info.pid, 137)
    for pid in pids:
        assert (await output_of(client, cid, pid))[2] == 137


# --------------------------------------------------------------------------- bad input


async def test_bad_exec_requests_get_clear_errors(daemon: DaemonHandle, client: Client, sleep_bundle) -> None:
    with pytest.raises(RequestFailed) as failure:
        await client.add_process("nobody-home", ["true"])
    assert failure.value.code == ErrorCode.NOT_FOUND and "nobody-home" in failure.value.message
    cid = await started(client, sleep_bundle)
    # The client library validates too, so send what a foreign client might.
    reply = await raw_request(
        daemon.address, json.dumps({"type": "AddProcess", "request_id": "r", "id": cid, "args": []}).encode()
    )
    assert reply.code == ErrorCode.INVALID_REQUEST and "empty" in reply.message
    reply = await raw_request(
        daemon.address,
        json.dumps(
            {"type": "AddProcess", "request_id": "r", "id": cid, "args": ["true"], "cwd": "tmp"}
        ).encode(),
    )
    assert reply.code == ErrorCode.INVALID_REQUEST and "absolute" in reply.message
    with pytest.raises(RequestFailed) as failure:
        await client.add_process(cid, ["true"], cwd="/no/such/dir")
    assert failure.value.code == ErrorCode.RUNTIME_FAILED and "/no/such/dir" in failure.value.message
    with pytest.raises(RequestFailed) as failure:
        await client.add_process(cid, ["/no/such/program"])
    assert failure.value.code == ErrorCode.RUNTIME_FAILED and "/no/such/program" in failure.value.message
    with pytest.raises(RequestFailed) as failure:
        await client.read_output(cid, 999_999)
    assert failure.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(RequestFailed) as failure:
        await client.resize_terminal(cid, 10, 10)
    assert failure.value.code == ErrorCode.INVALID_STATE
    pid = await client.add_process(cid, ["cat"])
    await client.write_input(cid, b"", pid, close=True)
    with pytest.raises(RequestFailed) as failure:
        await client.write_input(cid, b"late", pid)
    assert failure.value.code == ErrorCode.INVALID_STATE
    # Through actr: one line on stderr, exit status 1 (2 for usage errors).
    code, _, err = await actr(daemon, "containers", "exec", "--id", "nobody-home", "--", "true")
    assert code == 1 and err.decode().count("\n") == 1 and "not_found" in err.decode()
    code, _, err = await actr(daemon, "containers", "exec", "--id", cid, "--")
    assert code == 2 and b"after --" in err
    code, _, err = await actr(daemon, "containers", "exec", "--id", cid, "--cwd", "/nope", "--", "true")
    assert code == 1 and b"/nope" in err
    [info] = await client.containers()
    assert info.status == "running"  # the daemon and the container carry on


async def test_logs_of_old_exec_processes_are_bounded(
    daemon: DaemonHandle, client: Client, sleep_bundle
) -> None:
    """A health check exec'd every few seconds must not fill the state directory."""
    cid = await started(client, sleep_bundle)
    kept = 64  # containerd_actors.daemon.container.actor.KEPT_EXITED_EXECS
    pids = []
    for _ in range(kept + 2):
        # It writes to stdout: an exec's log file is made with its first byte.
        pid = await client.add_process(cid, ["echo", "hi"])
        # Exited and its exit handled (pub/sub could drop some of 130 events in a burst; this cannot).
        assert (await output_of(client, cid, pid))[2] == 0
        pids.append(pid)
    logs = daemon.state_dir / "logs" / cid
    assert len(list(logs.glob("exec-*.stdout.log"))) == kept
    assert len(list(logs.glob("exec-*.exited.json"))) == kept
    assert not list(logs.glob("exec-*.stderr.log"))  # nothing written there, no file made
    for pid in pids[:2]:
        with pytest.raises(RequestFailed) as failure:
            await client.read_output(cid, pid)
        assert failure.value.code == ErrorCode.NOT_FOUND
    assert (await output_of(client, cid, pids[2]))[2] == 0


async def test_a_slow_reader_never_blocks_the_writer_and_loses_nothing(client: Client, sleep_bundle) -> None:
    cid = await started(client, sleep_bundle)
    size = 20 << 20
    script = f"head -c {size} /dev/urandom > /dev/shm/b && md5sum /dev/shm/b >&2 && cat /dev/shm/b"
    async with client.subscribe() as events:
        pid = await client.add_process(cid, ["sh", "-c", script])
        # The reader takes 64 KiB, then stalls while the process writes the other 20 MB and exits.
        first = await client.read_output(cid, pid, wait=10, max_bytes=64 << 10)
        exit_event = (await events_until(events, lambda e: e.type == EventType.EXIT))[-1]
    assert (exit_event.pid, exit_event.status) == (pid, 0)
    out = first.stdout
    err = first.stderr
    async for chunk in client.follow_output(
        cid, pid, offsets=(first.next_stdout_offset, first.next_stderr_offset)
    ):
        out += chunk.stdout
        err += chunk.stderr
    assert len(out) == size
    assert hashlib.md5(out).hexdigest() == err.split()[0].decode()


async def test_stdin_eof_reaches_the_init_of_start_attach(daemon: DaemonHandle, bundle_factory) -> None:
    """The reaper keeps a copy of the init's stdin pipe; a client's EOF must make it let go too."""
    bundle = bundle_factory("sh", "-c", "cat; echo done")
    code, out, err = await actr(
        daemon, "containers", "start", "-a", unique_id("eof"), str(bundle), stdin=b"abc\n"
    )
    assert (code, out) == (0, b"abc\ndone\n"), err
