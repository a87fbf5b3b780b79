"""A network namespace joined to this one by a veth pair, for tests that need a second host.

Addresses come from 198.18.0.0/15 (RFC 2544's benchmarking range, never routed), one /30 per pair
chosen at random among those not already on an interface here, so that the test touches nothing
but what it created. Everything is named per run (``actr-<hex>``, ``vt<hex>a``/``vt<hex>b``) and
deleted by that name: deleting the namespace destroys its end of the pair, and with it the other.
"""

from __future__ import annotations

import ipaddress
import random
import shutil
import subprocess
import uuid

import attrs

#: RFC 2544: addresses for benchmarking that no network routes.
TEST_RANGE = ipaddress.ip_network("198.18.0.0/15")


class NetnsRefused(Exception):
    """This host does not let the test make a namespace or a veth pair; the message says why."""


@attrs.frozen
class VethNetns:
    name: str
    host_link: str
    ns_link: str
    #: This (root) namespace's end of the pair, where the daemon listens.
    host_address: str
    #: The other namespace's end, where its clients come from.
    ns_address: str

    def exec_argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _free_block() -> ipaddress.IPv4Network:
    shown = _ip("-4", "-o", "addr", "show").stdout
    used = [ipaddress.ip_interface(word).network for word in shown.split() if "/" in word and "." in word]
    for _ in range(100):
        block = ipaddress.ip_network(
            (int(TEST_RANGE.network_address) + 4 * random.randrange(TEST_RANGE.num_addresses // 4), 30)
        )
        if not any(block.overlaps(net) for net in used):
            return block
    raise NetnsRefused("no free /30 in 198.18.0.0/15")


def create() -> VethNetns:
    """Make the namespace and the pair, or raise ``NetnsRefused`` (after removing what was made)."""
    if shutil.which("ip") is None:
        raise NetnsRefused("the ip command (iproute2) is not installed")
    tag = uuid.uuid4().hex[:8]
    block = _free_block()
    host_ip, ns_ip = list(block.hosts())
    made = VethNetns(f"actr-{tag}", f"vt{tag}a", f"vt{tag}b", str(host_ip), str(ns_ip))
    added = _ip("netns", "add", made.name)
    if added.returncode != 0:
        raise NetnsRefused(f"ip netns add was refused: {added.stderr.strip()}")
    try:
        steps = [
            ("link", "add", made.host_link, "type", "veth", "peer", "name", made.ns_link),
            ("link", "set", made.ns_link, "netns", made.name),
            ("addr", "add", f"{host_ip}/30", "dev", made.host_link),
            ("link", "set", made.host_link, "up"),
            ("-n", made.name, "addr", "add", f"{ns_ip}/30", "dev", made.ns_link),
            ("-n", made.name, "link", "set", made.ns_link, "up"),
            ("-n", made.name, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                raise NetnsRefused(f"ip {' '.join(step)} was refused: {done.stderr.strip()}")
    except BaseException:
        remove(made)
        raise
    return made


def remove(made: VethNetns) -> None:
    """Delete by name; the host end goes with the namespace's end, but is deleted too if it is left."""
    _ip("netns", "delete", made.name)
    if _ip("link", "show", made.host_link).returncode == 0:
        _ip("link", "delete", made.host_link)


def leftovers(made: VethNetns) -> list[str]:
    """What of ``made`` still exists (for the test to assert its own cleanup)."""
    left = []
    if made.name in _ip("netns", "list").stdout.split():
        left.append(made.name)
    if _ip("link", "show", made.host_link).returncode == 0:
        left.append(made.host_link)
    return left


@attrs.frozen
class NetnsPair:
    """Two network namespaces joined to each other (not to this one) by a veth pair: two "hosts"."""

    a: str
    b: str
    a_link: str
    b_link: str
    a_address: str
    b_address: str

    def exec_argv(self, namespace: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", namespace, *argv]

    def enter_argv(self, namespace: str) -> tuple[str, ...]:
        """A command prefix that runs a program in ``namespace``'s network only. Not ``ip netns
        exec``, which also mounts a fresh /sys and so hides the cgroup mounts runc needs."""
        return ("nsenter", f"--net=/run/netns/{namespace}")


def create_pair() -> NetnsPair:
    """Make both namespaces and the pair between them, or raise ``NetnsRefused`` (after removing
    what was made). Their /30 is one no interface of this namespace uses; nothing routes to it
    from here, since neither end is in this namespace."""
    if shutil.which("ip") is None:
        raise NetnsRefused("the ip command (iproute2) is not installed")
    tag = uuid.uuid4().hex[:8]
    block = _free_block()
    a_ip, b_ip = list(block.hosts())
    made = NetnsPair(f"actr-{tag}a", f"actr-{tag}b", f"vt{tag}a", f"vt{tag}b", str(a_ip), str(b_ip))
    created: list[str] = []
    try:
        for name in (made.a, made.b):
            added = _ip("netns", "add", name)
            if added.returncode != 0:
                raise NetnsRefused(f"ip netns add was refused: {added.stderr.strip()}")
            created.append(name)
        steps = [
            (
                "-n",
                made.a,
                "link",
                "add",
                made.a_link,
                "type",
                "veth",
                "peer",
                "name",
                made.b_link,
                "netns",
                made.b,
            ),
            ("-n", made.a, "addr", "add", f"{a_ip}/30", "dev", made.a_link),
            ("-n", made.b, "addr", "add", f"{b_ip}/30", "dev", made.b_link),
        ]
        for name, link in ((made.a, made.a_link), (made.b, made.b_link)):
            steps += [("-n", name, "link", "set", link, "up"), ("-n", name, "link", "set", "lo", "up")]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                raise NetnsRefused(f"ip {' '.join(step)} was refused: {done.stderr.strip()}")
    except BaseException:
        for name in created:
            _ip("netns", "delete", name)
        raise
    return made


def remove_pair(made: NetnsPair) -> None:
    """Delete both namespaces by name; the veth pair goes with them."""
    for name in (made.a, made.b):
        _ip("netns", "delete", name)


def pair_leftovers(made: NetnsPair) -> list[str]:
    listed = _ip("netns", "list").stdout.split()
    return [name for name in (made.a, made.b) if name in listed]
