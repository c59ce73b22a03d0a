"""Local Apache Cassandra 5.0 nodes: jars, config, command line, readiness.

What ``switchboard cluster up --cassandra 1|3``, the ring benchmark and the
tests' Cassandra fixture (tests/services/cassandra.py) all start. No Docker,
no release tarball: ``org.apache.cassandra:cassandra-all`` and its runtime
closure are fetched once with Maven (deploy/cassandra/pom.xml) into
``~/.cache/switchboard/cassandra-<version>/lib`` and re-used; each node is a
plain JVM (``CassandraDaemon``) with every directory under its own workdir.

A ring of N nodes (1 or 3) listens on 127.0.0.1 ... 127.0.0.N (all of
127.0.0.0/8 is loopback on Linux), every node on the same CQL and storage
ports. The fastest safe start of an **empty** ring (docs/storage.md, "A local
ring"): every node is a seed and has its token fixed in advance
(``initial_token``, one token per node, evenly spaced), so no node
bootstraps, allocates tokens, streams or waits for another (``auto_bootstrap:
false`` is safe only because the ring never holds data before all N nodes
have joined: ``RingPorts`` records N and a data dir made for N is refused
for another N).

The one call for code that needs a ring for a while (benchmarks)::

    async with cassandra_ring(3, data_dir) as ring:
        url = ring.store_url("switchboard")   # LOCAL_QUORUM, RF min(3, N)
        ...                                    # ring.kill(2); await ring.wait_up(2)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbctl.embedded import free_port

CASSANDRA_VERSION = os.environ.get("SWITCHBOARD_CASSANDRA_VERSION", "5.0.8")
DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "cassandra"
# A JVM start is 10-20 s on an idle 2-core box, 25-45 s on a loaded one and
# three JVMs started together share the cores: 240 s only expires when a
# node is stuck.
START_TIMEOUT = float(os.environ.get("SWITCHBOARD_CASSANDRA_START_TIMEOUT", "240"))
# Maven resolving ~100 jars from a cold ~/.m2.
FETCH_TIMEOUT = 900.0
# Small heaps: three nodes share a small box with the fabric. 512 MiB holds a
# benchmark's memtables (a quarter of the heap by default) with room to spare.
RING_HEAP = "512M"
MAX_NODES = 3


class CassandraStartError(RuntimeError):
    pass


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "switchboard"


def lib_dir(version: str = CASSANDRA_VERSION) -> Path:
    return cache_root() / f"cassandra-{version}" / "lib"


def fetch_jars(version: str = CASSANDRA_VERSION) -> Path:
    """Return the cached lib/ for ``version``, fetching it with Maven if absent.

    The download goes to a sibling temp dir and is renamed into place only when
    complete, under a file lock: a half-fetched or concurrently fetched lib/ is
    never used.
    """
    target = lib_dir(version)
    if (target / f"cassandra-all-{version}.jar").is_file():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise CassandraStartError("mvn not found on PATH (apt-get install maven)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / f"cassandra-all-{version}.jar").is_file():
            return target  # another process fetched it while we waited
        work = Path(tempfile.mkdtemp(prefix="fetch-", dir=target.parent))
        try:
            shutil.copy(DEPLOY_DIR / "pom.xml", work / "pom.xml")
            proc = subprocess.run(
                [mvn, "-B", "-q", "dependency:copy-dependencies", f"-Dcassandra.version={version}",
                 "-DincludeScope=runtime", f"-DoutputDirectory={work / 'lib'}"],
                cwd=work, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=FETCH_TIMEOUT)
            if proc.returncode != 0 or not (work / "lib" / f"cassandra-all-{version}.jar").is_file():
                raise CassandraStartError(f"mvn exited with {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}")
            if target.exists():
                shutil.rmtree(target)
            (work / "lib").rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise CassandraStartError("java not found on PATH (Cassandra 5.0 needs Java 11 or 17)")
    return found


def jvm_options() -> list[str]:
    """deploy/cassandra/jvm.options: one option per line, '#' comments."""
    opts = []
    for line in (DEPLOY_DIR / "jvm.options").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            opts.append(line)
    return opts


def ring_tokens(n: int) -> list[int]:
    """One Murmur3 token per node, evenly spaced (0 for a single node)."""
    return [-(2**63) + (2 * i + 1) * 2**63 // n for i in range(n)]


@dataclass(kw_only=True)
class NodeSpec:
    """One node's configuration: ``write_config()`` renders
    deploy/cassandra/cassandra.yaml.template into ``workdir``, ``command()``
    is the JVM's argv (stdout/stderr are the caller's: ``log_path``)."""

    lib: Path
    workdir: Path
    host: str = "127.0.0.1"
    port: int  # CQL native_transport_port
    storage_port: int  # inter-node (gossip, messaging); the same on every node of a ring
    seeds: tuple[str, ...] = ()  # hosts; default: this node alone
    initial_token: int = 0
    heap: str = "1G"
    cluster_name: str = "switchboard-test"

    @property
    def log_path(self) -> Path:
        return self.workdir / "cassandra.log"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        seeds = ",".join(f"{h}:{self.storage_port}" for h in (self.seeds or (self.host,)))
        template = string.Template((DEPLOY_DIR / "cassandra.yaml.template").read_text())
        (self.workdir / "cassandra.yaml").write_text(template.substitute(
            cluster_name=self.cluster_name, host=self.host, seeds=seeds, initial_token=self.initial_token,
            storage_port=self.storage_port, native_port=self.port, data_dir=str(self.workdir)))

    def command(self) -> list[str]:
        jamm = sorted(self.lib.glob("jamm-*.jar"))
        if not jamm:
            raise CassandraStartError(f"no jamm-*.jar in {self.lib}")
        return [
            java_binary(),
            *jvm_options(),
            f"-Xms{self.heap}", f"-Xmx{self.heap}",
            "-XX:+ExitOnOutOfMemoryError",
            f"-javaagent:{jamm[-1]}",
            f"-Dcassandra.config={(self.workdir / 'cassandra.yaml').as_uri()}",
            f"-Dcassandra.storagedir={self.workdir}",
            f"-Dcassandra.logdir={self.workdir}",
            f"-Dlogback.configurationFile={DEPLOY_DIR / 'logback.xml'}",
            "-cp", f"{self.lib}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def logged_command(self) -> list[str]:
        """``command()`` with its output appended to ``log_path``: ``sh`` execs
        the JVM, so the pid is the JVM's (signals reach it directly)."""
        return ["/bin/sh", "-c", 'exec "$@" >>"$0" 2>&1', str(self.log_path), *self.command()]


