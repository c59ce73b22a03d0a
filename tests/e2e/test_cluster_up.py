"""``switchboard cluster up``: the production shape on loopback (sbctl/cluster.py).

One real ``python -m sbctl cluster up --data TMP`` (3 nats-servers, 2
edges, 2 sequencers, 2 archivers, a presence tracker and a pusher, each
role its own process under its own NATS user). What it protects:

- the streams really are replicated: MESSAGES reports 3 replicas, a leader
  and two current peers (a launcher that left ``replicas`` at 1, or nodes
  that never formed a cluster, would show 1 replica or no peers);
- the roles work together across nodes and under the committed accounts: a
  message from a client on edge 1 reaches a client on edge 2, exactly once
  (two sequencers share the partitions; a doubled owner would deliver twice);
- a second launcher on the same data dir is refused (it would run
  nats-servers on the same JetStream stores);
- SIGINT stops every process of the tree (no nats-server or role left
  behind) and ``cluster up`` exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import nats
import pytest

from sbctl.embedded import free_port, pid_alive
from switchboard_client import Client
from tests.e2e.helpers import PYTHON, REPO, STEP, Proc, descendants, unique, until

READY = "Switchboard cluster is up"


def two_free_ports() -> int:
    """A port P with P + 1 free too (edge 1 and edge 2)."""
    for _ in range(50):
        p = free_port()
        if p < 65535 and port_is_free(p + 1):
            return p
    raise AssertionError("no two adjacent free ports")


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def token(user: str, data: Path, env: dict[str, str]) -> str:
    return subprocess.run([PYTHON, "-m", "sbctl", "token", user, "--data", str(data)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()


@pytest.mark.timeout(240)
async def test_cluster_up_r3_cross_edge_delivery_and_ctrl_c(tmp_path: Path):
    data = tmp_path / "cl"
    port = two_free_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {"PYTHONUNBUFFERED": "1"}
    up = Proc(["cluster", "up", "--data", str(data), "--port", str(port)], env=env, log=tmp_path / "cluster.log")
    try:
        out = await up.wait_output(READY, timeout=150)
        tree = descendants(up.pid)
        assert len(tree) == 3 + 2 + 2 + 2 + 1 + 1, (tree, out)  # nats-servers and role processes
        nats_line = next(line for line in out.splitlines() if line.startswith("NATS: "))
        servers = nats_line.split()[1].split(",")
        assert len(servers) == 3
        creds = json.loads((data / "cluster" / "credentials.json").read_text())
        nc = await nats.connect(servers=servers, user="operator", password=creds["operator"])
        info: dict = {}
        try:
            async def replicated() -> bool:
                r = await nc.request("$JS.API.STREAM.INFO.MESSAGES", b"", timeout=STEP)
                info.update(json.loads(r.data))
                cl = info.get("cluster", {})
                peers = cl.get("replicas", [])
                return bool(cl.get("leader")) and len(peers) == 2 and all(p.get("current") for p in peers)

            await until(replicated, 30, lambda: f"MESSAGES with a leader and 2 current peers: {info}", every=0.5)
            assert info["config"]["num_replicas"] == 3
        finally:
            await nc.close()

        ws1, ws2 = f"ws://127.0.0.1:{port}/ws", f"ws://127.0.0.1:{port + 1}/ws"
        assert ws1 in out and ws2 in out
        alice = Client(url=ws1, token=token("alice", data, env), fill_gaps=False)
        bob = Client(url=ws2, token=token("bob", data, env), fill_gaps=False)
        try:
            await bob.connect(timeout=STEP)
            await alice.connect(timeout=STEP)
            mid = unique("cl-")
            sent = await alice.send(to="bob", body="across edges", id=mid)
            m = await bob.next_message(timeout=STEP)
            assert (m.id, m.body, m.seq) == (mid, "across edges", sent.seq)
            with pytest.raises(TimeoutError):  # exactly once
                await bob.next_message(timeout=2.0)
        finally:
            await alice.close()
            await bob.close()

        # A second launcher on the same DIR would start nats-servers on the same stores: refused.
        second = subprocess.run([PYTHON, "-m", "sbctl", "cluster", "up", "--data", str(data), "--port",
                                 str(two_free_ports())],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "in use by another" in second.stderr, second
        assert not descendants(up.pid) - tree

        up.p.send_signal(signal.SIGINT)
        assert up.p.wait(60) == 0, up.output()[-3000:]
        left = [p for p in tree if pid_alive(p)]
        assert not left, (left, up.output()[-3000:])
    finally:
        up.close_tree()
