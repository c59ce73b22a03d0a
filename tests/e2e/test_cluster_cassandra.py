"""``switchboard cluster up --cassandra 1``: the launcher's own Cassandra node as the store.

CI runs this one-node smoke; the 3-node ring with a kill -9 under load is
``switchboard bench ring`` (sbctl/bench/ring.py), whose three JVMs take 50-60 s
to form on the 2-core box before any load (docs/operations.md, "Local
cluster"). What this protects:

- ``--cassandra 1`` really puts the archive in the node it started: a message
  sent through an edge is a row of ``switchboard.messages`` read straight from
  that node with CQL (a launcher that still handed the roles the SQLite file
  would pass a history-only check);
- history (the archiver's reads) returns it;
- the keyspace was made at RF ``min(3, N)`` = 1 (RF 3 on one node would
  refuse every LOCAL_QUORUM write);
- SIGINT stops the JVM with the rest: no process of the tree is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from sbctl import cassandra
from sbctl.embedded import pid_alive
from switchboard_client import Client
from tests.e2e.helpers import PYTHON, REPO, STEP, Proc, descendants, unique, until
from tests.e2e.test_cluster_up import token, two_free_ports
from tests.services.common import require_service

READY = "Switchboard cluster is up"


def cql(host: str, port: int, query: str, *params: object) -> list:
    cluster = cassandra._cluster([(host, port)], 10.0)
    try:
        return list(cluster.connect().execute(query, params or None))
    finally:
        cluster.shutdown()


@pytest.mark.cassandra
@pytest.mark.timeout(420)
async def test_cluster_up_cassandra_one_node_archive_and_history(tmp_path: Path):
    try:
        cassandra.fetch_jars()
        cassandra.java_binary()
    except (cassandra.CassandraStartError, OSError, subprocess.SubprocessError) as exc:
        require_service("cassandra", f"no Cassandra jars or java: {exc}", "python -m tests.services.cassandra fetch")
    data = tmp_path / "cl"
    port = two_free_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {"PYTHONUNBUFFERED": "1"}
    up = Proc(["cluster", "up", "--data", str(data), "--port", str(port), "--cassandra", "1", "--nats", "1",
               "--edges", "1", "--sequencers", "1", "--archivers", "1"], env=env, log=tmp_path / "cluster.log")
    try:
        out = await up.wait_output(READY, timeout=300)
        tree = descendants(up.pid)
        line = next(x for x in out.splitlines() if x.startswith("Cassandra: "))
        host, cport = line.split()[1].split(":")
        assert host == "127.0.0.1", line

        alice = Client(url=f"ws://127.0.0.1:{port}/ws", token=token("alice", data, env), fill_gaps=False)
        try:
            await alice.connect(timeout=STEP)
            mid = unique("cc-")
            sent = await alice.send(to="bob", body="into cassandra", id=mid)

            async def in_history() -> bool:
                page = await alice.history(sent.conv, limit=10)
                return any(m.id == mid and m.seq == sent.seq for m in page.messages)

            await until(in_history, 30, "the message in history (the archiver's Cassandra reads)", every=0.5)
        finally:
            await alice.close()

        # History answers from MESSAGES until the archiver has written the
        # row (docs/archiver.md), so the row itself is waited for: the CI
        # run that read it once, right after history, found none yet.
        def archived() -> list:
            rows = cql(host, int(cport), "SELECT seq, id, body FROM switchboard.messages WHERE conv=%s AND bucket=%s",
                       sent.conv, sent.seq // 1000)
            return [(r.seq, r.id, r.body) for r in rows if r.id == mid]

        await until(lambda: archived() == [(sent.seq, mid, "into cassandra")], 30,
                    lambda: f"the row in switchboard.messages: {archived()}", every=0.5)
        ks = cql(host, int(cport), "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name='switchboard'")
        assert ks and ks[0].replication.get("datacenter1") == "1", ks  # NetworkTopologyStrategy, SimpleSnitch's DC
        assert not (data / "switchboard.db").exists()  # the roles never opened the SQLite store

        up.p.send_signal(signal.SIGINT)
        assert up.p.wait(90) == 0, up.output()[-3000:]
        left = [p for p in tree if pid_alive(p)]
        assert not left, (left, up.output()[-3000:])
    finally:
        up.close_tree()


def test_cassandra_and_store_are_exclusive(tmp_path: Path):
    """``--cassandra N`` makes the store; a ``--store`` beside it would be silently ignored: refused."""
    p = subprocess.run([PYTHON, "-m", "sbctl", "cluster", "up", "--data", str(tmp_path / "d"), "--cassandra", "1",
                        "--store", "cassandra://127.0.0.1/ks"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "either --cassandra N or --store URL" in p.stderr, p