def host_of(k: int) -> str:
    """Node ``k`` (1-based) of a ring listens on 127.0.0.k."""
    return f"127.0.0.{k}"


def _free_on_all(hosts: list[str], avoid: set[int]) -> int:
    for _ in range(200):
        port = free_port(hosts[0])  # below the ephemeral range: the JVM binds it seconds later
        if port not in avoid and all(_bindable(h, port) for h in hosts):
            return port
    raise CassandraStartError(f"no port free on all of {hosts}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class RingPorts:
    """The ring's size and ports, kept in ``<dir>/ring.json`` so a ring
    restarted on its data dir comes back on the same addresses."""

    nodes: int
    port: int
    storage_port: int

    @classmethod
    def load_or_pick(cls, home: Path, n: int, port: int = 0) -> RingPorts:
        path = home / "ring.json"
        if path.exists():
            saved = cls(**json.loads(path.read_text()))
            if saved.nodes != n:
                # auto_bootstrap is off: a node added to a ring holding data would own ranges it has no data for.
                raise CassandraStartError(f"{home} holds a ring of {saved.nodes} node(s), not {n}: "
                                          "use the same count or another data dir")
            return saved
        hosts = [host_of(k + 1) for k in range(n)]
        native = port or _free_on_all(hosts, set())
        ports = cls(n, native, _free_on_all(hosts, {native}))
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ports.__dict__) + "\n")
        return ports


def ring_specs(n: int, home: Path, *, lib: Path | None = None, port: int = 0, heap: str = RING_HEAP,
               cluster_name: str = "switchboard") -> list[NodeSpec]:
    """The ``n`` nodes of a ring with data under ``home/cK``, their configs written."""
    if not 1 <= n <= MAX_NODES:
        raise CassandraStartError(f"a local ring has 1 to {MAX_NODES} nodes, not {n}")
    ports = RingPorts.load_or_pick(home, n, port)
    hosts = tuple(host_of(k + 1) for k in range(n))
    lib = lib or fetch_jars()
    specs = [NodeSpec(lib=lib, workdir=home / f"c{k + 1}", host=hosts[k], port=ports.port,
                      storage_port=ports.storage_port, seeds=hosts, initial_token=tok, heap=heap,
                      cluster_name=cluster_name) for k, tok in enumerate(ring_tokens(n))]
    for s in specs:
        s.write_config()
    return specs


def store_url(specs: list[NodeSpec], keyspace: str = "switchboard") -> str:
    """The store URL of a ring: every node a contact point, LOCAL_QUORUM, RF min(3, N)."""
    hosts = ",".join(f"{s.host}:{s.port}" for s in specs)
    return f"cassandra://{hosts}/{keyspace}?consistency=LOCAL_QUORUM&replication={min(3, len(specs))}"


