"""sbctl/cassandra.py without starting a JVM: the ring's tokens, ports, config and URL.

What it protects:
- the tokens are distinct, inside Murmur3's range and evenly spaced (a ring
  whose nodes share or bunch tokens gives one node most of the data);
- a data dir made for N nodes refuses another N: the nodes start with
  ``auto_bootstrap: false``, so a node added to a ring that holds data
  would own ranges it has no data for (silently missing history);
- a restarted ring gets the same ports back (the peers are known by them);
- every placeholder of the template is filled, node K listens on 127.0.0.K
  and every node lists all of them as seeds;
- the roles' URL asks LOCAL_QUORUM at RF min(3, N), every node a contact point.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sbctl import cassandra
from switchboard.db.cql import parse_url


def test_tokens_distinct_in_range_and_evenly_spaced():
    assert cassandra.ring_tokens(1) == [0]
    for n in (2, 3):
        toks = cassandra.ring_tokens(n)
        assert len(set(toks)) == n
        assert all(-(2**63) < t < 2**63 for t in toks)
        gaps = [b - a for a, b in zip(toks, toks[1:], strict=False)] + [toks[0] + 2**64 - toks[-1]]
        assert max(gaps) - min(gaps) <= 2, gaps


def test_ports_kept_and_another_size_refused(tmp_path: Path):
    first = cassandra.RingPorts.load_or_pick(tmp_path, 3)
    assert first.port != first.storage_port
    assert cassandra.RingPorts.load_or_pick(tmp_path, 3) == first
    with pytest.raises(cassandra.CassandraStartError, match="holds a ring of 3"):
        cassandra.RingPorts.load_or_pick(tmp_path, 1)


def test_config_and_url(tmp_path: Path):
    lib = tmp_path / "lib"
    lib.mkdir()
    specs = cassandra.ring_specs(3, tmp_path / "c", lib=lib)
    assert [s.host for s in specs] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    for s, tok in zip(specs, cassandra.ring_tokens(3), strict=True):
        yaml = (s.workdir / "cassandra.yaml").read_text()
        assert "${" not in yaml  # every placeholder filled
        assert f"listen_address: {s.host}\n" in yaml and f"rpc_address: {s.host}\n" in yaml
        assert f"initial_token: {tok}\n" in yaml and "auto_bootstrap: false\n" in yaml
        seeds = ",".join(f"127.0.0.{k}:{s.storage_port}" for k in (1, 2, 3))
        assert f'seeds: "{seeds}"' in yaml
        assert f"native_transport_port: {s.port}\n" in yaml
    o = parse_url(cassandra.store_url(specs))
    assert o.hosts == tuple((s.host, s.port) for s in specs)
    assert (o.consistency, o.replication, o.keyspace) == ("LOCAL_QUORUM", "3", "switchboard")
    one = cassandra.ring_specs(1, tmp_path / "one", lib=lib)
    assert parse_url(cassandra.store_url(one)).replication == "1"
