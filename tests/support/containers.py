"""Container listings for tests of ``actr``'s output, without a daemon."""

from __future__ import annotations

from containerd_actors.protocol import ContainerInfo, ProcessInfo, User


def make_container(index: int, status: str = "running") -> ContainerInfo:
    pid = 14000 + index
    return ContainerInfo(
        id=f"redis-{index}",
        bundle=f"/containers/redis-{index}",
        status=status,
        pid=pid,
        processes=[ProcessInfo(pid, ["redis-server"], ["PATH=/bin"], "/", User())],
    )
