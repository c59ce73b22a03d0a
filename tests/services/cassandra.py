"""A real Apache Cassandra 5.0 for the tests, built from Maven Central jars.

The jars, the node's config and its JVM command line are sbctl/cassandra.py's
(what ``switchboard cluster up --cassandra`` starts too): fetched once with
Maven into ``~/.cache/switchboard/cassandra-<version>/lib``. Here a single
node runs as a plain JVM child process on free loopback ports, with every
directory under one temp dir, and the session fixtures. docs/storage.md lists
every JVM flag and why.

CLI (the test command warms the cache with it)::

    python -m tests.services.cassandra fetch   # only fetch the jars
    python -m tests.services.cassandra run     # start a node, print its URL, Ctrl-C stops it
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sbctl import procs
from sbctl.cassandra import (  # noqa: F401 - cache_root, lib_dir: tests/services/wheelhouse.py and others
    START_TIMEOUT,
    CassandraStartError,
    NodeSpec,
    cache_root,
    fetch_jars,
    lib_dir,
    query_version,
)
from sbctl.embedded import free_port
from tests.services.common import die_with_parent, log_tail, require_service, wait_port

KEYSPACE = "sb_test"
HOW_TO_ENABLE = ("needs java 17 and mvn on PATH and Maven Central reachable once "
                 "(python -m tests.services.cassandra fetch warms the jar cache)")
# A clean shutdown flushes memtables; a few seconds normally, then SIGKILL.
STOP_TIMEOUT = 60.0


@dataclass(kw_only=True)
class CassandraNode:
    """One single-node Cassandra; ``stop()`` then ``start()`` re-uses the same
    ports and data dir, so outage tests can take it away and bring it back at
    the same URL with the data intact."""

    lib: Path
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0  # CQL native_transport_port; 0: a free port on first start
    storage_port: int = 0  # inter-node port (unused by a single node, but bound): 0 = free
    heap: str = "1G"
    keyspace: str = KEYSPACE
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The store URL of this node (see docs/storage.md for the format)."""
        return f"cassandra://{self.host}:{self.port}/{self.keyspace}?consistency=ONE&replication=1"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / "cassandra.log"

    def spec(self) -> NodeSpec:
        return NodeSpec(lib=self.lib, workdir=self.workdir, host=self.host, port=self.port,
                        storage_port=self.storage_port, heap=self.heap)

    def launch(self) -> CassandraNode:
        """Start the JVM without waiting (no-op if running); ``wait_ready`` waits.

        Call from the main thread: the child gets PDEATHSIG tied to the
        forking thread.
        """
        if self.running:
            return self
        if self.port == 0:
            self.port = free_port(self.host)
        if self.storage_port == 0:
            self.storage_port = free_port(self.host)
        spec = self.spec()
        spec.write_config()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(spec.command(), cwd=self.workdir, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> CassandraNode:
        """Wait until the CQL port is open and ``system.local`` answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                self.process = None
                raise CassandraStartError(f"Cassandra exited with {code}: {log_tail(self.log_path, 3000)}")
            if wait_port(self.host, self.port, 1.0) and self.query_version(timeout=10.0):
                return self
        self.stop()
        raise CassandraStartError(f"Cassandra not ready on {self.host}:{self.port} within {timeout}s: "
                                  f"{log_tail(self.log_path, 3000)}")

    def start(self, timeout: float = START_TIMEOUT) -> CassandraNode:
        """Start (no-op if running) and wait until it answers CQL."""
        return self.launch().wait_ready(timeout)

    def query_version(self, timeout: float = 10.0) -> str | None:
        """``release_version`` from system.local, or None if it does not answer."""
        return query_version(self.host, self.port, timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (Cassandra flushes and exits), SIGKILL after ``timeout``."""
        p, self.process = self.process, None
        procs.terminate(p, timeout)

    def kill(self) -> None:
        """SIGKILL, for crash tests (the commit log is replayed on the next start)."""
        p, self.process = self.process, None
        procs.kill(p)

    def remove_data(self) -> None:
        """Delete everything but the log (the node must be stopped)."""
        for name in ("data", "commitlog", "saved_caches", "hints", "cdc_raw"):
            shutil.rmtree(self.workdir / name, ignore_errors=True)


@pytest.fixture(scope="session")
def cassandra_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CassandraNode]:
    """The session's Cassandra node, started on first use (only sessions that
    run a Cassandra test pay for it). Outage tests may stop()/kill() it but
    must start() it again. Always stopped at session end (also on Ctrl-C);
    PDEATHSIG covers a pytest killed outright."""
    try:
        node = CassandraNode(lib=fetch_jars(), workdir=tmp_path_factory.mktemp("cassandra"))
    except (CassandraStartError, OSError, subprocess.SubprocessError) as exc:
        require_service("cassandra", f"could not fetch the Cassandra jars: {exc}", HOW_TO_ENABLE)
    atexit.register(node.kill)  # belt and braces: the finally below is the normal path
    try:
        try:
            node.start()
        except (CassandraStartError, OSError) as exc:
            node.stop()
            require_service("cassandra", f"Cassandra did not start: {exc}", HOW_TO_ENABLE)
        yield node
    finally:  # also on Ctrl-C while it is still starting
        node.stop()
        node.remove_data()
        atexit.unregister(node.kill)


@pytest.fixture(scope="session")
def cassandra_url(cassandra_node: CassandraNode) -> str:
    """``cassandra://127.0.0.1:<port>/sb_test?consistency=ONE&replication=1``."""
    return cassandra_node.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.services.cassandra")
    parser.add_argument("action", choices=["fetch", "run"])
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    lib = fetch_jars()
    print(f"jars: {lib} ({len(list(lib.glob('*.jar')))} files)", flush=True)
    if args.action == "fetch":
        return 0
    node = CassandraNode(lib=lib, workdir=Path(tempfile.mkdtemp(prefix="sb-cassandra-")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        node.start()
        print(f"ready in {time.monotonic() - t0:.1f}s: {node.url}  (log: {node.log_path}; Ctrl-C stops)", flush=True)
        while node.running:
            time.sleep(1)
        print(f"Cassandra exited: {log_tail(node.log_path)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        node.stop()
        shutil.rmtree(node.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
