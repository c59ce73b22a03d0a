"""The Cassandra archive's fast row encoding (switchboard/store/cassandra.py
``row_values``) against the driver's own binding of the same prepared
statement, on a real node.

``append_messages`` serializes every row of a partition batch but the first
itself (about a fifth of the cost of ``PreparedStatement.bind``) and appends
it with the driver's private ``BatchStatement._add_statement_and_params``.
If a driver upgrade changed how text or bigint values are serialized, rows
would be written wrong: these tests fail first (a dropped method is refused
at import: switchboard/compat/cassandra_driver.py, tests/unit/test_compat.py).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from switchboard.frames import Msg
from switchboard.store.cassandra import CROSS_PARTITIONS, CassandraStore, _composite, _int64, bucket_of, row_values

pytestmark = [pytest.mark.cassandra, pytest.mark.timeout(420)]  # the first test may wait for the node


@pytest.fixture
async def store(cassandra_url: str) -> AsyncIterator[CassandraStore]:
    s = CassandraStore.from_url(cassandra_url)
    await s.open()
    yield s
    await s.close()


MSGS = [
    Msg(conv="c1", seq=1, id="m1", from_="alice", body="hello", ts=1_700_000_000_000),
    Msg(conv="c1", seq=2**62, id="", from_="", body="", ts=0, kind="system"),  # empty text, big seq
    Msg(conv="c1", seq=1001, id="m-ü", from_="bøb", body="日本語 🎉 \u0000 end", ts=-1),  # UTF-8, NUL, negative
]


@pytest.mark.parametrize("m", MSGS, ids=["plain", "edges", "unicode"])
async def test_row_values_are_the_drivers_bound_values(store: CassandraStore, m: Msg) -> None:
    # The driver's own binding of the store's insert, prepared on a session of
    # this test's (the store's prepared statements are its own business).
    from cassandra.cluster import Cluster

    o = store.options
    cluster = Cluster([h for h, _ in o.hosts], port=o.hosts[0][1])
    try:
        session = cluster.connect()
        ins = session.prepare(f"INSERT INTO {o.keyspace}.messages (conv, bucket, seq, id, sender, body, ts, kind) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        bound = ins.bind((m.conv, bucket_of(m.seq), m.seq, m.id, m.from_, m.body, m.ts, m.kind))
    finally:
        cluster.shutdown()
    assert row_values(m.conv.encode(), _int64(bucket_of(m.seq)), m) == list(bound.values)
    # ...and the routing key the store groups partitions by (their replicas) is the driver's
    assert _composite(m.conv.encode(), _int64(bucket_of(m.seq))) == bound.routing_key


async def test_a_batch_written_the_fast_way_reads_back(store: CassandraStore) -> None:
    conv = "c" + uuid.uuid4().hex[:12]
    msgs = [Msg(conv=conv, seq=s, id=f"m{s}", from_="alice", body=f"body {s} ✓", ts=1_700_000_000_000 + s)
            for s in range(1, 251)]  # 250 rows of one bucket: 3 batches, 2 of them full
    await store.append_messages(msgs)
    assert await store.messages(conv, after=0, limit=200) + await store.messages(conv, after=200, limit=200) == msgs


@pytest.mark.parametrize(("rows_each", "body_bytes"), [
    (1, 20), (3, 20), (12, 20),  # 12 rows cross a bucket boundary (1000) and go as partition batches
    (1, 1500), (3, 1500),  # several per batch until CROSS_BYTES
    (1, 16_000),  # each alone: 10 in one batch would be refused (batch_size_fail_threshold, 50 KiB)
])
async def test_many_small_partitions_share_batches_and_read_back(store: CassandraStore, rows_each: int,
                                                                 body_bytes: int) -> None:
    """Thousands of conversations make an archive batch of ~1 row per
    partition; those rows now share multi-partition batches (at most
    CROSS_PARTITIONS partitions with the same replicas and CROSS_BYTES of
    data, conv_index rows too) instead of a request each. Every row and
    index entry must land: a row batched under another partition's routing
    key, an index row lost or a batch Cassandra refuses as too large shows
    here as an error, a missing message or a wrong last_seq."""
    convs = ["c" + uuid.uuid4().hex[:12] for _ in range(4 * CROSS_PARTITIONS + 3)]
    msgs = [Msg(conv=c, seq=s, id=f"m{s}", from_="alice", body=f"{c} {s} " + "é" * (body_bytes // 2),
                ts=1_700_000_000_000 + s)
            for c in convs for s in range(998, 998 + rows_each)]
    await store.append_messages(msgs[::-1])
    for c in convs:
        assert await store.messages(c, limit=50) == [m for m in msgs if m.conv == c]
        assert await store.last_seq(c) == 997 + rows_each
