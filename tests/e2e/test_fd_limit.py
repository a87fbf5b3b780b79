"""The API server out of file descriptors (EMFILE), with the real daemon and real runc.

The server's soft RLIMIT_NOFILE is lowered while it runs (``prlimit`` on its pid), a little above
what it holds, and containers are started until one start is refused. That start (and an exec
then) must be answered with a clear error naming the limit, leave nothing behind (no record, no
runc container, no descriptor), publish no event and crash no actor; the daemon keeps serving,
and once containers have exited and freed their descriptors, the next start works.
"""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from support.daemon import running_daemon, unique_id
from support.event_waits import next_event
from support.restarts import server_pid

from containerd_actors.client import Client, RequestFailed
from containerd_actors.protocol import ErrorCode, EventType

#: Descriptors above what the idle server holds: room for a few starts (each keeps ~4), no more.
HEADROOM = 24
#: Starts tried before the limit must have been hit.
MAX_STARTS = 40
#: Containers killed to free descriptors for the start that must then work.
FREED = 4


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_a_start_and_an_exec_at_the_fd_limit_are_refused_cleanly_and_the_daemon_goes_on(
    state_dir: Path, sleep_bundle: Path
) -> None:
    async with running_daemon(state_dir) as handle:
        async with Client.connect(handle.address, timeout=60) as client, client.subscribe() as events:
            # One start first, so that what every start loads once is loaded before the count.
            first = unique_id("fd")
            await client.create_container(first, str(sleep_bundle))
            started = [first]
            server = server_pid(handle)
            _soft, hard = resource.prlimit(server, resource.RLIMIT_NOFILE)
            limit = open_fds(server) + HEADROOM
            resource.prlimit(server, resource.RLIMIT_NOFILE, (limit, hard))

            refused: RequestFailed | None = None
            for _ in range(MAX_STARTS):
                cid = unique_id("fd")
                before = open_fds(server)
                try:
                    await client.create_container(cid, str(sleep_bundle))
                except RequestFailed as failure:
                    refused = failure
                    break
                started.append(cid)
            assert refused is not None, f"{MAX_STARTS} starts under a limit of {limit} fds all worked"
            assert refused.code == ErrorCode.RUNTIME_FAILED
            assert f"too many open files (RLIMIT_NOFILE {limit}" in refused.message
            # Nothing of the refused start stays: no descriptor, no state, no runc container.
            assert open_fds(server) <= before
            assert not (state_dir / "containers" / cid).exists()
            assert sorted(handle.runc_ids()) == sorted(started)
            listed = [info.id for info in await client.containers()]
            assert sorted(listed) == sorted(started)

            # Refused again and again, it still leaks nothing (the descriptors it made are freed).
            for _ in range(3):
                with pytest.raises(RequestFailed):
                    await client.create_container(unique_id("fd"), str(sleep_bundle))
            assert open_fds(server) <= before

            # An exec at the limit: refused the same way, no process left in the container.
            with pytest.raises(RequestFailed) as exec_failure:
                await client.add_process(first, ["sleep", "1000000"])
            assert exec_failure.value.code == ErrorCode.RUNTIME_FAILED
            assert "too many open files (RLIMIT_NOFILE" in exec_failure.value.message
            [info] = (await client.state(first)).containers
            assert [process.pid for process in info.processes] == [info.pid]

            # With a terminal (a console socket instead of pipes; it takes fewer descriptors, so
            # one may still fit): refused the same way once the limit is reached.
            tty_start = None
            for _ in range(MAX_STARTS):
                cid = unique_id("fd")
                try:
                    await client.create_container(cid, str(sleep_bundle), terminal=True)
                except RequestFailed as failure:
                    tty_start = failure
                    break
                started.append(cid)
            assert tty_start is not None and "too many open files (RLIMIT_NOFILE" in tty_start.message
            tty_execs = 0
            tty_exec = None
            for _ in range(MAX_STARTS):
                try:
                    await client.add_process(first, ["sleep", "1000000"], terminal=True)
                except RequestFailed as failure:
                    tty_exec = failure
                    break
                tty_execs += 1
            assert tty_exec is not None and "too many open files (RLIMIT_NOFILE" in tty_exec.message
            [info] = (await client.state(first)).containers
            assert len(info.processes) == 1 + tty_execs
            assert sorted(handle.runc_ids()) == sorted(started)

            # Containers that exit free their descriptors: the next start works.
            for cid in started[-FREED:]:
                await client.signal(cid, signal.SIGKILL)
                await next_event(events, EventType.EXIT, cid)
                started.remove(cid)
            again = unique_id("fd")
            await client.create_container(again, str(sleep_bundle))
            started.append(again)
            await next_event(events, EventType.START_CONTAINER, again)

            assert sorted(info.id for info in await client.containers()) == sorted(started)
            assert sorted(handle.runc_ids()) == sorted(started)
            counters = {counter.name: counter.count for counter in (await client.metrics()).counters}
            assert counters["actor-restarts"] == 0
            # No event for what never started, and no actor restart: the journal holds only these.
            kinds = {(event.type, event.id) for event in (await client.events_page(from_seq=1)).events}
            assert not [kind for kind in kinds if kind[0] == EventType.ACTOR_RESTART]
            starts = {id for kind, id in kinds if kind == EventType.START_CONTAINER}
            assert starts == {*started, *started_and_killed(kinds)}
            journal = (await client.events_page(from_seq=1)).events
            assert len([event for event in journal if event.type == EventType.START_PROCESS]) == tty_execs
        log = handle.log_text()
        assert "crashed" not in log and "could not be undone" not in log


