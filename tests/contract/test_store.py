"""The Store contract (switchboard/store/__init__.py), run against every backend.

One suite, parametrized over SQLite (a temp file) and a real Cassandra node
(tests/services/cassandra.py; marked ``cassandra``). Every test uses fresh
conversation and user ids, so the backends' stores are shared across tests
(one open per session) without tests seeing each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from switchboard.errors import ConfigError
from switchboard.frames import Msg
from switchboard.store import Conversation, Store, Watermark, open_store
from switchboard.store.cassandra import BUCKET_SIZE, parse_url

# The first Cassandra test also waits for the node to start (1-4 min on a
# loaded 2-core box), which the default 120 s test timeout does not cover.
CASSANDRA = pytest.param("cassandra", marks=[pytest.mark.cassandra, pytest.mark.timeout(420)], id="cassandra")


@pytest.fixture(scope="session", params=[pytest.param("sqlite", id="sqlite"), CASSANDRA])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    return request.getfixturevalue("cassandra_url")


@pytest.fixture(scope="session")
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    await s.open()
    yield s
    await s.close()


def new_id(prefix: str = "c") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def msg(conv: str, seq: int, body: str | None = None) -> Msg:
    return Msg(conv=conv, seq=seq, id=f"m-{conv}-{seq}", from_="alice", body=f"body {seq}" if body is None else body,
               ts=1_700_000_000_000 + seq, kind="user")


def seqs(msgs: list[Msg]) -> list[int]:
    return [m.seq for m in msgs]


# -- conversations -----------------------------------------------------------

async def test_store_satisfies_protocol(store: Store) -> None:
    assert isinstance(store, Store)


async def test_create_conversation_is_idempotent_by_id(store: Store) -> None:
    cid, alice, bob = new_id(), new_id("u"), new_id("u")
    first = Conversation(id=cid, members=(alice, bob), title="first", kind="group", created_by=alice, created_ts=17)
    stored, created = await store.create_conversation(first)
    assert created is True
    assert stored == Conversation(id=cid, members=tuple(sorted((alice, bob))), title="first", kind="group",
                                  created_by=alice, created_ts=17)
    # A second create with other fields changes nothing and returns the stored one.
    again, created = await store.create_conversation(
        Conversation(id=cid, members=(new_id("u"),), title="second", kind="dm", created_by=bob, created_ts=99))
    assert created is False
    assert again == stored
    assert await store.get_conversation(cid) == stored


async def test_members_are_a_sorted_set(store: Store) -> None:
    cid, a, b, c = new_id(), "zed" + new_id("u"), "amy" + new_id("u"), "kim" + new_id("u")
    stored, _ = await store.create_conversation(Conversation(id=cid, members=(a, b, a, c, b)))
    assert stored.members == (b, c, a)
    fetched = await store.get_conversation(cid)
    assert fetched is not None and fetched.members == (b, c, a)


async def test_get_unknown_conversation_is_none(store: Store) -> None:
    assert await store.get_conversation(new_id()) is None


async def test_conversations_of(store: Store) -> None:
    alice, bob, carol = new_id("u"), new_id("u"), new_id("u")
    c1, c2, c3 = sorted(new_id() for _ in range(3))
    await store.create_conversation(Conversation(id=c2, members=(alice, bob)))
    await store.create_conversation(Conversation(id=c1, members=(alice,)))
    await store.create_conversation(Conversation(id=c3, members=(bob,)))
    assert sorted(await store.conversations_of(alice)) == [c1, c2]
    assert sorted(await store.conversations_of(bob)) == [c2, c3]
    assert await store.conversations_of(carol) == []
    # A refused re-create with other members must not add the new user.
    await store.create_conversation(Conversation(id=c3, members=(carol,)))
    assert await store.conversations_of(carol) == []


# -- append ------------------------------------------------------------------

async def test_append_twice_stores_once(store: Store) -> None:
    cid = new_id()
    batch = [msg(cid, s) for s in range(1, 11)]
    await store.append_messages(batch)
    await store.append_messages(batch)  # a redelivery of the whole batch
    await store.append_messages(batch[3:6] + [msg(cid, 11)])  # partial redelivery + a new one
    got = await store.messages(cid, limit=100)
    assert got == batch + [msg(cid, 11)]
    assert await store.last_seq(cid) == 11


async def test_append_duplicate_inside_one_batch(store: Store) -> None:
    cid = new_id()
    await store.append_messages([msg(cid, 1), msg(cid, 2), msg(cid, 1)])
    assert seqs(await store.messages(cid, limit=10)) == [1, 2]


async def test_append_batch_mixing_conversations(store: Store) -> None:
    a, b, c = new_id(), new_id(), new_id()
    # Interleaved, out of order, one batch.
    batch = [msg(a, 2), msg(b, 1), msg(a, 1), msg(c, 7), msg(b, 2), msg(a, 3)]
    await store.append_messages(batch)
    assert seqs(await store.messages(a, limit=10)) == [1, 2, 3]
    assert seqs(await store.messages(b, limit=10)) == [1, 2]
    assert seqs(await store.messages(c, limit=10)) == [7]
    assert [await store.last_seq(x) for x in (a, b, c)] == [3, 2, 7]


async def test_append_empty_batch(store: Store) -> None:
    await store.append_messages([])


async def test_every_field_round_trips(store: Store) -> None:
    cid = new_id()
    m = Msg(conv=cid, seq=42, id="client-id_1", from_="bob-7", body="hello", ts=1_712_345_678_901, kind="system")
    await store.append_messages([m])
    assert await store.messages(cid, limit=1) == [m]


@pytest.mark.parametrize("body", [
    "héllo wörld",
    "日本語のメッセージ",
    "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 (astral plane + ZWJ)",
    "مرحبا بالعالم (RTL)",
    "e\u0301 combining, \u200b zero width, tab\tnew\nline",
    "",
    "ü" * 8192,  # 16 KiB of UTF-8: the configured body cap
], ids=["latin", "cjk", "emoji", "rtl", "combining", "empty", "max"])
async def test_unicode_bodies(store: Store, body: str) -> None:
    cid = new_id()
    await store.append_messages([msg(cid, 1, body)])
    (got,) = await store.messages(cid, limit=5)
    assert got.body == body


# -- ranges ------------------------------------------------------------------

@pytest.fixture
async def twenty(store: Store) -> str:
    """A conversation holding seqs 1..20."""
    cid = new_id()
    await store.append_messages([msg(cid, s) for s in range(1, 21)])
    return cid


@pytest.mark.parametrize(("before", "after", "limit", "expected"), [
    (None, None, 5, [1, 2, 3, 4, 5]),  # no bounds: the oldest
    (None, None, 50, list(range(1, 21))),  # limit above the count
    (None, 17, 50, [18, 19, 20]),  # after is exclusive
    (None, 5, 3, [6, 7, 8]),  # the oldest above after
    (None, 20, 10, []),  # nothing above the newest
    (11, None, 3, [8, 9, 10]),  # before is exclusive; the newest below it, ascending
    (4, None, 10, [1, 2, 3]),
    (1, None, 10, []),  # nothing below the first
    (100, None, 2, [19, 20]),  # before beyond the newest
    (15, 10, 50, [11, 12, 13, 14]),  # both bounds exclusive
    (15, 10, 2, [11, 12]),  # both: the oldest above after
    (11, 10, 5, []),  # empty open interval
    (10, 10, 5, []),
    (None, 0, 2, [1, 2]),  # after=0 is the same as no after
], ids=lambda v: repr(v))
async def test_message_ranges(store: Store, twenty: str, before: int | None, after: int | None, limit: int,
                              expected: list[int]) -> None:
    got = await store.messages(twenty, before=before, after=after, limit=limit)
    assert seqs(got) == expected
    assert got == [msg(twenty, s) for s in expected]


async def test_empty_conversation(store: Store) -> None:
    cid = new_id()
    assert await store.messages(cid) == []
    assert await store.messages(cid, before=10) == []
    assert await store.messages(cid, after=10) == []
    assert await store.messages(cid, before=10, after=1) == []
    assert await store.last_seq(cid) == 0


async def test_last_seq_is_the_highest_not_the_latest_written(store: Store) -> None:
    cid = new_id()
    await store.append_messages([msg(cid, s) for s in range(5, 11)])
    assert await store.last_seq(cid) == 10
    await store.append_messages([msg(cid, s) for s in range(1, 5)])  # older ones arrive later
    assert await store.last_seq(cid) == 10
    await store.append_messages([msg(cid, 11)])
    assert await store.last_seq(cid) == 11


# -- several buckets (Cassandra partitions by seq // BUCKET_SIZE) ------------

async def test_conversation_spanning_several_buckets(store: Store) -> None:
    cid = new_id()
    n = 2 * BUCKET_SIZE + BUCKET_SIZE // 2
    await store.append_messages([msg(cid, s) for s in range(1, n + 1)])
    assert await store.last_seq(cid) == n
    b = BUCKET_SIZE
    # Pages that straddle a bucket boundary, in both directions.
    assert seqs(await store.messages(cid, before=b + 3, limit=6)) == list(range(b - 3, b + 3))
    assert seqs(await store.messages(cid, after=b - 4, limit=6)) == list(range(b - 3, b + 3))
    assert seqs(await store.messages(cid, after=b - 3, before=2 * b + 2, limit=5000)) == list(range(b - 2, 2 * b + 2))
    assert seqs(await store.messages(cid, before=2**40, limit=3)) == [n - 2, n - 1, n]
    # A page larger than a bucket spans three buckets.
    assert seqs(await store.messages(cid, after=b - 2, limit=b + 4)) == list(range(b - 1, 2 * b + 3))
    # Paging backwards from the newest reads every message exactly once, in order.
    seen: list[int] = []
    cursor = n + 1
    while page := await store.messages(cid, before=cursor, limit=400):
        seen[:0] = seqs(page)
        cursor = page[0].seq
    assert seen == list(range(1, n + 1))


async def test_sparse_seqs_across_empty_buckets(store: Store) -> None:
    # Gaps in seq (e.g. the archive started late) leave whole buckets empty; a
    # page must jump over them instead of stopping at the first empty one.
    cid = new_id()
    b = BUCKET_SIZE
    present = [1, 2, 3, 4 * b + 5, 4 * b + 6, 9 * b + 1]
    await store.append_messages([msg(cid, s) for s in present])
    assert seqs(await store.messages(cid, after=3, limit=2)) == [4 * b + 5, 4 * b + 6]
    assert seqs(await store.messages(cid, before=4 * b + 5, limit=5)) == [1, 2, 3]
    assert seqs(await store.messages(cid, before=9 * b + 1, limit=2)) == [4 * b + 5, 4 * b + 6]
    assert seqs(await store.messages(cid, after=4 * b + 6, limit=5)) == [9 * b + 1]
    assert seqs(await store.messages(cid, after=0, before=9 * b, limit=10)) == present[:5]
    assert seqs(await store.messages(cid, limit=10)) == present
    assert await store.last_seq(cid) == 9 * b + 1


# -- receipts (watermarks) ---------------------------------------------------

async def test_watermarks_merge_is_monotonic(store: Store) -> None:
    cid, amy, bob, cat = new_id(), "a" + new_id("u"), "b" + new_id("u"), "c" + new_id("u")
    assert await store.watermarks(cid) == []
    await store.merge_watermarks([Watermark(conv=cid, user=amy, delivered=5, read=3),
                                  Watermark(conv=cid, user=bob, delivered=2)])
    # Stale, repeated and partly newer receipts: each field keeps its max.
    await store.merge_watermarks([Watermark(conv=cid, user=amy, delivered=4, read=4),
                                  Watermark(conv=cid, user=amy, delivered=5, read=1),
                                  Watermark(conv=cid, user=bob, delivered=2)])
    assert await store.watermarks(cid) == [Watermark(conv=cid, user=amy, delivered=5, read=4),
                                           Watermark(conv=cid, user=bob, delivered=2, read=0)]
    await store.merge_watermarks([Watermark(conv=cid, user=bob, delivered=9, read=9)])
    got = {w.user: w for w in await store.watermarks(cid)}
    assert got[bob] == Watermark(conv=cid, user=bob, delivered=9, read=9)
    assert cat not in got  # a member without any receipt is absent
    await store.merge_watermarks([])


# -- lifecycle -----------------------------------------------------------------

async def test_second_store_on_same_url_sees_the_data(store: Store, store_url: str) -> None:
    # Opening again runs the schema creation again: it must be idempotent.
    cid, user = new_id(), new_id("u")
    await store.create_conversation(Conversation(id=cid, members=(user,), title="t"))
    await store.append_messages([msg(cid, 1), msg(cid, 2)])
    other = open_store(store_url)
    await other.open()
    try:
        conv = await other.get_conversation(cid)
        assert conv is not None and conv.members == (user,) and conv.title == "t"
        assert seqs(await other.messages(cid)) == [1, 2]
        assert await other.last_seq(cid) == 2
        assert await other.conversations_of(user) == [cid]
    finally:
        await other.close()


# -- Cassandra URL parsing (no server) ----------------------------------------

def test_cassandra_url_parsing() -> None:
    o = parse_url("cassandra://db1,db2:9142,[::1]:9043/chat?consistency=local_one&replication=dc1:3,dc2:2"
                  "&local_dc=dc1&timeout=2.5&concurrency=8&serial_consistency=SERIAL")
    assert o.hosts == (("db1", 9042), ("db2", 9142), ("::1", 9043))
    assert (o.keyspace, o.consistency, o.serial_consistency, o.local_dc, o.timeout, o.concurrency) == \
        ("chat", "LOCAL_ONE", "SERIAL", "dc1", 2.5, 8)
    assert o.replication_map() == {"class": "NetworkTopologyStrategy", "dc1": 3, "dc2": 2}
    d = parse_url("cassandra://db/chat")
    assert (d.consistency, d.serial_consistency, d.replication_map()) == \
        ("LOCAL_QUORUM", "LOCAL_SERIAL", {"class": "NetworkTopologyStrategy", "replication_factor": 3})
    # keyword options (open_store(url, **options)) override the query string
    assert parse_url("cassandra://db/chat?consistency=ONE", consistency="QUORUM").consistency == "QUORUM"


@pytest.mark.parametrize("url", [
    "cassandra://db/chat?bogus=1",  # unknown option
    "cassandra://db/chat?consistency=MOST",
    "cassandra://db/chat?serial_consistency=ONE",
    "cassandra://db/chat?replication=three",
    "cassandra://db/chat?replication=dc1:x",
    "cassandra://db/chat?timeout=0",
    "cassandra://db/chat?concurrency=-1",
    "cassandra://db/",  # no keyspace
    "cassandra://db/1chat",  # keyspace must start with a letter
    "cassandra://db/ch-at",
    "cassandra://db:port/chat",
    "cassandra://,db/chat",
], ids=lambda u: u.removeprefix("cassandra://"))
def test_cassandra_url_rejected(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_url(url)


def test_cassandra_unknown_keyword_option_rejected() -> None:
    with pytest.raises(ConfigError):
        open_store("cassandra://db/chat", retries=3)
