"""Records shared by requests and replies: who a process runs as, what a container and a
checkpoint look like, and the host.
"""

from __future__ import annotations

# Before attrs: its own classes' methods, and then these, from the cache (``attrs_code``).
from containerd_actors.protocol import attrs_code  # noqa: F401

# isort: split
from attrs import field, frozen


@frozen
class User:
    """The identity a process runs as inside the container."""

    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(factory=list)


@frozen
class ProcessInfo:
    """One process the daemon tracks inside a container (the init process or an exec'd one)."""

    pid: int
    args: list[str]
    env: list[str]
    cwd: str
    user: User
    terminal: bool = False


@frozen
class ContainerInfo:
    """What State reports for one container; ``pid`` is the init process (the original's PID1)."""

    id: str
    bundle: str
    status: str
    pid: int
    processes: list[ProcessInfo] = field(factory=list)


@frozen
class MachineInfo:
    """The host the daemon runs on, as the original's State reply described it."""

    id: str
    cpus: int
    memory: int


@frozen
class Checkpoint:
    """A stored checkpoint: the CRIU options it was really taken with, and when (Unix seconds)."""

    name: str
    tcp: bool
    unix_sockets: bool
    shell: bool
    exit: bool
    created: float
