"""A NATS node behind a link the bench can cut: a network namespace and a veth pair.

Only ``bench faults`` uses this (the partition fault), and only as root
(``ip netns add`` needs CAP_SYS_ADMIN); elsewhere the fault falls back to
SIGSTOP of the node and says so. Layout:

    host                                     namespace NS
    veth H  198.18.0.1/30  <---- link ---->  veth N  198.18.0.2/30
    nodes 1, 2: clients on 127.0.0.1,        node 3: clients, routes and
    routes listen on 198.18.0.1              monitoring on 198.18.0.2

198.18.0.0/15 is the range reserved for network benchmark tests (RFC 2544),
so these addresses never clash with a real network. The cut sets N down
inside the namespace: H loses its carrier but keeps its address, so nodes
1 and 2 still reach each other on 198.18.0.1; node 3 and the processes
connected to it lose everyone. Healing sets N up again.
"""

from __future__ import annotations

import os
import subprocess
from typing import Protocol

HOST_ADDR = "198.18.0.1"
NS_ADDR = "198.18.0.2"
PREFIX = 30
_ID = f"{os.getpid() % 100000}"
NAMESPACE = f"sbfault{_ID}"
VETH_HOST = f"sbh{_ID}"  # interface names: at most 15 characters
VETH_NS = f"sbn{_ID}"


class _Node(Protocol):
    name: str
    port: int
    route_port: int
    http_port: int


def _ip(*args: str, inside: bool = False) -> None:
    argv = ["ip", "netns", "exec", NAMESPACE, "ip", *args] if inside else ["ip", *args]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=10)


def available() -> str | None:
    """None if a namespace can be made here, else why not."""
    if os.geteuid() != 0:
        return "not root (ip netns add needs CAP_SYS_ADMIN)"
    try:
        subprocess.run(["ip", "netns", "add", f"{NAMESPACE}probe"], check=True, capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", f"{NAMESPACE}probe"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns add failed: {exc}"
    return None


def setup() -> None:
    teardown()
    _remove_stale()
    _ip("netns", "add", NAMESPACE)
    _ip("link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
    _ip("link", "set", VETH_NS, "netns", NAMESPACE)
    _ip("addr", "add", f"{HOST_ADDR}/{PREFIX}", "dev", VETH_HOST)
    _ip("link", "set", VETH_HOST, "up")
    _ip("addr", "add", f"{NS_ADDR}/{PREFIX}", "dev", VETH_NS, inside=True)
    _ip("link", "set", VETH_NS, "up", inside=True)
    _ip("link", "set", "lo", "up", inside=True)


def teardown() -> None:
    subprocess.run(["ip", "link", "del", VETH_HOST], capture_output=True, timeout=10)
    subprocess.run(["ip", "netns", "del", NAMESPACE], capture_output=True, timeout=10)


def _remove_stale() -> None:
    """Namespaces and links of an earlier bench whose process is gone (killed
    before its teardown): their address would shadow this one's."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout.split()
    for name in names:
        pid = name.removeprefix("sbfault")
        if name.startswith("sbfault") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "link", "del", f"sbh{pid}"], capture_output=True, timeout=10)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def cut() -> None:
    _ip("link", "set", VETH_NS, "down", inside=True)


def heal() -> None:
    _ip("link", "set", VETH_NS, "up", inside=True)


def exec_argv(argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", NAMESPACE, *argv]


def rehost(conf: str, node: _Node, nodes: list[_Node], in_ns: str) -> str:
    """sbctl/cluster.py's node config with this layout's addresses: the node
    ``in_ns`` everything on NS_ADDR; the others' route listeners on
    HOST_ADDR; every route URL at the address its node listens on."""
    own = NS_ADDR if node.name == in_ns else "127.0.0.1"
    conf = conf.replace(f"listen: 127.0.0.1:{node.port}", f"listen: {own}:{node.port}")
    conf = conf.replace(f"http: 127.0.0.1:{node.http_port}", f"http: {own}:{node.http_port}")
    route_host = NS_ADDR if node.name == in_ns else HOST_ADDR
    conf = conf.replace(f"listen: 127.0.0.1:{node.route_port}", f"listen: {route_host}:{node.route_port}")
    for n in nodes:
        addr = NS_ADDR if n.name == in_ns else HOST_ADDR
        conf = conf.replace(f"nats-route://127.0.0.1:{n.route_port}", f"nats-route://{addr}:{n.route_port}")
    return conf
