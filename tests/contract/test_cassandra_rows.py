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
from switchboard.store.cassandra import CassandraStore, _int64, bucket_of, row_values

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


async def test_a_batch_written_the_fast_way_reads_back(store: CassandraStore) -> None:
    conv = "c" + uuid.uuid4().hex[:12]
    msgs = [Msg(conv=conv, seq=s, id=f"m{s}", from_="alice", body=f"body {s} ✓", ts=1_700_000_000_000 + s)
            for s in range(1, 251)]  # 250 rows of one bucket: 3 batches, 2 of them full
    await store.append_messages(msgs)
    assert await store.messages(conv, after=0, limit=200) + await store.messages(conv, after=200, limit=200) == msgs