def _cluster(points: list[tuple[str, int]], timeout: float) -> Any:
    """A driver connection for probes and checks. No schema or token
    metadata: fetching them made one readiness probe of a 3-node ring take
    33 s on the loaded box (the probes only read system tables)."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    from switchboard.db.cql import connection_class

    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=timeout)
    return Cluster(points, connection_class=connection_class(), protocol_version=5,
                   execution_profiles={EXEC_PROFILE_DEFAULT: profile}, connect_timeout=timeout,
                   control_connection_timeout=timeout, schema_metadata_enabled=False,
                   token_metadata_enabled=False)


def query_version(host: str, port: int, timeout: float = 10.0) -> str | None:
    """``release_version`` from system.local of that node, or None if it does not answer."""
    cluster = _cluster([(host, port)], timeout)
    try:
        row = cluster.connect().execute("SELECT release_version FROM system.local").one()
        return str(row.release_version) if row else None
    except Exception:
        return None
    finally:
        cluster.shutdown()


Points = list[tuple[str, int]]  # (host, CQL port) of each node


def ring_formed(points: Points, timeout: float = 10.0) -> bool:
    """Every node answers CQL and lists every other node as a peer in NORMAL
    state (system.peers_v2 gets a row when gossip sees a peer join)."""
    for host, port in points:
        cluster = _cluster([(host, port)], timeout)
        try:
            from cassandra.policies import WhiteListRoundRobinPolicy

            cluster.profile_manager.default.load_balancing_policy = WhiteListRoundRobinPolicy([host])
            rows = cluster.connect().execute("SELECT peer FROM system.peers_v2")
            if {str(r.peer) for r in rows} != {h for h, _ in points if h != host}:
                return False
        except Exception:
            return False
        finally:
            cluster.shutdown()
    return True


async def wait_formed(points: Points, timeout: float = START_TIMEOUT) -> float:
    """Wait until :func:`ring_formed`; return the seconds waited (raises CassandraStartError)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not await asyncio.to_thread(ring_formed, points):
        if loop.time() - t0 > timeout:
            raise CassandraStartError(f"the ring of {len(points)} did not form within {timeout:.0f} s")
        await asyncio.sleep(0.5)
    return loop.time() - t0


async def wait_node(points: Points, k: int, timeout: float = START_TIMEOUT) -> float:
    """Wait until node ``k`` (1-based) answers CQL and the ring is formed
    again (after a restart); return the seconds waited."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    host, port = points[k - 1]
    while not await asyncio.to_thread(query_version, host, port, 2.0):
        if loop.time() - t0 > timeout:
            raise CassandraStartError(f"node {k} ({host}) not back within {timeout:.0f} s")
        await asyncio.sleep(0.5)
    await wait_formed(points, max(1.0, timeout - (loop.time() - t0)))
    return loop.time() - t0


@dataclass
class Ring:
    """A running ring (:func:`cassandra_ring`): its nodes (1-based in the
    methods), supervised: a node that exits is restarted."""

    specs: list[NodeSpec]
    children: list[Any]  # sbctl.supervisor.Child, one per node
    supervisor: Any
    start_sec: float  # launch to formed

    @property
    def contact_points(self) -> Points:
        return [(s.host, s.port) for s in self.specs]

    def store_url(self, keyspace: str = "switchboard") -> str:
        return store_url(self.specs, keyspace)

    def pid(self, k: int) -> int | None:
        return self.children[k - 1].pid  # type: ignore[no-any-return]

    def kill(self, k: int, sig: int = signal.SIGKILL) -> None:
        """Signal node ``k`` (kill -9 by default); the supervisor restarts it."""
        pid = self.pid(k)
        if pid is not None:
            os.kill(pid, sig)

    async def wait_up(self, k: int, timeout: float = START_TIMEOUT) -> float:
        """Wait until node ``k`` answers CQL again and the ring is formed; the seconds waited."""
        return await wait_node(self.contact_points, k, timeout)


def node_children(specs: list[NodeSpec]) -> list[Any]:
    """sbctl.supervisor.Child per node: ready when its CQL port accepts."""
    from sbctl.supervisor import Child

    return [Child(name=f"cassandra-{k + 1}", argv=s.logged_command(), tcp_ready=(s.host, s.port))
            for k, s in enumerate(specs)]


@contextlib.asynccontextmanager
async def cassandra_ring(n: int, data_dir: Path, *, heap: str = RING_HEAP, port: int = 0) -> AsyncIterator[Ring]:
    """Start a ring of ``n`` nodes (1-3) with data under ``data_dir`` (kept:
    the same dir starts the same ring again), wait until it is formed, yield
    it, and stop it (SIGTERM, SIGKILL after 10 s) on the way out. Jars are
    fetched first if absent. Nodes die with this process (PDEATHSIG)."""
    from sbctl.supervisor import Supervisor

    specs = await asyncio.to_thread(ring_specs, n, Path(data_dir), heap=heap, port=port)
    sup = Supervisor()
    children = node_children(specs)
    t0 = time.monotonic()
    try:
        for c in children:
            await sup.start(c)
        await sup.wait_ready(children, START_TIMEOUT)
        await wait_formed([(s.host, s.port) for s in specs])
        yield Ring(specs, children, sup, time.monotonic() - t0)
    finally:
        await sup.stop([children])