def started_and_killed(kinds: set[tuple[str, str]]) -> set[str]:
    """The ids of the containers whose exit is in the journal (the ones killed above)."""
    return {id for kind, id in kinds if kind == EventType.EXIT}


def lowest_free_fd(pid: int) -> int:
    """The descriptor number the process's next open gets (the lowest unused one)."""
    used = {int(name) for name in os.listdir(f"/proc/{pid}/fd")}
    return next(number for number in range(len(used) + 1) if number not in used)


async def test_other_requests_at_the_fd_limit_are_answered_and_crash_no_actor(
    state_dir: Path, bundle_factory: Callable[..., Path]
) -> None:
    """Stats, pause and resume, a checkpoint, logs and the journal, each asked with the server
    unable to open one more descriptor: each is answered, done or refused with an error that names
    the limit (never "internal error"), no actor crashes, and once the limit is lifted the same
    requests work."""
    # A bundle of its own: the checkpoints are kept in it, and the shared one must stay without any.
    sleep_bundle = bundle_factory("sleep", "1000000")
    async with running_daemon(state_dir) as handle:
        async with Client.connect(handle.address, timeout=60) as client:
            first = unique_id("fdo")
            await client.create_container(first, str(sleep_bundle))
            [info] = (await client.state(first)).containers
            server = server_pid(handle)
            original = resource.prlimit(server, resource.RLIMIT_NOFILE)

            async def each_request(*, at_limit: bool) -> dict[str, str]:
                """What each request got: 'ok', or its error code and message."""
                outcomes: dict[str, str] = {}
                requests = {
                    "stats": lambda: client.stats(first),
                    "pause": lambda: client.pause(first),
                    "resume": lambda: client.resume(first),
                    "checkpoint": lambda: client.create_checkpoint(first, unique_id("cp")),
                    "logs": lambda: client.read_output(first),
                    "journal": lambda: client.events_page(from_seq=1),
                    "state": lambda: client.state(first),
                    "metrics": lambda: client.metrics(),
                    "exec": lambda: client.add_process(first, ["true"]),
                }
                for name, request in requests.items():
                    if at_limit:
                        # The next descriptor the server opens would be past the limit: EMFILE.
                        resource.prlimit(
                            server, resource.RLIMIT_NOFILE, (lowest_free_fd(server), original[1])
                        )
                    try:
                        await request()
                        outcomes[name] = "ok"
                    except RequestFailed as failure:
                        outcomes[name] = f"{failure.code}: {failure.message}"
                    finally:
                        resource.prlimit(server, resource.RLIMIT_NOFILE, original)
                return outcomes

            at_limit = await each_request(at_limit=True)
            for name, outcome in at_limit.items():
                assert outcome == "ok" or "too many open files" in outcome, (name, outcome)
            for name in ("state", "metrics"):  # nothing to open: answered from memory
                assert at_limit[name] == "ok", (name, at_limit[name])
            assert at_limit["pause"] != "ok" and at_limit["exec"] != "ok", at_limit  # each needs a pipe
            if at_limit["checkpoint"] != "ok":  # a refused dump leaves no half-made checkpoint
                assert await client.list_checkpoints(first) == [], at_limit
            # A refused pause leaves the container running, with the same init.
            [now] = (await client.state(first)).containers
            assert (now.status, now.pid) == ("running", info.pid), (now, at_limit)

            freed = await each_request(at_limit=False)
            for name in ("stats", "pause", "resume", "logs", "journal", "state", "metrics", "exec"):
                assert freed[name] == "ok", (name, freed[name], at_limit)
            counters = {counter.name: counter.count for counter in (await client.metrics()).counters}
            assert counters["actor-restarts"] == 0, at_limit
            print("at the limit:", at_limit)
        log = handle.log_text()
        assert "crashed" not in log, log[-3000:]
