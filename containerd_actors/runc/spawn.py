"""Run a short-lived helper process (runc) from the trio thread, waiting for it on a pidfd.

Why not ``trio.run_process``: it creates the process with ``subprocess.Popen`` on a worker thread,
and that hand-off (thread wake-up, GIL hand-over, result back into trio) cost 0.25-0.36 ms of the
daemon's CPU per runc call here, against 0.14-0.23 ms for ``os.posix_spawn`` (vfork, no thread)
and a pidfd in trio's epoll; under load the thread hops also stretched the time a start holds a
``--concurrency`` slot from ~105 to ~160 ms.

What ``subprocess`` did for us and this does by hand: signals Python ignores (SIGPIPE, SIGXFSZ)
are reset to their defaults in the child, and the child is always reaped, also when the caller
is cancelled or times out. Unlike ``close_fds=True`` nothing closes inherited descriptors: the
daemon's descriptors are close-on-exec (Python's default, and nng's), and a descriptor received
over a socket must be made so where it is received.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence

import attrs
import trio

from containerd_actors.host.fd_limit import for_children
from containerd_actors.host.fds import close_quietly, read_when_ready

#: Python ignores these; a child must get them back with their default actions, as subprocess does.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
#: Bytes read at a time from a captured stream.
_READ_CHUNK = 65536
#: After the child exits, how long a descendant that inherited its output may keep it open.
_EOF_GRACE_S = 1.0


@attrs.frozen
class Finished:
    """A helper's exit code and, when captured, what it wrote."""

    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""


class SpawnTimeout(Exception):
    """The process did not finish in time; it was killed and reaped."""


async def run(
    argv: Sequence[str],
    *,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    capture: bool = False,
    timeout: float,
    executable: str | None = None,
) -> Finished:
    """Run ``argv`` to completion and return its exit code (negative N when killed by signal N).

    ``stdin``/``stdout``/``stderr`` are descriptors the child gets as 0-2 (``/dev/null`` when
    None); with ``capture`` its stdout and stderr are read into the result instead.
    ``executable``: the file to execute with ``argv`` (default: ``argv[0]`` looked up on PATH).
    """
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = []
    ours: list[int] = []  # pipe ends kept by this process while the child runs
    theirs: list[int] = []  # pipe ends only the child needs
    try:
        if capture:
            # Each pair is recorded as soon as it exists: out of descriptors (EMFILE) at the
            # second pipe, the first is closed below instead of leaking.
            out_read, out_write = os.pipe()
            ours.append(out_read)
            theirs.append(out_write)
            err_read, err_write = os.pipe()
            ours.append(err_read)
            theirs.append(err_write)
            stdout, stderr = out_write, err_write
        for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
            if fd is None:
                mode = os.O_RDONLY if target == 0 else os.O_WRONLY
                actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, mode, 0))
            else:
                actions.append((os.POSIX_SPAWN_DUP2, fd, target))
        with for_children():  # runc, and a container without rlimits, keep the original limit
            if executable is None:
                pid = os.posix_spawnp(
                    argv[0], list(argv), _environment(), file_actions=actions, setsigdef=_RESET_SIGNALS
                )
            else:
                pid = os.posix_spawn(
                    executable, list(argv), _environment(), file_actions=actions, setsigdef=_RESET_SIGNALS
                )
    except BaseException:
        close_quietly(*ours, *theirs)
        raise
    close_quietly(*theirs)
    try:
        pidfd = os.pidfd_open(pid)
    except BaseException:
        close_quietly(*ours)
        _reap(pid, kill=True)
        raise
    try:
        with trio.move_on_after(timeout) as deadline:
            if capture:
                captured = await _read_both(ours[0], ours[1], pidfd)
            else:
                await trio.lowlevel.wait_readable(pidfd)
                captured = (b"", b"")
    finally:
        # Killed and reaped whatever happened above: a timeout, a cancel, or a normal exit.
        close_quietly(*ours)
        trio.lowlevel.notify_closing(pidfd)
        returncode = _reap(pid, kill=True, pidfd=pidfd)
        os.close(pidfd)
    if deadline.cancelled_caught:
        raise SpawnTimeout(f"{argv[0]} did not finish within {timeout:g} s")
    return Finished(returncode, *captured)


def _environment() -> Mapping[bytes, bytes] | Mapping[str, str]:
    """The environment as posix_spawn takes it fastest: a plain dict of bytes.

    Handed ``os.environ`` itself, posix_spawn walks it through its Python-level mapping methods,
    decoding every name and value again: about 45 us of the server's CPU per runc call, a few
    per cent of a container start. ``os.environ`` keeps its bytes in ``_data`` (CPython), always
    current, so nothing is copied and a change made to ``os.environ`` is still seen.
    """
    data = getattr(os.environ, "_data", None)
    return data if isinstance(data, dict) else os.environ


async def _read_both(out_fd: int, err_fd: int, pidfd: int) -> tuple[bytes, bytes]:
    """Read both streams to EOF (a child blocked on a full pipe would never exit), then the exit."""
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    both_done = trio.Event()
    open_streams = [out_fd, err_fd]

    async def drain(fd: int) -> None:
        os.set_blocking(fd, False)
        while True:
            data = await read_when_ready(fd, _READ_CHUNK)
            if not data:
                break
            chunks[fd].append(data)
        open_streams.remove(fd)
        if not open_streams:
            both_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain, out_fd)
        nursery.start_soon(drain, err_fd)
        await trio.lowlevel.wait_readable(pidfd)
        with trio.move_on_after(_EOF_GRACE_S):
            await both_done.wait()
        nursery.cancel_scope.cancel()
    for fd in (out_fd, err_fd):
        trio.lowlevel.notify_closing(fd)
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd])


def _reap(pid: int, *, kill: bool, pidfd: int = -1) -> int:
    """Collect the exit status, killing the process first if it still runs (never blocks long)."""
    try:
        finished, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return -signal.SIGKILL
    if finished == 0:
        if kill:
            try:
                if pidfd >= 0:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
